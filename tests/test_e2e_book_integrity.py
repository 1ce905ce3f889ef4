"""Book integrity end to end: real checksums replayed through the simulator, and a
corrupted level resyncing only its own symbol."""

from __future__ import annotations

import json
import time
import zlib

import pytest

from recorder.simulator.testing import SimulatorProcess
from tests.captures import DATA
from tests.e2e import (
    count_rows,
    db,
    run_recorder,
    start_recorder,
    stop,
    wait_until,
    write_config,
)

CRYPTOFEED_PAIRS = ["WAVES/EUR", "XMR/USD", "KSM/XBT", "GRT/ETH", "SC/EUR", "ETH/CHF",
                    "OCEAN/XBT", "OMG/USD", "XBT/CHF", "ADA/XBT"]


@pytest.mark.parametrize("capture,pairs,depth,expected", [
    ("cryptofeed/KRAKEN.ws.50.0", CRYPTOFEED_PAIRS, 1000, 4269),
    ("python-kraken-sdk/orderbook-v1.json", ["XBT/USD"], 10, 979),
])
def test_real_v1_checksums_verify_through_simulator_and_recorder(tmp_path, capture, pairs,
                                                                 depth, expected):
    data = tmp_path / "data"
    with SimulatorProcess(["--replay", str(DATA / capture), "--speed", "max"]) as sim:
        subs = (f'[[subscribe]]\nchannel = "book"\nsymbols = {json.dumps(pairs)}\n'
                f"depth = {depth}\n")
        cfg = write_config(tmp_path, "v1.toml", "v1", sim.urls["ws_v1"], subs)
        proc = run_recorder(cfg, data, 5)
        assert proc.returncode == 0, proc.stderr
    con = db(data)
    verified, failed, unchecked = con.execute(
        "SELECT count(DISTINCT update_id) FILTER (WHERE verified), "
        "count(*) FILTER (WHERE verified = false), "
        "count(DISTINCT update_id) FILTER (WHERE verified IS NULL) FROM book").fetchone()
    assert verified == expected
    assert failed == 0
    assert unchecked == len(pairs), "only the snapshots have no checksum in v1"
    mismatches = con.execute("SELECT count(*) FROM events WHERE kind = 'checksum_mismatch'"
                             ).fetchone()[0]
    assert mismatches == 0


def _resynced_from(con, symbol: str, bad_update: int) -> int:
    """The book of ``symbol`` is marked unverified from ``bad_update`` until a fresh
    snapshot, and verified again after it; returns that snapshot's update_id."""
    snap = con.execute("SELECT min(update_id) FROM book WHERE symbol = ? AND is_snapshot "
                       "AND update_id > ?", [symbol, bad_update]).fetchone()[0]
    assert snap is not None
    assert con.execute("SELECT bool_and(verified = false) FROM book WHERE symbol = ? "
                       "AND update_id >= ? AND update_id < ?", [symbol, bad_update, snap]
                       ).fetchone()[0]
    after = con.execute("SELECT count(DISTINCT update_id), bool_and(verified) FROM book "
                        "WHERE symbol = ? AND update_id > ?", [symbol, snap]).fetchone()
    assert after[0] > 0 and after[1]
    return snap


