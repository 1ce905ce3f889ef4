"""Resyncs that do not complete are retried (timeout or refusal) and, in the end, reconnect."""

from __future__ import annotations

import json
import random

from recorder.capture.collector import Collector
from recorder.capture.resync import ResyncTracker
from recorder.core.config import load_config
from recorder.exchanges.base import IntegrityFailure
from recorder.exchanges.kraken.feed import public_feed


def _tracker(**kw) -> ResyncTracker:
    args = dict(timeout=10.0, attempts=3, backoff_initial=0.5, backoff_max=4.0,
                rng=random.Random(1))
    args.update(kw)
    return ResyncTracker(**args)


def test_a_resync_without_snapshot_is_sent_again_after_the_timeout():
    t = _tracker()
    entry = t.begin("BTC/USD", 10, now=100.0)
    assert t.due(100.0) == [entry] and entry.why == "mismatch"
    t.sent(entry, reqid=7, now=100.0)
    assert t.due(109.9) == []
    assert t.due(110.0) == [entry] and entry.why == "timeout" and entry.reqid is None
    assert not t.exhausted(entry)


def test_a_refusal_retries_after_a_jittered_capped_backoff():
    t = _tracker()
    entry = t.begin("BTC/USD", 10, now=0.0)
    t.sent(entry, reqid=7, now=0.0)
    assert t.refused(99, now=1.0) is None, "a reply to another request changes nothing"
    assert t.refused(None, now=1.0) is None
    assert t.refused(7, now=1.0) is entry and entry.why == "refused"
    assert entry.due == 1.5, "the first retry waits the initial delay"
    assert t.due(1.4) == []
    assert t.due(entry.due) == [entry] and entry.why == "refused"
    t.sent(entry, reqid=9, now=entry.due)
    assert t.refused(7, now=3.0) is None, "the refusal of an earlier attempt is stale"
    delays = []
    for reqid in range(10, 20):
        now = entry.due
        t.sent(entry, reqid, now)
        t.refused(reqid, now)
        delays.append(entry.due - now)
    assert all(0.5 <= d <= 4.0 for d in delays) and max(delays) > 2.0


def test_attempts_are_bounded_and_a_snapshot_ends_the_resync():
    t = _tracker(attempts=2)
    entry = t.begin("BTC/USD", 10, now=0.0)
    for n, now in enumerate((0.0, 10.0), 1):
        assert t.due(now) == [entry] and not t.exhausted(entry)
        t.sent(entry, reqid=n, now=now)
    assert t.due(20.0) == [entry] and t.exhausted(entry)
    assert t.begin("BTC/USD", 10, now=20.0) is entry, "a second mismatch joins the first"
    assert t.done("BTC/USD") is entry and t.pending == {}
    assert t.done("BTC/USD") is None
    t.begin("ETH/USD", 10, now=0.0)
    t.clear()
    assert t.pending == {}


class _FakeWS:
    def __init__(self) -> None:
        self.sent: list[dict] = []

    def send(self, text: str) -> None:
        self.sent.append(json.loads(text))


def test_collector_resends_a_silent_resync_then_reconnects(tmp_path):
    """The path the simulator cannot force: Kraken never answers the resubscribe."""
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text('[exchange]\nname = "kraken"\napi = "v2"\n'
                        '[connection]\nresync_timeout = 2\nresync_attempts = 2\n'
                        '[[subscribe]]\nchannel = "book"\nsymbols = ["BTC/USD"]\ndepth = 25\n')
    cfg = load_config(cfg_path)
    collector = Collector(cfg, sink=None, feed=public_feed(cfg))
    ws = _FakeWS()
    collector._resync(ws, [IntegrityFailure("BTC/USD", "checksum_mismatch",
                                          {"expected": 1, "computed": 2}, 5)], ts_recv=1)
    assert [(m["method"], m["params"]["symbol"], m["params"]["depth"]) for m in ws.sent] == [
        ("unsubscribe", ["BTC/USD"], 25), ("subscribe", ["BTC/USD"], 25)]
    assert ws.sent[1]["req_id"] == ws.sent[0]["req_id"] + 1
    started = collector.pending_resyncs.pending["BTC/USD"].due - 2
    assert collector._drive_resyncs(ws, started + 1.9) is None and len(ws.sent) == 2
    assert collector._drive_resyncs(ws, started + 2.0) is None and len(ws.sent) == 4
    assert ws.sent[2]["req_id"] > ws.sent[1]["req_id"]
    reason = collector._drive_resyncs(ws, started + 4.0)
    assert reason == "resync of BTC/USD failed after 2 attempts"
    events = [(e[2], e[3], json.loads(e[5])) for e in collector.rows["events"]]
    assert [(k, s) for k, s, _ in events] == [("checksum_mismatch", "BTC/USD"),
                                              ("resync_retry", "BTC/USD"),
                                              ("resync_failed", "BTC/USD")]
    assert events[1][2] == {"attempt": 2, "after": "timeout"}
    assert events[2][2] == {"attempts": 2, "last": "timeout"}


