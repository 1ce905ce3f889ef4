"""Private parsers (v1 ownTrades/openOrders, v2 executions) against real Kraken messages.

The frames are the real ones quoted in ../shared/reference/kraken-protocol.md (A.10, B.2,
B.7). Every row must convert exactly through the sink's Arrow conversion.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from recorder.core.schema import TABLES
from recorder.exchanges.kraken import private_v1, private_v2
from recorder.exchanges.kraken.common import new_rows
from recorder.exchanges.kraken.private import PrivateState, fill_key, recorded_fill_keys
from sinks.convert import rows_to_batch

V1_OWN_TRADES_1 = '[[{"T5VKWY-X54ZN-5M7TUQ":{"cost":"45.000000","fee":"0.072000","margin":"0.000000","ordertxid":"OEEGFU-I4ZZT-TUTBCS","ordertype":"limit","pair":"ATOM/USD","postxid":"TKH2SE-M7IF5-CFI7LT","price":"9.000000","time":"1699987398.892228","type":"buy","vol":"5.00000000"}}],"ownTrades",{"sequence":1}]'  # noqa: E501
V1_OWN_TRADES_2 = '[[{"TROWH4-DD6XR-2O7DPH":{"cost":"19.67680","fee":"0.03148","margin":"0.00000","ordertxid":"OX6J4U-3FWTH-NPST2W","ordertype":"limit","pair":"ETH/USD","postxid":"TKH2SE-M7IF5-CFI7LT","price":"1967.68000","time":"1700220761.062896","type":"buy","vol":"0.01000000"}}],"ownTrades",{"sequence":2}]'  # noqa: E501
V1_OPEN_ORDERS = [
    '[[],"openOrders",{"sequence":1}]',
    '[[{"O7AIWV-HEBBH-COCEUU":{"avg_price":"0.00000","cost":"0.00000","descr":{"close":null,"leverage":null,"order":"buy 1.00000000 SOL/USD @ limit 25.00000","ordertype":"limit","pair":"SOL/USD","price":"25.00000","price2":"0.00000","type":"buy"},"expiretm":null,"fee":"0.00000","limitprice":"0.00000","misc":"","oflags":"fciq","opentm":"1700220661.985020","refid":null,"starttm":null,"status":"pending","stopprice":"0.00000","timeinforce":"GTC","userref":0,"vol":"1.00000000","vol_exec":"0.00000000"}}],"openOrders",{"sequence":2}]',  # noqa: E501
    '[[{"O7AIWV-HEBBH-COCEUU":{"status":"open","userref":0}}],"openOrders",{"sequence":3}]',
    '[[{"O7AIWV-HEBBH-COCEUU":{"lastupdated":"1700220675.012776","status":"canceled","vol_exec":"0.00000000","cost":"0.00000","fee":"0.00000","avg_price":"0.00000","userref":0,"cancel_reason":"User requested"}}],"openOrders",{"sequence":4}]',  # noqa: E501
]
V2_SNAPSHOT = '{"channel":"executions","type":"snapshot","data":[{"order_id":"NG6PUE-C7MXN-CFCAMC","order_userref":0,"exec_id":"B1Y0D9-6JIJG-W1IB7L","exec_type":"trade","trade_id":37496584,"symbol":"BTC/USD","side":"sell","last_qty":0.00016000,"last_price":63377.2,"liquidity_ind":"t","cost":10.12445,"order_status":"filled","order_type":"limit","sender_sub_id":"some-uuid","timestamp":"2024-04-16T10:54:38.243302Z","fee_usd_equiv":0.04050,"fees":[{"asset":"USD","qty":0.04051}]}],"sequence":1}'  # noqa: E501
V2_PENDING = '{"channel":"executions","type":"update","data":[{"order_id":"AHOJQ8-1E72C-8M2VQH","symbol":"ADX/USD","order_qty":81.36256082,"cum_cost":0.0000000,"time_in_force":"GTC","exec_type":"pending_new","side":"buy","order_type":"limit","order_userref":0,"limit_price_type":"static","limit_price":0.18328,"stop_price":0.00000,"order_status":"pending_new","fee_usd_equiv":0.0000000,"fee_ccy_pref":"fciq","timestamp":"2024-05-18T12:01:56.165888Z"}],"sequence":2}'  # noqa: E501
V2_NEW = '{"channel":"executions","type":"update","data":[{"timestamp":"2024-05-18T12:58:51.121515Z","order_status":"new","exec_type":"new","order_userref":0,"order_id":"AHOJQ8-1E72C-8M2VQH"}],"sequence":3}'  # noqa: E501
V2_CANCELED = '{"channel":"executions","type":"update","data":[{"timestamp":"2024-05-18T12:58:40.165132Z","order_status":"canceled","exec_type":"canceled","cum_qty":0.00000000,"cum_cost":0.000000,"fee_usd_equiv":0.000000,"avg_price":0.00000,"order_userref":0,"cancel_reason":"User requested","reason":"User requested","order_id":"KIUEL4-G3PWU-HOJTYU"}],"sequence":4}'  # noqa: E501
V2_INVALID_SESSION = '{"channel":"executions","error":"ESession:Invalid session","method":"subscribe","status":"error","success":false,"time_in":"2026-09-25T17:58:09.493462Z","time_out":"2026-09-25T17:58:09.493897Z"}'  # noqa: E501
V2_INVALID_SESSION_2023 = '{"error":"ESession:Invalid session","method":"subscribe","req_id":42,"status":"error","success":false,"time_in":"2023-04-19T12:04:41.320119Z","time_out":"2023-04-19T12:04:41.980119Z"}'  # noqa: E501


def _run(mod, frames, state=None):
    state = state or PrivateState()
    out = new_rows()
    controls = [mod.parse(mod.decode(f.encode()), 1_700_000_000_000_000 + i, i, out, state=state)
                for i, f in enumerate(frames)]
    return out, controls, state


def _dicts(table: str, rows: list[tuple]) -> list[dict]:
    names = [c.name for c in TABLES[table]]
    return [dict(zip(names, r, strict=True)) for r in rows]


def _arrow(table: str, rows: list[tuple]) -> list[dict]:
    batch, problems = rows_to_batch(table, rows)
    assert problems == []
    return batch.to_pylist()


def _events(out, kind):
    return [json.loads(e[5]) for e in out["events"] if e[2] == kind]


def test_v1_own_trades_value_for_value():
    out, controls, _ = _run(private_v1, [V1_OWN_TRADES_1, V1_OWN_TRADES_2])
    assert controls == [None, None]
    fills = _dicts("fills", out["fills"])
    assert {k: fills[0][k] for k in _V1_KNOWN} == {
        "exchange": "kraken", "symbol": "ATOM/USD", "ts_exchange": 1699987398892228,
        "ts_recv": 1_700_000_000_000_000, "order_id": "OEEGFU-I4ZZT-TUTBCS",
        "trade_id": "T5VKWY-X54ZN-5M7TUQ", "side": "buy", "price": "9.000000",
        "qty": "5.00000000", "cost": "45.000000", "fee": "0.072000", "fee_currency": "USD",
        "liquidity": None, "ord_type": "limit"}
    assert fills[1]["symbol"] == "ETH/USD" and fills[1]["price"] == "1967.68000"
    converted = _arrow("fills", out["fills"])
    assert converted[1]["price"] == Decimal("1967.68") and converted[1]["qty"] == Decimal(
        "0.01")
    assert converted[0]["ts_exchange"].isoformat() == "2023-11-14T18:43:18.892228+00:00"
    assert _events(out, "fills_snapshot") == [{"received": 1, "new": 1,
                                               "already_recorded": 0}]


_V1_KNOWN = {"exchange", "symbol", "ts_exchange", "ts_recv", "order_id", "trade_id", "side",
             "price", "qty", "cost", "fee", "fee_currency", "liquidity", "ord_type"}


def test_v1_xbt_pairs_are_canonical():
    frame = V1_OWN_TRADES_1.replace("ATOM/USD", "XBT/USD")
    out, _, _ = _run(private_v1, [frame])
    assert out["fills"][0][1] == "BTC/USD"


def test_v1_open_orders_lifecycle():
    out, controls, _ = _run(private_v1, V1_OPEN_ORDERS)
    assert controls == [None] * 4
    orders = _dicts("orders", out["orders"])
    assert [o["status"] for o in orders] == ["pending", "open", "canceled"]
    pending, opened, canceled = orders
    assert pending["symbol"] == "SOL/USD" and pending["side"] == "buy"
    assert pending["limit_price"] == "25.00000" and pending["order_qty"] == "1.00000000"
    assert pending["ts_exchange"] == 1700220661985020
    # Partial updates: the order's pair, side and type come from what was learnt before;
    # no time is invented for a bare status change.
    assert (opened["symbol"], opened["side"], opened["ord_type"]) == ("SOL/USD", "buy",
                                                                      "limit")
    assert opened["ts_exchange"] is None
    assert canceled["ts_exchange"] == 1700220675012776
    assert json.loads(canceled["detail"])["cancel_reason"] == "User requested"
    assert all(o["order_id"] == "O7AIWV-HEBBH-COCEUU" for o in orders)
    _arrow("orders", out["orders"])


def test_v2_executions_value_for_value():
    out, controls, _ = _run(private_v2, [V2_SNAPSHOT, V2_PENDING, V2_NEW, V2_CANCELED])
    assert controls == [None] * 4
    fill = _dicts("fills", out["fills"])[0]
    assert {k: fill[k] for k in _V1_KNOWN} == {
        "exchange": "kraken", "symbol": "BTC/USD", "ts_exchange": "2024-04-16T10:54:38.243302Z",
        "ts_recv": 1_700_000_000_000_000, "order_id": "NG6PUE-C7MXN-CFCAMC",
        "trade_id": "37496584", "side": "sell", "price": "63377.2", "qty": "0.00016000",
        "cost": "10.12445", "fee": "0.04051", "fee_currency": "USD", "liquidity": "taker",
        "ord_type": "limit"}
    converted = _arrow("fills", out["fills"])[0]
    assert converted["qty"] == Decimal("0.00016") and converted["cost"] == Decimal("10.12445")
    orders = _dicts("orders", out["orders"])
    assert [o["status"] for o in orders] == ["pending_new", "new", "canceled"]
    assert orders[0]["limit_price"] == "0.18328" and orders[0]["order_qty"] == "81.36256082"
    assert orders[1]["symbol"] == "ADX/USD" and orders[1]["side"] == "buy"  # learnt
    assert json.loads(orders[1]["detail"])["exec_type"] == "new"
    assert orders[2]["filled_qty"] == "0.00000000" and orders[2]["symbol"] is None
    assert json.loads(orders[2]["detail"])["reason"] == "User requested"
    _arrow("orders", out["orders"])


def test_v2_fees_in_one_asset_add_up_exactly_other_assets_are_kept():
    two = V2_SNAPSHOT.replace('"fees":[{"asset":"USD","qty":0.04051}]',
                              '"fees":[{"asset":"USD","qty":0.04051},'
                              '{"asset":"USD","qty":0.00009}]')
    out, _, _ = _run(private_v2, [two])
    assert _dicts("fills", out["fills"])[0]["fee"] == "0.04060"
    mixed = V2_SNAPSHOT.replace('"fees":[{"asset":"USD","qty":0.04051}]',
                                '"fees":[{"asset":"USD","qty":0.04051},'
                                '{"asset":"KFEE","qty":12.00}]')
    out, _, _ = _run(private_v2, [mixed])
    assert _dicts("fills", out["fills"])[0]["fee"] == "0.04051"
    assert _events(out, "fill_fees")[0]["fees"][1] == {"asset": "KFEE", "qty": "12.00"}


@pytest.mark.parametrize("mod, first, again", [
    (private_v1, V1_OWN_TRADES_1, V1_OWN_TRADES_1),
    (private_v2, V2_SNAPSHOT, V2_SNAPSHOT),
])
def test_snapshot_on_resubscribe_is_deduplicated(mod, first, again):
    out, _, state = _run(mod, [first])
    assert len(out["fills"]) == 1
    state.new_connection()  # what connect_requests does before every connection
    out2, controls, _ = _run(mod, [again], state)
    assert out2["fills"] == [] and controls == [None]
    assert _events(out2, "fills_snapshot") == [{"received": 1, "new": 0,
                                                "already_recorded": 1}]
    assert _events(out2, "sequence_gap") == []


def test_dedup_seeded_from_what_is_recorded():
    out, _, _ = _run(private_v2, [V2_SNAPSHOT])
    state = PrivateState()
    state.seed([fill_key("BTC/USD", "37496584", "NG6PUE-C7MXN-CFCAMC")])
    out, _, _ = _run(private_v2, [V2_SNAPSHOT], state)
    assert out["fills"] == []


def test_seed_reads_parquet_and_keeps_the_most_recent(tmp_path):
    import pyarrow.parquet as pq

    out, _, _ = _run(private_v1, [V1_OWN_TRADES_1, V1_OWN_TRADES_2])
    batch, _ = rows_to_batch("fills", out["fills"])
    part = tmp_path / "fills" / "exchange=kraken" / "date=2023-11-14"
    part.mkdir(parents=True)
    pq.write_table(__import__("pyarrow").Table.from_batches([batch]), part / "a.parquet")
    keys = recorded_fill_keys(tmp_path)
    assert keys == [("ATOM/USD", "T5VKWY-X54ZN-5M7TUQ", "OEEGFU-I4ZZT-TUTBCS"),
                    ("ETH/USD", "TROWH4-DD6XR-2O7DPH", "OX6J4U-3FWTH-NPST2W")]
    assert recorded_fill_keys(tmp_path, limit=1) == keys[1:]
    assert recorded_fill_keys(tmp_path / "nothing-here") == []


def test_dedup_memory_is_bounded():
    state = PrivateState(remember=3)
    for i in range(10):
        assert state.is_new_fill(("BTC/USD", str(i), "O"))
    assert len(state._fills) == 3
    assert not state.is_new_fill(("BTC/USD", "9", "O"))


def test_sequence_gap_is_an_event_and_asks_for_a_resubscribe():
    gap = V1_OWN_TRADES_2.replace('"sequence":2', '"sequence":5')
    out, controls, _ = _run(private_v1, [V1_OWN_TRADES_1, gap])
    assert _events(out, "sequence_gap") == [{"expected": 2, "got": 5, "missed": 3}]
    assert controls[1].kind == "resubscribe"
    assert len(out["fills"]) == 2  # the frame after the gap is still recorded
    v2_gap = V2_NEW.replace('"sequence":3', '"sequence":9')
    out, controls, _ = _run(private_v2, [V2_SNAPSHOT, V2_PENDING, v2_gap])
    assert _events(out, "sequence_gap") == [{"expected": 3, "got": 9, "missed": 6}]
    assert [e[4] for e in out["events"] if e[2] == "sequence_gap"] == ["executions"]


def test_sequences_are_per_channel_in_v1():
    out, controls, _ = _run(private_v1, [V1_OWN_TRADES_1, V1_OPEN_ORDERS[0], V1_OWN_TRADES_2,
                                         V1_OPEN_ORDERS[1]])
    assert _events(out, "sequence_gap") == [] and controls == [None] * 4


def test_first_message_after_connect_must_be_sequence_1():
    out, _, _ = _run(private_v2, [V2_PENDING])
    assert _events(out, "sequence_gap") == [{"expected": 1, "got": 2, "missed": 1}]


@pytest.mark.parametrize("mod, frame", [
    (private_v2, V2_INVALID_SESSION),
    (private_v2, V2_INVALID_SESSION_2023),
    (private_v1, '{"errorMessage":"ESession:Invalid session","event":"error"}'),
    (private_v1, '{"errorMessage":"ESession:Invalid session","event":"subscriptionStatus",'
                 '"status":"error","subscription":{"name":"ownTrades"}}'),
])
def test_invalid_session_asks_for_a_reconnect_and_forgets_the_token(mod, frame):
    calls = []
    state = PrivateState(on_invalid_session=lambda: calls.append(1))
    _, controls, _ = _run(mod, [frame], state)
    assert controls[0].kind == "subscribe_error"
    assert "Invalid session" in controls[0].value and calls == [1]


def test_connection_frames_still_parsed():
    out, controls, _ = _run(private_v2, [
        '{"channel":"status","type":"update","data":[{"version":"2.0.10","system":"online",'
        '"api_version":"v2","connection_id":4421894013101914413}]}',
        '{"channel":"heartbeat"}',
        '{"method":"subscribe","req_id":0,"result":{"channel":"executions","maxratecount":180,'
        '"snapshot":true},"success":true,"time_in":"x","time_out":"y"}'])
    assert [c.kind for c in controls] == ["status", "heartbeat", "subscribed"]
    assert controls[2].channel == "fills"
    out, controls, _ = _run(private_v1, [
        '{"connectionID":1,"event":"systemStatus","status":"online","version":"1.9.1"}',
        '{"event":"heartbeat"}'])
    assert [c.kind for c in controls] == ["status", "heartbeat"]


def test_subscribe_requests_carry_the_token_and_snapshots():
    v1_reqs = [json.loads(r) for r in private_v1.subscribe_requests("TOK", 10)]
    assert [r["subscription"]["name"] for r in v1_reqs] == ["ownTrades", "openOrders"]
    assert all(r["subscription"]["token"] == "TOK" for r in v1_reqs)
    assert v1_reqs[0]["subscription"]["snapshot"] is True
    (v2_req,) = [json.loads(r) for r in private_v2.subscribe_requests("TOK", 10)]
    assert v2_req["params"] == {"channel": "executions", "token": "TOK", "snap_trades": True,
                                "snap_orders": True}
