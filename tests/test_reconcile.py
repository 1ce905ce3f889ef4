"""Fills reconciliation without processes: the shared Reconciler (when, over which span, what
it records), the fill ledger, what a data directory says, and each exchange's history reader
(Kraken TradesHistory, KuCoin's two fills lists) against fakes of their REST answers."""

from __future__ import annotations

import json
import threading
import time
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recorder.core.events import detail, event, new_rows
from recorder.core.schema import make_row
from recorder.core.times import iso_us
from recorder.exchanges.kraken.private import PrivateState
from recorder.exchanges.kraken.reconcile import CallCounter, TradesHistory
from recorder.exchanges.kraken.rest import TransientError
from recorder.exchanges.kucoin.private import ConnParser, PrivateFeed
from recorder.exchanges.kucoin.reconcile import KucoinFills
from recorder.exchanges.kucoin.rest import KucoinError, RateLimited
from recorder.exchanges.reconcile import (
    REST,
    SEED,
    Chunk,
    FillLedger,
    History,
    Reconciler,
    parse_iso_us,
    recorded_history,
)
from sinks.convert import rows_to_batch

T0 = 1_767_000_000_000_000  # µs


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.wall = T0

    def mono(self) -> float:
        return self.now

    def us(self) -> int:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.wall += int(seconds * 1_000_000)


class FakeHistory:
    """fetch: the fills whose time is in the span; record: rows for new ones."""

    def __init__(self) -> None:
        self.fills: list[tuple[str, int]] = []  # (id, time µs)
        self.calls: list[tuple[int, int]] = []
        self.fail: Exception | None = None
        self.ledger = FillLedger()
        self.gate: threading.Event | None = None

    def fetch(self, since, until):
        self.calls.append((since, until))
        if self.gate is not None:
            self.gate.wait(5)
        if self.fail is not None:
            raise self.fail
        yield Chunk([f for f in self.fills if since <= f[1] <= until], until)

    def record(self, items, ts_recv, rows):
        new = 0
        for fid, ts in items:
            if self.ledger.is_new(("X/Y", fid, "O"), REST):
                rows["fills"].append(make_row("fills", exchange="x", trade_id=fid,
                                              ts_exchange=ts, ts_recv=ts_recv))
                new += 1
        return new, len(items) - new


def _reconciler(history: FakeHistory, clock: Clock, **kw) -> Reconciler:
    kw.setdefault("settle", 0.0)
    return Reconciler("x", "GET /fills", history.fetch, history.record, start_us=T0,
                      clock=clock.mono, wall_us=clock.us, **kw)


def _settle(r: Reconciler, rows: dict) -> None:
    """Poll until the run under way is finished."""
    for _ in range(200):
        r.poll(rows)
        if r._run is None:
            return
        time.sleep(0.01)
    raise AssertionError("the reconciliation did not finish")


def _details(rows: dict, kind: str) -> list[dict]:
    return [json.loads(e[5]) for e in rows["events"] if e[2] == kind]


# -- the ledger -------------------------------------------------------------------------------


def test_ledger_a_fill_is_new_once_whatever_delivers_it():
    ledger = FillLedger()
    ledger.seed([("BTC/USD", "1", "O1")])
    assert not ledger.is_new(("BTC/USD", "1", "O1"), REST)
    assert ledger.is_new(("BTC/USD", "2", "O1"), REST)
    assert not ledger.is_new(("BTC/USD", "2", "O1"), 1)  # the stream after REST: a duplicate
    assert ledger.is_new(("BTC/USD", "3", "O1"), 1)
    assert not ledger.is_new(("BTC/USD", "3", "O1"), 1)  # the same connection again
    assert not ledger.is_new(("BTC/USD", "3", "O1"), REST)
    assert ledger._fills[("BTC/USD", "1", "O1")] == SEED


def test_ledger_keeps_both_live_copies_of_a_rotation_overlap():
    # Two connections stream at once only while one replaces the other: the runtime keeps
    # one copy (and the old one's if the replacement is given up).
    ledger = FillLedger()
    assert ledger.is_new(("BTC/USD", "9", "O"), 2)
    assert ledger.is_new(("BTC/USD", "9", "O"), 1)
    assert not ledger.is_new(("BTC/USD", "9", "O"), "snapshot")


