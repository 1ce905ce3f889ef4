"""The trade backfill's decisions (recorder/capture/backfill.py) with a fake history and an
injected clock: the span, the keys that keep each trade once, completeness, retries."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import pytest

from recorder.capture.backfill import Backfiller, time_us, trade_stream
from recorder.core.events import new_rows
from recorder.core.schema import column_index, make_row
from recorder.exchanges.base import ExchangeError, RateLimited, TradeHistory
from recorder.exchanges.kraken.history import trade_rows, v1_key, v2_key
from recorder.exchanges.kucoin import history as kucoin_history

T0 = 1_796_000_000_000_000
SEQ = column_index("trades", "sequence")


def trade(tid: int, ts: int, source: str = "ws", symbol: str = "BTC/USD") -> tuple:
    return make_row("trades", exchange="kraken", symbol=symbol, ts_exchange=ts, ts_recv=ts,
                    price=f"{100 + tid}.5", qty="0.25", side="buy", trade_id=str(tid),
                    source=source)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class FakeHistory:
    """Pages of ``per_page`` trades from ``since_us`` on, like Kraken's cursor paging."""

    def __init__(self, trades: list[tuple], per_page: int = 1000, window: int | None = None,
                 ordered: bool = True) -> None:
        self.trades = trades
        self.per_page = per_page
        self.calls: list[int] = []
        self.fail: list[Exception] = []
        self.spec = TradeHistory("GET /fake", self.fetch, v2_key, ordered=ordered,
                                 window=window, min_interval=0.0)

    def fetch(self, symbol: str, since_us: int):
        self.calls.append(since_us)
        if self.fail:
            raise self.fail.pop(0)
        if self.spec.window:
            yield [t for t in self.trades if t[1] == symbol][-self.spec.window:]
            return
        rest = [t for t in self.trades if t[1] == symbol and time_us(t[2]) >= since_us]
        while True:
            page, rest = rest[:self.per_page], rest[self.per_page:]
            yield page
            if not page:
                return


def _run(bf: Backfiller, rows: dict, clock: Clock, seconds: float = 10.0) -> None:
    """Poll as the receive loop does until the running read is finished."""
    deadline = time.monotonic() + seconds
    while True:
        bf.poll(rows)
        if bf._run is None and not any(clock.t >= g.next_try and (g.first_us or g.ready_at)
                                       for g in bf.gaps):
            return
        if time.monotonic() > deadline:
            raise AssertionError("the backfill did not finish")
        time.sleep(0.005)


def _backfiller(history: FakeHistory, clock: Clock, now_us: int, **kw) -> Backfiller:
    return Backfiller("kraken", trade_stream(history.spec), ["BTC/USD"],
                      max_span_us=kw.pop("span", 10**12), clock=clock,
                      wall_us=lambda: now_us, **kw)


def _events(rows: dict) -> list[tuple[str, dict]]:
    return [(e[2], json.loads(e[5])) for e in rows["events"]]


def test_a_reconnect_gap_is_repaired_between_the_last_and_the_first_live_trade():
    made = [trade(i, T0 + i * 1000, "rest") for i in range(1, 101)]
    history, clock = FakeHistory(made, per_page=30), Clock()
    bf = _backfiller(history, clock, T0 + 200_000)
    bf.observe([trade(i, T0 + i * 1000) for i in range(1, 21)])  # live up to 20
    bf.disconnected()
    bf.connected()
    rows = new_rows()
    bf.poll(rows)
    assert history.calls == [], "nothing before the first live trade bounds the span"
    live = [trade(i, T0 + i * 1000) for i in range(61, 70)]
    bf.observe(live)
    _run(bf, rows, clock)
    assert [int(r[7]) for r in rows["trades"]] == list(range(21, 61))
    assert all(r[-1] == "rest" for r in rows["trades"])
    assert history.calls == [T0 + 20_000]
    ((kind, d),) = _events(rows)
    assert kind == "trades_backfilled" and d["new"] == 40 and d["complete"] is True
    # Pages from the last recorded trade on (ids 20-49, 50-79): the second reaches the first
    # live trade, so paging stops there.
    assert d["pages"] == 2
    assert d["trigger"] == "reconnect" and d["since"].endswith(".020000Z")
    assert d["until"].endswith(".061000Z")