def _first_bad_update(con, symbol: str, price_dp: int, qty_dp: int) -> int | None:
    """The first update after which a book rebuilt from the recorded rows fails the
    checksum, using only zlib and the documented rule."""
    rows = con.execute("SELECT update_id, is_snapshot, side, price, qty, checksum FROM book "
                       "WHERE symbol = ? ORDER BY update_id, side, price", [symbol]).fetchall()
    book: dict[str, dict] = {"ask": {}, "bid": {}}
    i = 0
    while i < len(rows):
        uid, snap, crc = rows[i][0], rows[i][1], rows[i][5]
        if snap:
            book = {"ask": {}, "bid": {}}
        while i < len(rows) and rows[i][0] == uid:
            _, _, side, price, qty, _ = rows[i]
            if qty == 0:
                book[side].pop(price, None)
            else:
                book[side][price] = qty
            i += 1
        for side, best_first in (("ask", False), ("bid", True)):
            for p in sorted(book[side], reverse=best_first)[10:]:
                del book[side][p]  # depth 10
        if crc is None:
            continue
        text = ""
        for side, best_first in (("ask", False), ("bid", True)):
            for p in sorted(book[side], reverse=best_first)[:10]:
                for v, dp in ((p, price_dp), (book[side][p], qty_dp)):
                    text += f"{v:.{dp}f}".replace(".", "").lstrip("0")
        if zlib.crc32(text.encode()) != crc:
            return uid
    return None


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_corrupted_level_resyncs_only_that_symbol(tmp_path, api):
    data = tmp_path / "data"
    with SimulatorProcess(["--seed", "11", "--rate", "400"]) as sim:
        subs = ('[[subscribe]]\nchannel = "book"\nsymbols = ["BTC/USD", "ETH/USD"]\n'
                'depth = 10\n\n[[subscribe]]\nchannel = "trade"\n'
                'symbols = ["BTC/USD", "ETH/USD"]\n')
        cfg = write_config(tmp_path, "c.toml", api, sim.urls[f"ws_{api}"], subs)
        proc = start_recorder(cfg, data)
        try:
            # Both books verified for a while (journaled about a second after arriving).
            wait_until(lambda: count_rows(data, "book WHERE verified AND symbol = 'BTC/USD' "
                                          "AND NOT is_snapshot") >= 20, 30, "verified books")
            armed_us = time.time_ns() // 1000
            sim.control.corrupt_book("BTC/USD")
            wait_until(lambda: count_rows(data, "events WHERE kind = 'resynced'") >= 1, 30,
                       "the resync")
            time.sleep(1.0)  # updates after the fresh snapshot, for the assertions below
        finally:
            stop(proc)
        assert proc.returncode == 0, proc.stderr.read()
    con = db(data)
    events = con.execute("SELECT kind, symbol, detail FROM events WHERE kind IN "
                         "('checksum_mismatch', 'resynced') ORDER BY ts_recv").fetchall()
    assert [(k, s) for k, s, _ in events] == [("checksum_mismatch", "BTC/USD"),
                                              ("resynced", "BTC/USD")]
    bad_update = json.loads(events[0][2])["update_id"]
    # Detected on the first affected update: rebuild BTC/USD here from the recorded rows,
    # independently of the recorder's keeper, and find the first update whose book does not
    # match Kraken's checksum. (BTC/USD prices are sent with 1 decimal on v2 and, as real v1
    # feeds do, 5 on v1; quantities with 8.)
    assert _first_bad_update(con, "BTC/USD", 5 if api == "v1" else 1, 8) == bad_update
    assert bad_update > con.execute("SELECT max(update_id) FROM book WHERE epoch_us(ts_recv) "
                                    "< ?", [armed_us]).fetchone()[0]
    assert con.execute("SELECT count(*) FROM book WHERE symbol = 'BTC/USD' AND update_id < ? "
                       "AND verified = false", [bad_update]).fetchone()[0] == 0
    # BTC/USD: marked rows until a fresh snapshot, verified again after it.
    _resynced_from(con, "BTC/USD", bad_update)
    # ETH/USD was never touched: one snapshot, every update verified, no gap in its stream.
    eth = con.execute("SELECT count(DISTINCT update_id) FILTER (WHERE is_snapshot), "
                      "bool_and(verified) FROM book WHERE symbol = 'ETH/USD'").fetchone()
    assert eth == (1, True)
    gaps = con.execute(
        "SELECT max(d) FROM (SELECT epoch_us(ts_recv) - lag(epoch_us(ts_recv)) OVER "
        "(ORDER BY update_id) AS d FROM (SELECT DISTINCT update_id, ts_recv FROM book "
        "WHERE symbol = 'ETH/USD'))").fetchone()[0]
    assert gaps < 1_000_000, "ETH/USD kept flowing during the BTC/USD resync"
    trades = con.execute("SELECT count(*) FROM trades WHERE symbol = 'ETH/USD' AND "
                         "epoch_us(ts_recv) > ?", [armed_us]).fetchone()[0]
    assert trades > 0


def _book_events(con, symbol: str) -> list[tuple[str, dict]]:
    rows = con.execute("SELECT kind, detail FROM events WHERE symbol = ? AND kind IN "
                       "('checksum_mismatch', 'resync_refused', 'resync_retry', "
                       "'resync_failed', 'resynced') ORDER BY ts_recv, kind", [symbol]
                       ).fetchall()
    return [(k, json.loads(d)) for k, d in rows]