def test_ledger_is_bounded_but_keeps_every_seeded_key():
    ledger = FillLedger(remember=3)
    ledger.seed([("S", str(i), "O") for i in range(5)])
    assert len(ledger) == 5
    for i in range(5, 30):
        ledger.is_new(("S", str(i), "O"))
    assert len(ledger) == ledger.remember < 30


# -- when and over which span ---------------------------------------------------------------


def test_nothing_is_read_before_the_stream_is_live_then_the_job_start_is_the_limit():
    clock, h = Clock(), FakeHistory()
    h.fills = [("old", T0 - 1), ("a", T0 + 1_000_000)]
    r = _reconciler(h, clock, settle=1.0)
    rows = new_rows()
    r.connecting()
    clock.advance(2)
    r.poll(rows)
    assert h.calls == []  # connected, not subscribed yet
    r.subscribed()
    r.poll(rows)
    assert h.calls == []  # the settle delay
    clock.advance(1)
    _settle(r, rows)
    assert h.calls == [(T0, T0 + 3_000_000)]
    assert [r[5] for r in rows["fills"]] == ["a"]  # never further back than the start
    (done,) = _details(rows, "fills_reconciled")
    assert done["trigger"] == "start" and done["new"] == 1 and done["found"] == 1
    assert done["since"] == iso_us(T0) and done["cursor_from"] == "start"
    assert parse_iso_us(done["until"]) == T0 + 3_000_000


def test_the_cursor_follows_a_live_stream_and_a_reconnect_reads_only_the_outage():
    clock, h = Clock(), FakeHistory()
    r = _reconciler(h, clock, overlap_us=2_000_000)
    rows = new_rows()
    r.connecting()
    r.subscribed()
    _settle(r, rows)
    clock.advance(100)  # live for 100 s
    r.poll(rows)
    live_until = clock.wall
    clock.advance(30)  # the connection dropped: 30 s without ticks
    r.connecting()
    r.subscribed()
    h.fills = [("gap", live_until + 10_000_000)]
    _settle(r, rows)
    assert h.calls[-1] == (live_until - 2_000_000, clock.wall)
    second = _details(rows, "fills_reconciled")[-1]
    assert second["trigger"] == "reconnect" and second["new"] == 1


def test_a_reconnect_during_a_reconciliation_still_gets_its_own():
    clock, h = Clock(), FakeHistory()
    r = _reconciler(h, clock, interval=600.0)
    rows = new_rows()
    r.connecting()
    r.subscribed()
    h.gate = threading.Event()
    r.poll(rows)  # under way
    clock.advance(5)
    r.connecting()  # the link dropped and is being reopened meanwhile
    h.gate.set()
    _settle(r, rows)
    assert len(h.calls) == 1 and r._want == "reconnect"
    r.subscribed()
    _settle(r, rows)
    assert len(h.calls) == 2
    assert [d["trigger"] for d in _details(rows, "fills_reconciled")] == ["start", "reconnect"]


def test_a_failure_is_an_event_and_its_retry_reads_the_same_span_after_a_backoff():
    clock, h = Clock(), FakeHistory()
    r = _reconciler(h, clock, retry=(5.0, 60.0))
    rows = new_rows()
    r.connecting()
    r.subscribed()
    h.fail = TransientError("POST /0/private/TradesHistory: EAPI:Rate limit exceeded")
    _settle(r, rows)
    (failed,) = _details(rows, "reconcile_failed")
    assert failed["error"].endswith("EAPI:Rate limit exceeded") and failed["attempt"] == 1
    assert 5.0 <= failed["retry_in_s"] <= 10.0
    assert failed["cursor"] == iso_us(T0)  # not moved
    clock.advance(1)
    r.poll(rows)
    assert len(h.calls) == 1  # waiting for the backoff
    h.fail = None
    h.fills = [("late", T0 + 1)]
    clock.advance(failed["retry_in_s"])
    _settle(r, rows)
    assert h.calls[1][0] == T0
    done = _details(rows, "fills_reconciled")[-1]
    assert done["trigger"] == "retry" and done["new"] == 1
    assert r.backoff.attempts == 0


