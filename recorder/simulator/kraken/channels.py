"""Public subscriptions and the frames each market event produces for them.

A frame rendered for one subscriber is cached on the event, so any number of connections
subscribed to the same channel cost one rendering.
"""

from __future__ import annotations

from dataclasses import dataclass

from recorder.simulator.book import ASK, BID, ViewLevel, view_changes
from recorder.simulator.kraken.market import BookEvent, PairMarket, TradeEvent
from recorder.simulator.wire import encode

from . import render_v1, render_v2

PUBLIC_CHANNELS = ("book", "trade", "ticker", "spread", "ohlc")


@dataclass(frozen=True, slots=True)
class Sub:
    version: int
    channel: str
    symbol: str  # canonical (v2) name
    depth: int = 0
    interval: int = 0
    bbo: bool = False  # v2 ticker with event_trigger "bbo"

    @property
    def v1_name(self) -> str:
        if self.channel == "book":
            return f"book-{self.depth}"
        if self.channel == "ohlc":
            return f"ohlc-{self.interval}"
        return self.channel

    @property
    def slot(self) -> tuple[str, str]:
        """Kraken allows one subscription per channel and pair on a connection (one depth)."""
        return self.channel, self.symbol


class ChannelIds:
    """Stable v1 channelIDs per (channelName, pair), as Kraken reuses them across connections."""

    def __init__(self, start: int = 100) -> None:
        self._ids: dict[tuple[str, str], int] = {}
        self._next = start

    def preset(self, name: str, wsname: str, chan_id: int) -> None:
        self._ids[(name, wsname)] = chan_id
        self._next = max(self._next, chan_id + 1)

    def get(self, name: str, wsname: str) -> int:
        key = (name, wsname)
        cid = self._ids.get(key)
        if cid is None:
            while self._next in self._ids.values():
                self._next += 1
            cid = self._ids[key] = self._next
            self._next += 1
        return cid


def book_views(ev: BookEvent, depth: int) -> tuple[list[ViewLevel], list[ViewLevel]]:
    key = ("views", depth)
    cached = ev.cache.get(key)
    if cached is not None:
        return cached
    out: list[list[ViewLevel]] = [[], []]
    for side_idx in (ASK, BID):
        before = ev.before[side_idx]
        if before is None:
            continue
        changes = [(p, q, ts) for s, p, q, ts in ev.changes if s == side_idx]
        out[side_idx] = view_changes(ev.pm.sides[side_idx], before, changes, depth)
    views = (out[ASK], out[BID])
    ev.cache[key] = views
    return views


def corrupted(views: tuple[list[ViewLevel], list[ViewLevel]], ev: BookEvent):
    """One level inside the checksummed top 10 sent with a wrong quantity, or None.

    The checksum stays the one over the true book, as when a real feed garbles a level.
    """
    for side_idx in (ASK, BID):
        side = ev.pm.sides[side_idx]
        levels = views[side_idx]
        for i, lv in enumerate(levels):
            # A level that stays in the top 10 after this update: a garbled deletion or a
            # level at the edge could be cut off by the client's depth truncation and never
            # show in the checksum, and the fault would go unseen. Nor a level the same
            # message updates again later (its second value would heal the first).
            if any(later.price == lv.price for later in levels[i + 1:]):
                continue
            if lv.qty > 0 and side.in_top(lv.price, 10):
                bad = ViewLevel(lv.price, lv.qty + 1, lv.ts, lv.republish)
                levels = list(views[side_idx])
                levels[i] = bad
                return (levels, views[BID]) if side_idx == ASK else (views[ASK], levels)
    return None


def event_frame(sub: Sub, ev: BookEvent | TradeEvent, chan_id: int) -> bytes | None:
    """The encoded frame ``sub`` receives for ``ev``, or None."""
    key = (sub.version, sub.channel, sub.depth, sub.interval, sub.bbo)
    cache = ev.cache
    if key in cache:
        return cache[key]
    text = render_event(sub, ev, chan_id)
    frame = cache[key] = encode(text) if text is not None else None
    return frame


def render_event(
    sub: Sub, ev: BookEvent | TradeEvent, chan_id: int, corrupt: bool = False
) -> str | None:
    pm = ev.pm
    ch = sub.channel
    if isinstance(ev, TradeEvent):
        if ch == "trade":
            if sub.version == 1:
                return render_v1.trades(chan_id, pm, ev.trades)
            return render_v2.trades(pm, ev.trades)
        if ch == "ticker" and not sub.bbo:
            return render_v1.ticker(chan_id, pm) if sub.version == 1 else render_v2.ticker(
                pm, ev.time
            )
        if ch == "ohlc":
            if sub.version == 1:
                return render_v1.ohlc(chan_id, pm, sub.interval)
            return render_v2.ohlc(pm, sub.interval, ev.time)
        return None
    if ch == "book":
        views = book_views(ev, sub.depth)
        if corrupt:
            views = corrupted(views, ev)
            if views is None:
                return None
        if sub.version == 1:
            return render_v1.book_update(chan_id, pm, views, ev.checksum_v1, sub.depth)
        return render_v2.book_update(pm, views, ev.checksum, ev.time)
    if not ev.bbo_changed:
        return None
    if ch == "spread" and sub.version == 1:
        return render_v1.spread(chan_id, pm, ev.time)
    if ch == "ticker" and sub.bbo and sub.version == 2:
        return render_v2.ticker(pm, ev.time)
    return None


def snapshot_texts(sub: Sub, pm: PairMarket, chan_id: int, now: float, snapshot: bool) -> list[str]:
    """What Kraken sends right after the subscribe acknowledgement."""
    ch = sub.channel
    v1 = sub.version == 1
    if ch == "book":
        if v1:
            return [render_v1.book_snapshot(chan_id, pm, sub.depth)]
        return [render_v2.book_snapshot(pm, sub.depth, now)] if snapshot else []
    if ch == "trade":
        if not snapshot or not pm.trades:
            return []
        last = list(pm.trades)[-50:]
        if v1:
            return [render_v1.trades(chan_id, pm, last)]
        return [render_v2.trades(pm, last, "snapshot")]
    if ch == "ticker":
        if v1:
            return [render_v1.ticker(chan_id, pm)]
        return [render_v2.ticker(pm, now, "snapshot")] if snapshot else []
    if ch == "spread":
        return [render_v1.spread(chan_id, pm, now)]
    if ch == "ohlc":
        if v1:
            return [render_v1.ohlc(chan_id, pm, sub.interval)]
        return [render_v2.ohlc(pm, sub.interval, now, "snapshot")] if snapshot else []
    return []