def _record_with_fault(tmp_path, api: str, connection: str, rejects: int, seconds: float):
    data = tmp_path / "data"
    with SimulatorProcess(["--seed", "12", "--rate", "400"]) as sim:
        subs = ('[[subscribe]]\nchannel = "book"\nsymbols = ["BTC/USD", "ETH/USD"]\n'
                'depth = 10\n\n[[subscribe]]\nchannel = "trade"\n'
                'symbols = ["BTC/USD", "ETH/USD"]\n')
        cfg = write_config(tmp_path, "c.toml", api, sim.urls[f"ws_{api}"], subs,
                           extra=f"[connection]\n{connection}")
        proc = start_recorder(cfg, data)
        try:
            wait_until(lambda: count_rows(data, "book WHERE verified AND symbol = 'BTC/USD' "
                                          "AND NOT is_snapshot") >= 20, 30, "verified books")
            armed_us = time.time_ns() // 1000
            # The resubscribe of the resync is refused ("Exceeded msg rate") `rejects` times.
            sim.control.reject_subscribes(rejects)
            sim.control.corrupt_book("BTC/USD")
            time.sleep(seconds)
        finally:
            stop(proc)
        assert proc.returncode == 0, proc.stderr.read()
    return db(data), armed_us


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_refused_resync_is_retried_with_backoff_until_the_snapshot_arrives(tmp_path, api):
    con, armed_us = _record_with_fault(tmp_path, api, "backoff_initial = 0.2\n"
                                       "backoff_max = 0.5\n", rejects=2, seconds=3.5)
    events = _book_events(con, "BTC/USD")
    assert [k for k, _ in events] == ["checksum_mismatch", "resync_refused", "resync_retry",
                                      "resync_refused", "resync_retry", "resynced"]
    assert [d["attempt"] for k, d in events if k == "resync_retry"] == [2, 3]
    assert all(d["after"] == "refused" for k, d in events if k == "resync_retry")
    assert all("Exceeded msg rate" in d["error"] and 0.2 <= d["retry_in_s"] + 0.05
               and d["retry_in_s"] <= 0.5 for k, d in events if k == "resync_refused")
    assert events[-1][1]["attempts"] == 3
    # No reconnect: the other symbol never noticed.
    assert con.execute("SELECT count(*) FROM events WHERE kind = 'connected'").fetchone()[0] == 1
    _resynced_from(con, "BTC/USD", events[0][1]["update_id"])
    eth = con.execute("SELECT count(DISTINCT update_id) FILTER (WHERE is_snapshot), "
                      "bool_and(verified), count(*) FILTER (WHERE epoch_us(ts_recv) > ?) "
                      "FROM book WHERE symbol = 'ETH/USD'", [armed_us]).fetchone()
    assert eth[:2] == (1, True) and eth[2] > 0


def test_resync_that_never_completes_ends_in_a_reconnect(tmp_path):
    con, _ = _record_with_fault(tmp_path, "v2", "backoff_initial = 0.2\nbackoff_max = 0.5\n"
                                "resync_attempts = 2\n", rejects=2, seconds=4)
    events = _book_events(con, "BTC/USD")
    assert [k for k, _ in events] == ["checksum_mismatch", "resync_refused", "resync_retry",
                                      "resync_refused", "resync_failed"]
    assert events[-1][1] == {"attempts": 2, "last": "refused"}
    reasons = [json.loads(d)["reason"] for (d,) in con.execute(
        "SELECT detail FROM events WHERE kind = 'disconnected'").fetchall()]
    assert reasons == ["resync of BTC/USD failed after 2 attempts"]
    assert con.execute("SELECT count(*) FROM events WHERE kind = 'connected'").fetchone()[0] == 2
    # The new connection brought fresh snapshots of both books, and they verify.
    failed_at = con.execute("SELECT max(ts_recv) FROM events WHERE kind = 'resync_failed'"
                            ).fetchone()[0]
    for sym in ("BTC/USD", "ETH/USD"):
        snaps, ok = con.execute(
            "SELECT count(DISTINCT update_id) FILTER (WHERE is_snapshot), "
            "bool_and(verified) FILTER (WHERE NOT is_snapshot) FROM book "
            "WHERE symbol = ? AND ts_recv > ?", [sym, failed_at]).fetchone()
        assert snaps == 1 and ok, sym