def test_periodic_reconciliations_and_rereads():
    clock, h = Clock(), FakeHistory()
    r = _reconciler(h, clock, interval=60.0, overlap_us=1_000_000, rereads=True)
    rows = new_rows()
    clock.advance(10)
    r.connecting()
    r.subscribed()
    _settle(r, rows)
    first_until = h.calls[0][1]
    clock.advance(59)
    r.poll(rows)
    assert len(h.calls) == 1
    clock.advance(1)
    _settle(r, rows)
    # rereads: the whole interval again, from the end of the previous one
    assert h.calls[1] == (first_until - 1_000_000, clock.wall)
    assert _details(rows, "fills_reconciled")[-1]["trigger"] == "periodic"
    h2 = FakeHistory()
    plain = _reconciler(h2, clock, interval=60.0, overlap_us=1_000_000)
    plain.connecting()
    plain.subscribed()
    _settle(plain, rows)
    clock.advance(60)
    _settle(plain, rows)
    since, until = h2.calls[1]
    assert until - since == 1_000_000  # only what the live stream may not have covered


def test_a_big_span_is_read_in_parts_that_each_move_the_cursor():
    clock = Clock()

    def fetch(since, until):  # chunks ending at every 2 s from T0, 10 fills each
        end = T0
        while end < until:
            end = min(until, end + 2_000_000)
            if end > since:
                yield Chunk([(f"f{end}-{j}", end) for j in range(10)], end)

    ledger = FillLedger()

    def record(items, ts, rows):
        new = sum(ledger.is_new(("S", fid, "O"), REST) for fid, _ in items)
        return new, len(items) - new

    r = Reconciler("x", "s", fetch, record, start_us=T0, clock=clock.mono, wall_us=clock.us,
                   settle=0.0, overlap_us=0, max_fills=20)
    rows = new_rows()
    clock.advance(10)
    r.connecting()
    r.subscribed()
    _settle(r, rows)  # the parts follow one another at once
    runs = _details(rows, "fills_reconciled")
    assert [(d["trigger"], d.get("more"), d["found"]) for d in runs] == [
        ("start", True, 20), ("continue", True, 20), ("continue", None, 10)]
    assert [d["since"] for d in runs] == [iso_us(T0), iso_us(T0 + 4_000_000),
                                         iso_us(T0 + 8_000_000)]
    assert len(ledger) == 50 and r.cursor_us == T0 + 10_000_000


def test_a_stop_waits_briefly_and_leaves_the_cursor_in_the_data():
    clock, h = Clock(), FakeHistory()
    r = _reconciler(h, clock, wait_on_stop=0.05)
    rows = new_rows()
    r.connecting()
    r.subscribed()
    h.gate = threading.Event()  # the history does not answer
    r.poll(rows)
    r.poll(rows, stopping=True)
    (failed,) = _details(rows, "reconcile_failed")
    assert "stopped before the history was read" in failed["error"]
    h.gate.set()
    # A stop with nothing under way: where the next start continues.
    clock2, h2 = Clock(), FakeHistory()
    r2 = _reconciler(h2, clock2, overlap_us=1_000_000)
    rows2 = new_rows()
    r2.connecting()
    r2.subscribed()
    _settle(r2, rows2)
    clock2.advance(30)
    r2.poll(rows2, stopping=True)
    (stopped,) = _details(rows2, "reconcile_stopped")
    assert stopped == {"cursor": iso_us(clock2.wall - 1_000_000), "caught_up": True}
    r2.poll(rows2, stopping=True)
    assert len(_details(rows2, "reconcile_stopped")) == 1


def test_restore_continues_from_the_data_directory():
    clock, h = Clock(), FakeHistory()
    r = _reconciler(h, clock, overlap_us=1_000_000)
    r.restore(History([], T0 - 50_000_000, None, "none"))
    assert r.cursor_us == T0 - 51_000_000 and r.cursor_from == "last recorded fill"
    r.restore(History([], T0 - 50_000_000, T0 - 99, "reconcile_stopped"))
    assert r.cursor_us == T0 - 99 and r.cursor_from == "reconcile_stopped"