class _FakeReader:
    """A connection with nothing left to read (the switch drains the old one first)."""

    close_frame = None

    def settimeout(self, seconds: float) -> None:
        pass

    def read(self) -> list[bytes]:
        raise TimeoutError

    def close(self, timeout: float = 0.0) -> None:
        pass


def test_a_replacement_that_found_a_book_wrong_resyncs_it_once_recorded(tmp_path):
    """A connection opened to replace an old one finds a checksum mismatch before the switch:
    the event is recorded with its rows and the book is resynced when it takes over."""
    import time

    from recorder.capture.book import BookKeeper
    from recorder.capture.collector import _Conn
    from recorder.core.events import new_rows
    from recorder.exchanges.base import ConnectPlan
    from recorder.exchanges.kraken.book_rule import RULE

    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text('[exchange]\nname = "kraken"\napi = "v2"\n'
                        '[[subscribe]]\nchannel = "book"\nsymbols = ["BTC/USD"]\ndepth = 25\n')
    cfg = load_config(cfg_path)

    class _Sink:
        def write(self, table, rows):
            pass

        def tick(self):
            pass

    collector = Collector(cfg, sink=_Sink(), feed=public_feed(cfg))

    def conn(conn_id, ws):
        return _Conn(conn_id, ConnectPlan("ws://x", []), ws, _FakeReader(), None,
                     BookKeeper(RULE), new_rows(), time.monotonic())

    old, new = conn(1, _FakeWS()), conn(2, _FakeWS())
    collector._adopt(old)
    collector._rotation = new
    failure = IntegrityFailure("BTC/USD", "checksum_mismatch", {"expected": 1, "computed": 2}, 7)
    collector._failed_while_opening(new, [failure], ts_recv=1)
    assert new.ws.sent == [] and old.ws.sent == []  # nothing sent before the switch
    assert [e[2:4] for e in new.rows["events"]] == [("checksum_mismatch", "BTC/USD")]
    collector._switch(new)
    assert [(m["method"], m["params"]["symbol"]) for m in new.ws.sent] == [
        ("unsubscribe", ["BTC/USD"]), ("subscribe", ["BTC/USD"])]
    kinds = [e[2] for e in collector.rows["events"]]
    assert "checksum_mismatch" in kinds and "connection_rotated" in kinds


class _BufferedReader(_FakeReader):
    """A connection whose socket still holds frames the loop has not read."""

    def __init__(self, frames: list[bytes]) -> None:
        self.frames = frames

    def read(self) -> list[bytes]:
        if not self.frames:
            raise TimeoutError
        out, self.frames = self.frames, []
        return out


def test_the_switch_records_what_the_old_connection_still_held(tmp_path):
    """A trade the old connection received just before the replacement subscribed (so the
    replacement never gets it) may still sit unread in the old socket when the replacement's
    last acknowledgement is read: the switch parses it before closing the old connection,
    and the replacement's copies of what both delivered are dropped."""
    import time

    from recorder.capture.book import BookKeeper
    from recorder.capture.collector import _Conn
    from recorder.core.events import new_rows
    from recorder.exchanges.base import ConnectPlan
    from recorder.exchanges.kraken.book_rule import RULE

    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text('[exchange]\nname = "kraken"\napi = "v2"\n'
                        '[[subscribe]]\nchannel = "trade"\nsymbols = ["BTC/USD"]\n')
    cfg = load_config(cfg_path)
    written: list[tuple] = []

    class _Sink:
        def write(self, table, rows):
            if table == "trades":
                written.extend(rows)

        def tick(self):
            pass

    feed = public_feed(cfg)
    collector = Collector(cfg, sink=_Sink(), feed=feed)

    def trade(tid: int) -> bytes:
        return json.dumps({"channel": "trade", "type": "update", "data": [{
            "symbol": "BTC/USD", "side": "buy", "price": 100.5, "qty": 0.25,
            "ord_type": "limit", "trade_id": tid,
            "timestamp": "2026-12-07T06:00:00.000000Z"}]}).encode()

    # The recorded connection parses into the collector's own row buffer.
    old = _Conn(1, ConnectPlan("ws://x", []), _FakeWS(), _BufferedReader([trade(41)]),
                feed.parse, BookKeeper(RULE), collector.rows, time.monotonic())
    new = _Conn(2, ConnectPlan("ws://x", []), _FakeWS(), _FakeReader(), feed.parse,
                BookKeeper(RULE), new_rows(), time.monotonic())
    collector._adopt(old)
    collector._rotation = new
    collector._frames(new, [trade(42)], ts_recv=5)  # the replacement starts after 41
    collector._switch(new)
    collector._flush()
    assert [r[7] for r in written] == ["41", "42"]
