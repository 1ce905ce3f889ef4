"""The seam is real: an exchange defined only in tests/toy_exchange.py records end to end
through the real runtime (supervisor, collector, sink, query), with no edit to any of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal

import pytest

from recorder.analysis.query import connect
from tests.toy_exchange import SCRIPT, ToyServer

pytestmark = pytest.mark.e2e

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_toy_exchange_records_through_the_real_runtime(tmp_path):
    cfg = tmp_path / "toy.toml"
    cfg.write_text('[exchange]\nname = "toy"\n[connection]\nstale_after = 5\n'
                   '[[subscribe]]\nchannel = "trade"\nsymbols = ["AAA/ZZZ"]\n'
                   '[[subscribe]]\nchannel = "book"\nsymbols = ["AAA/ZZZ"]\n')
    data = tmp_path / "data"
    env = {**os.environ, "RECORDER_EXCHANGES": "toy=tests.toy_exchange"}
    with ToyServer() as server:
        proc = subprocess.run([sys.executable, "-m", "recorder", "run", str(cfg), "--data",
                               str(data), "--duration", "3", "--url", server.url],
                              capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
        assert proc.returncode == 0, proc.stderr
        assert server.connections == 1
        assert server.sent_before_hello == [], "subscribed before the exchange's greeting"
    con = connect(data)
    trades = con.execute("SELECT exchange, symbol, epoch_ms(ts_exchange), price, qty, side, "
                         "trade_id FROM trades ORDER BY ts_exchange").fetchall()
    sent = [f for f in SCRIPT if f["type"] == "trade"]
    assert trades == [("toy", f["symbol"], f["t"], Decimal(f["price"]), Decimal(f["amount"]),
                       f["side"], f["id"]) for f in sent]
    book = con.execute("SELECT side, price, qty, is_snapshot, verified FROM book "
                       "ORDER BY update_id, side DESC, price").fetchall()
    assert len(book) == sum(len(f["bids"]) + len(f["asks"]) for f in SCRIPT
                            if f["type"] == "book")
    # The toy's own integrity rule (level counts) verified every message.
    assert {v for *_, v in book} == {True}
    assert book[0][3] is True and not book[-1][3]
    kinds = [k for (k,) in con.execute("SELECT kind FROM events ORDER BY ts_recv").fetchall()]
    assert kinds[0] == "connected" and kinds[-1] == "stopped"
    assert kinds.count("subscribed") == 1
    assert con.execute("SELECT DISTINCT exchange FROM events").fetchall() == [("toy",)]
    stopped = json.loads(con.execute("SELECT detail FROM events WHERE kind = 'stopped'"
                                     ).fetchone()[0])
    assert stopped["frames"] >= len(SCRIPT) + 2  # hello, ack and the script (pongs too)
