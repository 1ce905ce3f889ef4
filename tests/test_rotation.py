"""Connection rotation on Kraken: with ``[connection] max_connection_age`` a connection is
replaced make-before-break (the new one subscribes first, the old one closes once every
subscription is acknowledged): no trade is lost, none is recorded twice, books stay verified.
(KuCoin's, against its 24 h cut, is in tests/test_kucoin_e2e.py.)"""

from __future__ import annotations

import json
import urllib.request

from recorder.simulator.testing import SimulatorProcess
from tests.e2e import db, run_recorder, write_config

PAIRS = ("BTC/USD", "ETH/USD")


def _sim_trades(rest: str, pair: str) -> list[tuple[str, str, str]]:
    """The simulator's own trades of ``pair`` (its last 1000): (id, price, qty)."""
    with urllib.request.urlopen(f"{rest}/0/public/Trades?pair={pair}&count=1000",
                                timeout=10) as r:
        result = json.loads(r.read())["result"]
    rows = next(v for k, v in result.items() if k != "last")
    return [(str(t[6]), t[0], t[1]) for t in rows]


def test_rotation_loses_and_duplicates_nothing(tmp_path):
    data = tmp_path / "data"
    with SimulatorProcess(["--seed", "5", "--rate", "300"]) as sim:
        subs = "".join(f'[[subscribe]]\nchannel = "{ch}"\nsymbols = {json.dumps(PAIRS)}\n{x}'
                       for ch, x in (("trade", ""), ("book", "depth = 10\n")))
        cfg = write_config(tmp_path, "rot.toml", "v2", sim.urls["ws_v2"], subs,
                           extra='[connection]\nmax_connection_age = "2s"\n')
        proc = run_recorder(cfg, data, 8)
        assert proc.returncode == 0, proc.stderr
        truth = {p: _sim_trades(sim.urls["rest"], p) for p in PAIRS}
    con = db(data)
    kinds = [k for (k,) in con.execute("SELECT kind FROM events ORDER BY ts_recv").fetchall()]
    assert kinds.count("connection_rotated") >= 2, kinds
    assert "disconnected" not in kinds and "rotation_failed" not in kinds
    details = [json.loads(d) for (d,) in con.execute(
        "SELECT detail FROM events WHERE kind = 'connection_rotated'").fetchall()]
    assert all(d["new_conn_id"] == d["old_conn_id"] + 1 for d in details)
    for pair in PAIRS:
        got = con.execute("SELECT trade_id, price::VARCHAR, qty::VARCHAR FROM trades "
                          "WHERE symbol = ? ORDER BY trade_id::BIGINT", [pair]).fetchall()
        ids = [int(i) for i, _, _ in got]
        assert len(ids) == len(set(ids)), f"{pair}: a trade recorded twice"
        # Every trade the simulator made between the first and the last recorded one.
        made = [t for t in truth[pair] if ids[0] <= int(t[0]) <= ids[-1]]
        assert [int(t[0]) for t in made] == ids, f"{pair}: a trade lost"
    # Each new connection starts its books from a snapshot; every update verified.
    unverified = con.execute("SELECT count(*) FROM book WHERE verified = false").fetchone()[0]
    assert unverified == 0
    snapshots = con.execute("SELECT count(DISTINCT update_id) FROM book WHERE is_snapshot "
                            "AND symbol = 'BTC/USD'").fetchone()[0]
    assert snapshots >= len(details) + 1