def test_trades_of_the_gap_edges_sharing_a_time_are_kept_once_by_key():
    """Several trades at the last recorded microsecond and at the first live one: the
    recorded ones are not recorded again, the others are."""
    ts_a, ts_b = T0 + 5000, T0 + 9000
    made = [trade(1, ts_a, "rest"), trade(2, ts_a, "rest"), trade(3, ts_a, "rest"),
            trade(4, T0 + 7000, "rest"), trade(5, ts_b, "rest"), trade(6, ts_b, "rest")]
    for ordered in (True, False):
        history, clock = FakeHistory(made, ordered=ordered), Clock()
        bf = _backfiller(history, clock, T0 + 10_000)
        bf.observe([trade(1, ts_a), trade(2, ts_a)])
        bf.disconnected()
        bf.connected()
        bf.observe([trade(6, ts_b)])  # the stream starts again at 6 (5 was missed)
        rows = new_rows()
        _run(bf, rows, clock)
        got = [int(r[7]) for r in rows["trades"]]
        assert got == [3, 4, 5], (ordered, got)


def test_a_quiet_symbol_is_repaired_up_to_the_moment_of_the_read():
    made = [trade(i, T0 + i * 1000, "rest") for i in range(1, 11)]
    history, clock = FakeHistory(made), Clock()
    bf = _backfiller(history, clock, T0 + 8_500, live_wait=5.0)
    bf.observe([trade(1, T0 + 1000), trade(2, T0 + 2000)])
    bf.disconnected()
    bf.connected()
    rows = new_rows()
    bf.poll(rows)
    assert history.calls == []
    clock.t += 5.0  # no live trade within LIVE_WAIT
    _run(bf, rows, clock)
    # Up to "now" (T0 + 8.5 ms); trades after it come live.
    assert [int(r[7]) for r in rows["trades"]] == [3, 4, 5, 6, 7, 8]


def test_live_trades_arriving_during_the_read_are_not_recorded_twice():
    made = [trade(i, T0 + i * 1000, "rest") for i in range(1, 11)]
    history, clock = FakeHistory(made), Clock()
    bf = _backfiller(history, clock, T0 + 10_000, live_wait=0.0)
    bf.observe([trade(1, T0 + 1000)])
    bf.disconnected()
    bf.connected()
    rows = new_rows()
    clock.t += 1
    bf.poll(rows)  # starts the read up to T0 + 10 ms: no live trade yet
    assert bf._run is not None
    rows["trades"].append(trade(9, T0 + 9000))  # live, not flushed yet
    bf._run.thread.join()
    bf.poll(rows)
    assert [int(r[7]) for r in rows["trades"]] == [9, 2, 3, 4, 5, 6, 7, 8, 10]


def test_a_restart_repairs_from_the_data_directorys_last_trade():
    made = [trade(i, T0 + i * 1000, "rest") for i in range(1, 31)]
    history, clock = FakeHistory(made), Clock()
    bf = _backfiller(history, clock, T0 + 40_000)
    bf.restore({"BTC/USD": [trade(12, T0 + 12_000)], "OTHER/USD": [trade(1, T0)]})
    bf.connected()
    bf.observe([trade(25, T0 + 25_000)])
    rows = new_rows()
    _run(bf, rows, clock)
    assert [int(r[7]) for r in rows["trades"]] == list(range(13, 25))
    ((_, d),) = _events(rows)
    assert d["trigger"] == "restart" and d["complete"] is True