def _write(root, table: str, rows: list[tuple], name: str = "a.parquet") -> None:
    batch, problems = rows_to_batch(table, rows)
    assert not problems
    part = root / table / f"exchange={rows[0][0]}" / "date=2026-01-01"
    part.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_batches([batch]), part / name)


def test_recorded_history_reads_fills_and_the_last_cursor_of_one_exchange(tmp_path):
    fills = [make_row("fills", exchange="kraken", symbol="BTC/USD", ts_exchange=T0 + i,
                      ts_recv=T0 + i, order_id="O", trade_id=str(i)) for i in range(3)]
    _write(tmp_path, "fills", fills)
    _write(tmp_path, "fills", [make_row("fills", exchange="kucoin", symbol="BTC/USDT",
                                        ts_exchange=T0 + 10, ts_recv=T0, order_id="K",
                                        trade_id="k")])
    history = recorded_history(tmp_path, "kraken")
    assert history.keys == [("BTC/USD", str(i), "O") for i in range(3)]
    assert history.last_fill_us == T0 + 2 and history.cursor_us is None
    _write(tmp_path, "events", [
        event("kraken", T0 + 5, "fills_reconciled", detail=detail(cursor=iso_us(T0 - 7))),
        event("kraken", T0 + 6, "reconcile_stopped", detail=detail(cursor=iso_us(T0 - 3))),
        event("kraken", T0 + 9, "connected", detail=detail(url="x"))])
    _write(tmp_path, "events", [
        event("kucoin", T0 + 9, "reconcile_stopped", detail=detail(cursor=iso_us(T0)))])
    history = recorded_history(tmp_path, "kraken", limit=2)
    assert history.cursor_us == T0 - 3 and history.cursor_from == "reconcile_stopped"
    assert len(history.keys) == 3  # the newest 2, and every one since the cursor
    assert recorded_history(tmp_path / "none", "kraken").keys == []


# -- Kraken TradesHistory -------------------------------------------------------------------


def _kraken_trade(n: int, pair: str = "XXBTZUSD") -> tuple[str, dict]:
    return f"T{n:05d}-AAAAA-BBBBBB", {
        "ordertxid": f"O{n:05d}-CCCCC-DDDDDD", "postxid": "TKH2SE-M7IF5-CFI7LT", "pair": pair,
        "time": f"1767000000.{n:04d}", "type": "buy", "ordertype": "limit",
        "price": "30010.00000", "cost": "600.20000", "fee": "0.96032", "vol": "0.02000000",
        "margin": "0.00000", "misc": "", "trade_id": 40274800 + n, "maker": n % 2 == 0}


class FakeKrakenClient:
    def __init__(self, trades: dict[str, dict]) -> None:
        self.trades = trades  # newest first, as Kraken lists them
        self.calls: list[dict] = []

    def call(self, method, fields, exact=False):
        assert method == "TradesHistory" and exact
        self.calls.append(fields)
        items = list(self.trades.items())
        ofs = int(fields["ofs"])
        return {"trades": dict(items[ofs:ofs + 50]), "count": len(items)}


