"""Kraken WebSocket API v2, private: executions -> fills (exec_type trade) and orders.

Raw message shapes (numbers are bare JSON numbers, decoded to their exact text; the top-level
``sequence`` starts at 1, the snapshot, on each subscription):

    {"channel":"executions","type":"snapshot","data":[{"order_id":"NG6PUE-C7MXN-CFCAMC",
     "order_userref":0,"exec_id":"B1Y0D9-6JIJG-W1IB7L","exec_type":"trade",
     "trade_id":37496584,"symbol":"BTC/USD","side":"sell","last_qty":0.00016000,
     "last_price":63377.2,"liquidity_ind":"t","cost":10.12445,"order_status":"filled",
     "order_type":"limit","timestamp":"2024-04-16T10:54:38.243302Z","fee_usd_equiv":0.04050,
     "fees":[{"asset":"USD","qty":0.04051}]}],"sequence":1}
    {"channel":"executions","type":"update","data":[{"timestamp":"2024-05-18T12:58:51.121515Z",
     "order_status":"new","exec_type":"new","order_userref":0,
     "order_id":"7J91XK-XMFEL-348VPM"}],"sequence":148}
    {"channel":"executions","error":"ESession:Invalid session","method":"subscribe",
     "status":"error","success":false,"time_in":"...","time_out":"..."}

``trade_id`` is Kraken's trade id, unique within the pair (it matches the public trade feed
and REST Trades); ``exec_id`` identifies the execution.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec

from recorder.exchanges.kraken import v2
from recorder.exchanges.kraken.common import EXCHANGE, Control, detail, event
from recorder.exchanges.kraken.private import (
    PrivateState,
    fill_key,
    fill_row,
    order_row,
    session_control,
)
from recorder.exchanges.reconcile import SNAPSHOT

API = "v2"
# float_hook=str keeps each number's exact text ("0.00016000").
decode = msgspec.json.Decoder(float_hook=str).decode
ping_request = v2.ping_request

_LIQUIDITY = {"m": "maker", "t": "taker"}
# Order columns taken from an execution; everything else goes to ``detail``.
_ORDER_FIELDS = frozenset({"order_id", "symbol", "timestamp", "order_status", "side",
                           "order_type", "limit_price", "order_qty", "cum_qty", "avg_price"})


def subscribe_requests(token: str, req_id: int) -> list[str]:
    """executions with the last 50 fills and all open orders in its snapshot."""
    return [msgspec.json.encode({"method": "subscribe", "params": {
        "channel": "executions", "token": token, "snap_trades": True, "snap_orders": True},
        "req_id": req_id}).decode()]


def _text(v: Any) -> str | None:
    return v if v is None or type(v) is str else str(v)


def parse(msg: Any, ts_recv: int, update_id: int, out: dict[str, list[tuple]],
          state: PrivateState, conn: int = 0) -> Control | None:
    """Append the rows of one decoded v2 private frame to ``out`` (``conn``: the number of
    the connection it came on)."""
    if state.notes:
        state.flush_notes(ts_recv, out)
    if type(msg) is dict and msg.get("channel") == "executions" and "data" in msg:
        snapshot = msg.get("type") == "snapshot"
        control = state.check_sequence("executions", msg.get("sequence"), ts_recv, out, conn)
        received = new = 0
        for e in msg["data"]:
            order_id = e.get("order_id")
            if order_id:
                state.learn_order(order_id, e.get("symbol"), e.get("side"),
                                  e.get("order_type"))
            if e.get("exec_type") == "trade":
                received += 1
                new += _fill(e, snapshot, ts_recv, out, state, conn)
            else:
                _order(e, snapshot, ts_recv, out, state)
        if snapshot or received != new:
            out["events"].append(event(EXCHANGE, ts_recv,
                                       "fills_snapshot" if snapshot else "duplicate_fill",
                                       channel="fills",
                                       detail=detail(received=received, new=new,
                                                     already_recorded=received - new)))
        if snapshot:
            state.subscribed()
        return control
    return session_control(v2.parse(msg, ts_recv, update_id, out), state)


def _fill(e: dict, snapshot: bool, ts_recv: int, out: dict[str, list[tuple]],
          state: PrivateState, conn: int = 0) -> int:
    order_id = e.get("order_id")
    symbol, side, ord_type = state.order_info(order_id) if order_id else (None, None, None)
    symbol = e.get("symbol") or symbol
    trade_id = _text(e.get("trade_id"))
    if not state.is_new_fill(fill_key(symbol, trade_id, order_id),
                             SNAPSHOT if snapshot else conn):
        return 0
    fee, fee_currency = _fee(e.get("fees"), ts_recv, symbol, out)
    out["fills"].append(fill_row(
        exchange=EXCHANGE, symbol=symbol, ts_exchange=e.get("timestamp"), ts_recv=ts_recv,
        order_id=order_id, trade_id=trade_id, exec_id=e.get("exec_id"),
        side=e.get("side") or side, price=_text(e.get("last_price")),
        qty=_text(e.get("last_qty")), cost=_text(e.get("cost")), fee=fee,
        fee_currency=fee_currency, liquidity=_LIQUIDITY.get(e.get("liquidity_ind")),
        ord_type=e.get("order_type") or ord_type, is_snapshot=snapshot))
    return 1


def _fee(fees: Any, ts_recv: int, symbol: str | None,
         out: dict[str, list[tuple]]) -> tuple[str | None, str | None]:
    """The fee and its asset. Kraken lists fees per asset; several entries in one asset are
    added up exactly, entries in different assets cannot share one column (an event keeps
    them all)."""
    if not fees:
        return None, None
    assets = {f.get("asset") for f in fees}
    if len(fees) == 1:
        return _text(fees[0].get("qty")), fees[0].get("asset")
    if len(assets) == 1:
        try:
            total = sum((Decimal(_text(f.get("qty")) or "0") for f in fees), Decimal(0))
            return format(total, "f"), fees[0].get("asset")
        except InvalidOperation:
            pass
    out["events"].append(event(EXCHANGE, ts_recv, "fill_fees", symbol=symbol, channel="fills",
                               detail=detail(fees=[{"asset": f.get("asset"),
                                                    "qty": _text(f.get("qty"))} for f in fees])))
    return _text(fees[0].get("qty")), fees[0].get("asset")


def _order(e: dict, snapshot: bool, ts_recv: int, out: dict[str, list[tuple]],
           state: PrivateState) -> None:
    order_id = e.get("order_id")
    symbol, side, ord_type = state.order_info(order_id) if order_id else (None, None, None)
    extra = {k: v for k, v in e.items() if k not in _ORDER_FIELDS}
    out["orders"].append(order_row(
        exchange=EXCHANGE, symbol=e.get("symbol") or symbol, ts_exchange=e.get("timestamp"),
        ts_recv=ts_recv, order_id=order_id, status=e.get("order_status"),
        side=e.get("side") or side, ord_type=e.get("order_type") or ord_type,
        limit_price=_text(e.get("limit_price")), order_qty=_text(e.get("order_qty")),
        filled_qty=_text(e.get("cum_qty")), avg_price=_text(e.get("avg_price")),
        exec_type=e.get("exec_type"), is_snapshot=snapshot,
        detail=detail(snapshot=snapshot or None, **extra)))