def test_nothing_to_repair_on_an_empty_data_directory():
    history, clock = FakeHistory([]), Clock()
    bf = _backfiller(history, clock, T0)
    bf.restore({})
    bf.connected()
    bf.observe([trade(1, T0)])
    rows = new_rows()
    clock.t += 60
    _run(bf, rows, clock)
    assert history.calls == [] and rows["events"] == []


def test_a_span_longer_than_max_span_is_cut_and_reported_incomplete():
    made = [trade(i, T0 + i * 1_000_000, "rest") for i in range(1, 101)]
    history, clock = FakeHistory(made), Clock()
    bf = _backfiller(history, clock, T0 + 100_000_000, span=30_000_000)
    bf.restore({"BTC/USD": [trade(1, T0 + 1_000_000)]})
    bf.connected()
    bf.observe([trade(95, T0 + 95_000_000)])
    rows = new_rows()
    _run(bf, rows, clock)
    assert history.calls == [T0 + 70_000_000]
    assert [int(r[7]) for r in rows["trades"]] == list(range(70, 95))
    ((_, d),) = _events(rows)
    assert d["complete"] is False and d["capped_at_max_span"] is True


def test_a_window_that_does_not_reach_back_is_reported_incomplete():
    """KuCoin's last-100 history: complete only if it reaches the last recorded trade."""
    made = [trade(i, T0 + i * 1000, "rest") for i in range(1, 301)]
    for last_recorded, complete in ((250, True), (150, False)):
        history, clock = FakeHistory(made, window=100), Clock()
        bf = _backfiller(history, clock, T0 + 400_000)
        bf.observe([trade(last_recorded, T0 + last_recorded * 1000)])
        bf.disconnected()
        bf.connected()
        bf.observe([trade(290, T0 + 290_000)])
        rows = new_rows()
        _run(bf, rows, clock)
        ((_, d),) = _events(rows)
        first = max(last_recorded + 1, 201)
        assert [int(r[7]) for r in rows["trades"]] == list(range(first, 290))
        assert d["complete"] is complete, d
        if not complete:
            assert d["unrepaired_since"] == d["since"]
            assert d["unrepaired_until"].endswith(".201000Z")


def test_a_failed_read_is_an_event_and_is_retried_with_backoff():
    made = [trade(i, T0 + i * 1000, "rest") for i in range(1, 11)]
    history, clock = FakeHistory(made), Clock()
    history.fail = [ExchangeError("GET /fake: cannot reach"), RateLimited("slow down", 30.0)]
    bf = _backfiller(history, clock, T0 + 20_000, retry=(1.0, 4.0))
    bf.observe([trade(2, T0 + 2000)])
    bf.disconnected()
    bf.connected()
    bf.observe([trade(8, T0 + 8000)])
    rows = new_rows()
    _run(bf, rows, clock)
    (kind, d), = _events(rows)
    assert kind == "backfill_failed" and d["error"] == "GET /fake: cannot reach"
    assert 1.0 <= d["retry_in_s"] <= 4.0 and d["attempt"] == 1
    clock.t += d["retry_in_s"]
    _run(bf, rows, clock)
    kind, d = _events(rows)[-1]
    assert kind == "backfill_failed" and d["retry_in_s"] >= 30.0, "the exchange's pace wins"
    clock.t += d["retry_in_s"]
    _run(bf, rows, clock)
    kind, d = _events(rows)[-1]
    assert kind == "trades_backfilled" and d["new"] == 5 and d["attempts"] == 3


def test_a_repair_pending_at_stop_is_reported_abandoned():
    history, clock = FakeHistory([]), Clock()
    bf = _backfiller(history, clock, T0 + 5000)
    bf.observe([trade(1, T0)])
    bf.disconnected()
    rows = new_rows()
    bf.poll(rows, stopping=True)
    ((kind, d),) = _events(rows)
    assert kind == "backfill_abandoned" and d["complete"] is False
    assert d["unrepaired_since"] == d["since"]