def test_trades_history_pages_with_a_fixed_end_and_records_rows_like_the_stream():
    trades = dict(reversed([_kraken_trade(n) for n in range(120)]))
    client = FakeKrakenClient(trades)
    state = PrivateState()
    waits = []
    counter = CallCounter(clock=lambda: 0.0, sleep=waits.append)
    reader = TradesHistory(client, state, "v2", "http://unused", counter)
    (chunk,) = list(reader.fetch(T0, T0 + 3_000_000))
    assert chunk.pages == 3 and len(chunk.fills) == 120
    assert [c["ofs"] for c in client.calls] == ["0", "50", "100"]
    assert {c["start"] for c in client.calls} == {str(T0 // 1_000_000 - 1)}
    assert {c["end"] for c in client.calls} == {str(T0 // 1_000_000 + 3)}
    rows = new_rows()
    state.is_new_fill(("BTC/USD", str(40274800 + 7), "O00007-CCCCC-DDDDDD"), 1)  # live
    assert reader.record(chunk.fills, 5, rows) == (119, 1)
    first = rows["fills"][0]
    assert first == make_row(
        "fills", exchange="kraken", symbol="BTC/USD", ts_exchange=1_767_000_000_000_000,
        ts_recv=5, order_id="O00000-CCCCC-DDDDDD", trade_id="40274800",
        exec_id="T00000-AAAAA-BBBBBB", side="buy", price="30010.00000", qty="0.02000000",
        cost="600.20000", fee="0.96032", fee_currency="USD", liquidity="maker",
        ord_type="limit", is_snapshot=False)
    assert rows["fills"][1][12] == "taker"  # liquidity from "maker": false
    v1 = TradesHistory(client, PrivateState(), "v1", "http://unused", counter)
    rows = new_rows()
    v1.record(chunk.fills[:1], 5, rows)
    assert rows["fills"][0][5] == "T00119-AAAAA-BBBBBB"  # v1: the TXID is the trade id
    assert rows["fills"][0][14] is None  # no exec id on v1


def test_trades_history_resolves_pairs_outside_the_bundled_list(monkeypatch):
    client = FakeKrakenClient(dict([_kraken_trade(1, pair="NEWUSD")]))
    asked = []

    def fake_get(rest, path):
        asked.append(path)
        return {"error": [], "result": {"NEWUSD": {"altname": "NEWUSD", "wsname": "NEW/USD"}}}

    monkeypatch.setattr("recorder.exchanges.kraken.reconcile.public_get", fake_get)
    reader = TradesHistory(client, PrivateState(), "v2", "http://x",
                           CallCounter(clock=lambda: 0.0, sleep=lambda s: None))
    list(reader.fetch(T0, T0 + 1))
    list(reader.fetch(T0, T0 + 1))
    assert asked == ["/0/public/AssetPairs?pair=NEWUSD"]  # once
    assert reader._pairs == {"NEWUSD": "NEW/USD"}


def test_call_counter_paces_calls_under_krakens_limit():
    now = [0.0]
    waits: list[float] = []

    def sleep(s: float) -> None:
        waits.append(s)
        now[0] += s

    counter = CallCounter(maximum=15, decay=0.33, clock=lambda: now[0], sleep=sleep)
    for _ in range(7):
        assert counter.take(2) == 0  # a burst up to the maximum
    assert counter.take(2) == pytest.approx(1 / 0.33)
    now[0] += 60
    assert counter.take(2) == 0


# -- KuCoin fills lists ------------------------------------------------------------------------


def _kc_item(n: int, symbol: str = "BTC-USDT", hf: bool = False) -> dict:
    item = {"symbol": symbol, "tradeId": 11029373945659392 + n if hf else
            str(11029373945659392 + n), "orderId": f"6717422bd51c29000775e{n:03d}",
            "counterOrderId": "x", "side": "buy", "liquidity": "taker", "forceTaker": False,
            "price": "67717.6", "size": "0.00001", "funds": "0.677176", "fee": "0.000677176",
            "feeRate": "0.001", "feeCurrency": "USDT", "stop": "", "tradeType": "TRADE",
            "type": "limit", "createdAt": 1729577515473 + n}
    if hf:
        item["id"] = 19814995255305 - n
    return item


class FakeKucoinRest:
    def __init__(self, v1: list[dict], hf: list[dict], v1_error: str | None = None) -> None:
        self.v1, self.hf = v1, hf
        self.v1_error = v1_error
        self.calls: list[tuple[str, dict]] = []
        self.rate_limited = 0

    def call(self, method, path, params, signed=False):
        assert method == "GET" and signed
        self.calls.append((path, dict(params)))
        if self.rate_limited:
            self.rate_limited -= 1
            raise RateLimited("rate limited", code="429000")
        if path == "/api/v1/fills":
            if self.v1_error and "symbol" not in params:
                raise KucoinError("refused", code=self.v1_error)
            items = [i for i in self.v1 if "symbol" not in params
                     or i["symbol"] == params["symbol"]]
            size, page = int(params["pageSize"]), int(params["currentPage"])
            data = {"currentPage": page, "pageSize": size, "totalNum": len(items),
                    "totalPage": -(-len(items) // size),
                    "items": items[(page - 1) * size:page * size]}
        else:
            items = [i for i in self.hf if i["symbol"] == params["symbol"]]
            if "lastId" in params:
                items = [i for i in items if i["id"] < int(params["lastId"])]
            page = items[:int(params["limit"])]
            data = {"items": page, "lastId": page[-1]["id"] if page else 0}
        return json.dumps({"code": "200000", "data": data}).encode().split(b'"data":', 1)[1][:-1]


def _kc_reader(rest, symbols=("BTC/USDT",)) -> KucoinFills:
    return KucoinFills(rest, FillLedger(), lambda: set(symbols), sleep=lambda s: None,
                       clock=lambda: 0.0)


def test_kucoin_reads_both_lists_week_by_week_and_counts_a_fill_once():
    v1 = [_kc_item(n) for n in range(700)]
    hf = [_kc_item(n, hf=True) for n in range(250)]
    rest = FakeKucoinRest(v1, hf)
    reader = _kc_reader(rest)
    week = 7 * 86_400_000
    chunks = list(reader.fetch(T0, T0 + (week + 5) * 1000))
    assert len(chunks) == 2 and chunks[0].until_us == (T0 // 1000 + week - 1) * 1000
    assert len(chunks[0].fills) == 700  # the HF items are the same fills
    assert chunks[0].pages == 2 + 3  # 500 + 200 classic; 100 + 100 + 50 HF
    windows = {(p["startAt"], p["endAt"]) for path, p in rest.calls if path == "/api/v1/fills"}
    assert len(windows) == 2 and all(int(b) - int(a) < week for a, b in windows)
    assert [p.get("lastId") for path, p in rest.calls[:5] if path == "/api/v1/hf/fills"] == [
        None, str(19814995255305 - 99), str(19814995255305 - 199)]
    rows = new_rows()
    assert reader.record([_kc_item(1, hf=True)], 7, rows) == (1, 0)
    assert rows["fills"][0] == make_row(
        "fills", exchange="kucoin", symbol="BTC/USDT", ts_exchange=1729577515474000,
        ts_recv=7, order_id="6717422bd51c29000775e001", trade_id="11029373945659393",
        side="buy", price="67717.6", qty="0.00001", cost="0.677176", fee="0.000677176",
        fee_currency="USDT", liquidity="taker", ord_type="limit", is_snapshot=False)
    assert reader.record([_kc_item(1)], 7, rows) == (0, 1)  # text tradeId, same fill


@pytest.mark.parametrize("code, per_symbol, gone", [("400100", True, False),
                                                     ("404000", False, True)])
def test_kucoin_classic_list_wanting_a_symbol_or_gone(code, per_symbol, gone):
    rest = FakeKucoinRest([_kc_item(1), _kc_item(2, "ETH-USDT")], [], v1_error=code)
    reader = _kc_reader(rest, ("BTC/USDT", "ETH/USDT"))
    (chunk,) = list(reader.fetch(T0, T0 + 1000))
    assert reader.v1_per_symbol is per_symbol and reader.v1_gone is gone
    assert len(chunk.fills) == (2 if per_symbol else 0)


def test_kucoin_rate_limit_is_retried_then_fails():
    rest = FakeKucoinRest([_kc_item(1)], [])
    rest.rate_limited = 2
    assert len(next(_kc_reader(rest, ()).fetch(T0, T0 + 1000)).fills) == 1
    rest.rate_limited = 10
    with pytest.raises(RateLimited):
        list(_kc_reader(rest, ()).fetch(T0, T0 + 1000))


def test_kucoin_item_without_a_trade_id_fails_the_reconciliation():
    bad = _kc_item(1)
    del bad["tradeId"]
    with pytest.raises(KucoinError, match="without symbol, orderId, tradeId"):
        list(_kc_reader(FakeKucoinRest([bad], []), ()).fetch(T0, T0 + 1000))


# -- KuCoin private pushes -----------------------------------------------------------------

MATCH = ('{"type":"message","topic":"/spotMarket/tradeOrdersV2","subject":"orderChange",'
         '"channelType":"private","data":{"symbol":"KCS-USDT","orderType":"limit",'
         '"side":"sell","orderId":"5efab07953bdea00089965fa","liquidity":"taker",'
         '"type":"match","orderTime":1593487482038606180,"size":"0.1","filledSize":"0.1",'
         '"price":"0.938","matchPrice":"0.96738","matchSize":"0.1",'
         '"tradeId":"5efab07a4ee4c7000a82d6d9","clientOid":"1593487481000313",'
         '"remainSize":"0","status":"match","canceledSize":"0.1","canceledFunds":"0.1",'
         '"originSize":"0.1","originFunds":"0.1","ts":1593487482038606180}}')
RECEIVED = ('{"topic":"/spotMarket/tradeOrdersV2","type":"message","subject":"orderChange",'
            '"userId":"633559791e1cbc0001f319bc","channelType":"private","data":{'
            '"clientOid":"5c52e11203aa677f33e493fc","orderId":"6720da3fa30a360007f5f832",'
            '"orderTime":1730206271588,"orderType":"market","originSize":"0.00001",'
            '"side":"buy","status":"new","symbol":"BTC-USDT","ts":1730206271616000000,'
            '"type":"received"}}')


@pytest.fixture
def kucoin_feed(tmp_path, monkeypatch):
    from types import SimpleNamespace

    config = SimpleNamespace(rest_url="http://127.0.0.1:9", auth_url=None,
                             api_key_env="T_KC_KEY", api_secret_env="T_KC_SECRET",
                             api_passphrase_env="T_KC_PASS", key_version=2, secrets_file=None,
                             public_subscriptions=())
    for name in ("T_KC_KEY", "T_KC_SECRET", "T_KC_PASS"):
        monkeypatch.setenv(name, "not-a-secret")
    return PrivateFeed(config, tmp_path, check=False)


def _parse(parser: ConnParser, *frames: str):
    from recorder.exchanges.kucoin.parse import decode

    out = new_rows()
    controls = [parser.parse(decode(f.encode()), 42, 1, out) for f in frames]
    return out, controls


def test_kucoin_match_is_a_fill_and_an_order_change(kucoin_feed):
    out, controls = _parse(ConnParser(kucoin_feed, 1), MATCH, RECEIVED)
    assert controls == [None, None]
    assert out["fills"] == [make_row(
        "fills", exchange="kucoin", symbol="KCS/USDT", ts_exchange=1593487482038606,
        ts_recv=42, order_id="5efab07953bdea00089965fa", trade_id="5efab07a4ee4c7000a82d6d9",
        side="sell", price="0.96738", qty="0.1", cost="0.096738", liquidity="taker",
        ord_type="limit", is_snapshot=False)]
    match, received = out["orders"]
    assert match[:12] == make_row(
        "orders", exchange="kucoin", symbol="KCS/USDT", ts_exchange=1593487482038606,
        ts_recv=42, order_id="5efab07953bdea00089965fa", status="match", side="sell",
        ord_type="limit", limit_price="0.938", order_qty="0.1", filled_qty="0.1")[:12]
    assert match[13:] == ("match", False)
    assert json.loads(match[12])["matchPrice"] == "0.96738"
    assert received[8:11] == (None, "0.00001", None)  # market: no limit; originSize
    assert "originSize" not in json.loads(received[12])
    assert received[13] == "received"
    assert Decimal(out["fills"][0][9]) == Decimal("0.96738") * Decimal("0.1")


def test_kucoin_fill_already_reconciled_is_not_recorded_again(kucoin_feed):
    kucoin_feed.ledger.is_new(("KCS/USDT", "5efab07a4ee4c7000a82d6d9",
                               "5efab07953bdea00089965fa"), REST)
    out, _ = _parse(ConnParser(kucoin_feed, 1), MATCH)
    assert out["fills"] == [] and len(out["orders"]) == 1
    assert [e[2] for e in out["events"]] == ["duplicate_fill"]


def test_kucoin_malformed_push_changes_nothing(kucoin_feed):
    from recorder.exchanges.kucoin.parse import decode

    bad = MATCH.replace('"matchPrice":"0.96738"', '"matchPrice":"abc"')
    out = new_rows()
    with pytest.raises(ValueError):
        ConnParser(kucoin_feed, 1).parse(decode(bad.encode()), 1, 1, out)
    assert out["fills"] == [] and out["orders"] == [] and len(kucoin_feed.ledger) == 0


def test_kucoin_ack_makes_the_stream_live(kucoin_feed):
    r = kucoin_feed.reconciler
    r.connecting()
    out, (control,) = _parse(ConnParser(kucoin_feed, 1), '{"id":"1.fills","type":"ack"}')
    assert control.kind == "subscribed" and control.channel == "fills"
    assert r._live and r._due is not None
    out, (control,) = _parse(ConnParser(kucoin_feed, 1),
                             '{"id":"1.fills","type":"error","code":401,"data":"token is '
                             'expired"}')
    assert control.kind == "error" and control.channel == "fills"


def test_kucoin_cost_is_exact_or_left_out():
    from recorder.exchanges.kucoin.private import cost

    assert cost("67717.6", "0.00001") == "0.677176"
    assert cost("0.00000123", "0.00000001") is None  # 16 decimals: more than the column


# -- the Kraken simulator's TradesHistory --------------------------------------------------------


def test_simulator_trades_history_pages_newest_first_within_start_and_end():
    import asyncio
    from urllib.parse import urlencode

    from recorder.exchanges.kraken.signer import api_sign
    from recorder.simulator.kraken.account import time_text
    from recorder.simulator.kraken.config import SimConfig
    from recorder.simulator.kraken.market import TradeEvent
    from recorder.simulator.kraken.rest import RestApi
    from recorder.simulator.kraken.server import Simulator
    from tests.sentinel import SENTINEL_KEY, SENTINEL_SECRET

    sim = Simulator(SimConfig(seed=3, fill_rate=1.0, api_key=SENTINEL_KEY,
                              api_secret=SENTINEL_SECRET))
    while len(sim.account.fills) < 120:
        for ev in sim.market.step():
            if isinstance(ev, TradeEvent):
                sim.fill(ev)
    api = RestApi(sim)
    nonce = [int(time.time() * 1e6)]

    def call(**fields):
        nonce[0] += 1
        body = urlencode({"nonce": str(nonce[0]), **fields})
        path = "/0/private/TradesHistory"
        headers = {"api-key": SENTINEL_KEY,
                   "api-sign": api_sign(path, str(nonce[0]), body, SENTINEL_SECRET)}
        status, doc = asyncio.run(api.handle("POST", path, headers, body.encode()))
        assert status == 200
        return doc

    fills = list(sim.account.fills)
    first = call(ofs="0")["result"]
    assert first["count"] == len(fills) and len(first["trades"]) == 50
    assert list(first["trades"]) == [f.txid for f in reversed(fills)][:50]
    entry = first["trades"][fills[-1].txid]
    assert entry["ordertxid"] == fills[-1].order.order_id and entry["maker"] is True
    assert entry["trade_id"] == fills[-1].trade_id
    assert f"{entry['time']:.6f}" == time_text(fills[-1].time)
    # start exclusive, end inclusive, by time or by TXID
    lo, hi = fills[10], fills[40]
    window = call(start=lo.txid, end=hi.txid, ofs="0")["result"]
    assert list(window["trades"]) == [f.txid for f in reversed(fills[11:41])]
    assert window["count"] == 30
    page = call(start=time_text(lo.time), end=time_text(hi.time), ofs="20")["result"]
    assert list(page["trades"]) == [f.txid for f in reversed(fills[11:21])]
    sim.apply_fault({"kind": "rest_error", "error": "EAPI:Rate limit exceeded", "count": 1,
                     "path": "/0/private/TradesHistory"})
    assert call(ofs="0") == {"error": ["EAPI:Rate limit exceeded"]}
    assert "result" in call(ofs="0")


def test_the_sentinel_covers_the_kucoin_passphrase_as_sent():
    from recorder.exchanges.kucoin.signer import auth_headers
    from tests.sentinel import SENTINEL_KEY, SENTINEL_PASSPHRASE, SENTINEL_SECRET, Scanner

    scanner = Scanner()
    for version in (1, 2, 3):
        headers = auth_headers(SENTINEL_KEY, SENTINEL_SECRET, SENTINEL_PASSPHRASE, version,
                               "POST", "/api/v1/bullet-private", "", 1_767_000_000_000)
        found = scanner.found(headers["KC-API-PASSPHRASE"])
        assert found == (["sentinel passphrase"] if version == 1
                         else ["sentinel passphrase (signed)"])