def test_two_outages_before_the_first_live_trade_are_one_span():
    made = [trade(i, T0 + i * 1000, "rest") for i in range(1, 11)]
    history, clock = FakeHistory(made), Clock()
    bf = _backfiller(history, clock, T0 + 20_000)
    bf.observe([trade(2, T0 + 2000)])
    bf.disconnected()
    bf.connected()
    bf.disconnected()  # dropped again before any trade came
    bf.connected()
    bf.observe([trade(9, T0 + 9000)])
    rows = new_rows()
    _run(bf, rows, clock)
    assert [int(r[7]) for r in rows["trades"]] == [3, 4, 5, 6, 7, 8]
    assert len(_events(rows)) == 1


def test_time_us_reads_every_form_adapters_hand_in():
    assert time_us(1_796_000_000_123_456) == 1_796_000_000_123_456
    assert time_us("2026-11-30T00:53:20.123456Z") == 1_796_000_000_123_456
    assert time_us("2026-11-30T00:53:20.123456789Z") == 1_796_000_000_123_456
    assert time_us("2026-11-30T01:53:20.123456+01:00") == 1_796_000_000_123_456
    assert time_us("1796000000.123456") == 1_796_000_000_123_456
    assert time_us("1796000000.1234567") == 1_796_000_000_123_456
    assert time_us("1796000000") == 1_796_000_000_000_000


def test_kraken_rest_rows_match_the_streams_by_key():
    """REST Trades rows (the OpenAPI example's shape; times as exact text) against the v1
    and v2 rows of the same trade."""
    from recorder.exchanges.kraken import v1, v2

    item = ["30243.40000", "0.34507674", "1688669597.8277369", "b", "m", "", 61044952]
    (rest,) = trade_rows("BTC/USD", [item], 5)
    assert rest[2] == 1_688_669_597_827_736 and rest[7] == "61044952" and rest[-1] == "rest"
    assert rest[4:7] == ("30243.40000", "0.34507674", "buy") and rest[8] == "market"
    out = new_rows()
    v2.parse(v2.decode(json.dumps({"channel": "trade", "type": "update", "data": [{
        "symbol": "BTC/USD", "side": "buy", "price": 30243.4, "qty": 0.34507674,
        "ord_type": "market", "trade_id": 61044952,
        "timestamp": "2023-07-06T18:53:17.827736Z"}]}).encode()), 6, 1, out)
    assert v2_key(out["trades"][0]) == v2_key(rest) == 61044952
    out = new_rows()
    v1.parse(v1.decode(json.dumps(
        [0, [["30243.40000", "0.34507674", "1688669597.827736", "b", "m", ""]], "trade",
         "XBT/USD"]).encode()), 6, 1, out)
    assert v1_key(out["trades"][0]) == v1_key(rest)
    assert v1_key(rest) == (1_688_669_597_827_736, Decimal("30243.4"), Decimal("0.34507674"),
                            "buy")


def test_kucoin_history_rows_are_keyed_by_sequence():
    """The spec's /market/histories example item."""
    item = {"sequence": "10976028003549185", "price": "67122", "size": "0.000025",
            "side": "buy", "time": 1729177117877000000}
    (row,) = kucoin_history.trade_rows("BTC/USDT", [item], 5)
    assert row[SEQ] == 10976028003549185 and kucoin_history.key(row) == row[SEQ]
    assert row[2] == 1_729_177_117_877_000 and row[7] == "10976028003549185"
    assert row[4:7] == ("67122", "0.000025", "buy") and row[-1] == "rest"


@pytest.mark.parametrize("api,ordered", [("v1", False), ("v2", True)])
def test_kraken_feed_carries_the_history_only_where_it_can_be_read(tmp_path, api, ordered):
    from recorder.core.config import load_config
    from recorder.exchanges.kraken.feed import public_feed

    path = tmp_path / "c.toml"
    path.write_text(f'[exchange]\nname = "kraken"\napi = "{api}"\n'
                    '[[subscribe]]\nchannel = "trade"\nsymbols = ["BTC/USD"]\n'
                    '[[subscribe]]\nchannel = "book"\nsymbols = ["ETH/USD"]\n')
    feed = public_feed(load_config(path))
    assert feed.trade_symbols == ("BTC/USD",) and feed.trade_history.ordered is ordered
    path.write_text(path.read_text() + '[connection]\nbackfill = false\n')
    assert public_feed(load_config(path)).trade_history is None


def test_a_long_repair_does_not_move_the_next_gaps_start_back():
    """A repair hands out more rows than a lane's tail holds, all older than the live ones
    that followed the gap: the next gap still starts at the newest live trade."""
    made = [trade(i, T0 + i * 1000, "rest") for i in range(1, 400)]
    history, clock = FakeHistory(made), Clock()
    bf = _backfiller(history, clock, T0 + 500_000)
    bf.observe([trade(1, T0 + 1000)])
    bf.disconnected()
    bf.connected()
    bf.observe([trade(300, T0 + 300_000), trade(301, T0 + 301_000)])
    rows = new_rows()
    _run(bf, rows, clock)
    assert [int(r[7]) for r in rows["trades"]] == list(range(2, 300))
    bf.observe(rows["trades"])  # on their way to the sink, after the live ones
    bf.disconnected()
    (gap,) = bf.gaps
    assert gap.since_us == T0 + 301_000 and gap.since_keys == {301}


def test_the_data_directorys_last_rows_per_lane(tmp_path):
    """Where a restarted job's repair starts: the rows at each lane's newest time, from the
    finished files (and journals), in the form adapters emit, so trade keys read them."""
    from recorder.capture.backfill import candle_stream
    from recorder.capture.backfill_seed import last_rows
    from recorder.exchanges.base import CandleHistory
    from tests.datasets import write

    root = tmp_path / "data"
    t0 = 1_796_000_000_000_000
    rows = [make_row("trades", exchange="kraken", symbol=s, ts_exchange=t0 + i * 1000,
                     ts_recv=t0 + i * 1000 + 5, price="100.5", qty="0.25", side="buy",
                     trade_id=str(i), source="ws")
            for i, s in enumerate(["BTC/USD", "ETH/USD", "BTC/USD", "BTC/USD"])]
    rows.append(make_row("trades", exchange="kraken", symbol="BTC/USD", ts_exchange=t0 + 3000,
                         ts_recv=t0 + 3005, price="101", qty="1", side="sell", trade_id="4",
                         source="ws"))
    ohlc = [make_row("ohlc", exchange="kraken", symbol="BTC/USD", interval=1,
                     interval_begin=t0 + m * 60_000_000, ts_exchange=t0 + m * 60_000_000 + 1,
                     ts_recv=t0 + m * 60_000_000 + 2, open="1", high="2", low="1",
                     close="2", vwap="1.5", volume="3", trades=4, source="ws")
            for m in range(3)]
    write(root, {"trades": rows, "ohlc": ohlc})
    stream = trade_stream(FakeHistory([]).spec)
    got = last_rows(root, "kraken", stream, ("BTC/USD", "ETH/USD", "SOL/USD"))
    assert sorted(got) == ["BTC/USD", "ETH/USD"]
    assert sorted(v2_key(r) for r in got["BTC/USD"]) == [3, 4]  # both at the newest time
    (eth,) = got["ETH/USD"]
    assert eth[2] == t0 + 1000 and eth[4] == "100.5000000000" and eth[-1] == "ws"
    candles = candle_stream(CandleHistory("GET /fake", lambda *a: iter(())))
    (row,) = last_rows(root, "kraken", candles, (("BTC/USD", 1),))[("BTC/USD", 1)]
    assert row[3] == t0 + 120_000_000
