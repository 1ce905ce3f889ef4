"""API-Sign against Kraken's published vector; nonces that only ever grow."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from recorder.exchanges.kraken.rest import nonce_state_path
from recorder.exchanges.kraken.signer import NonceSource, api_sign

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "data" / "kraken" / "test-vectors.json"
ROOT = Path(__file__).resolve().parents[1]


def test_official_api_sign_vector():
    v = json.loads(VECTORS.read_text())["rest_api_sign"]
    assert api_sign(v["uri_path"], v["nonce"], v["encoded_payload"], v["private_key"]) == (
        v["expected_api_sign"])
    # Bytes or text body: the same signature.
    assert api_sign(v["uri_path"], v["nonce"], v["encoded_payload"].encode(),
                    v["private_key"]) == v["expected_api_sign"]


def test_signature_depends_on_every_input():
    v = json.loads(VECTORS.read_text())["rest_api_sign"]
    base = api_sign(v["uri_path"], v["nonce"], v["encoded_payload"], v["private_key"])
    assert api_sign("/0/private/Balance", v["nonce"], v["encoded_payload"],
                    v["private_key"]) != base
    assert api_sign(v["uri_path"], "1616492376595", v["encoded_payload"],
                    v["private_key"]) != base
    assert api_sign(v["uri_path"], v["nonce"], v["encoded_payload"] + "&x=1",
                    v["private_key"]) != base


def test_nonce_strictly_increases_across_threads():
    source = NonceSource()
    got: list[list[int]] = [[] for _ in range(8)]

    def draw(i: int) -> None:
        for _ in range(500):
            got[i].append(source.next())

    threads = [threading.Thread(target=draw, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [n for g in got for n in g]
    assert len(set(everything)) == len(everything)
    for g in got:
        assert g == sorted(g) and len(set(g)) == len(g)


_DRAW = """
import sys, time
from recorder.exchanges.kraken.signer import NonceSource
state, go = sys.argv[1], float(sys.argv[2])
source = NonceSource(state)
while time.time() < go:
    pass
print(" ".join(str(source.next()) for _ in range(300)))
"""


def test_nonce_strictly_increases_across_processes_started_together(tmp_path):
    state = str(tmp_path / "nonce-state")
    go = time.time() + 1.5  # every process starts drawing in the same millisecond
    procs = [subprocess.Popen([sys.executable, "-c", _DRAW, state, repr(go)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=30)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    lists = [[int(x) for x in out.split()] for out in outs]
    everything = [n for lst in lists for n in lst]
    assert len(everything) == 1200
    assert len(set(everything)) == 1200, "two processes drew the same nonce"
    for lst in lists:
        assert all(a < b for a, b in zip(lst, lst[1:], strict=False))
    # A later process continues above everything drawn before, even with the clock behind.
    assert NonceSource(state).next() > max(everything)


def test_nonce_state_file_is_private_and_does_not_name_the_key():
    path = nonce_state_path("MY-PUBLIC-KEY-123")
    assert path is not None
    assert "MY-PUBLIC-KEY-123" not in path
    assert nonce_state_path("MY-PUBLIC-KEY-123") == path
    assert nonce_state_path("ANOTHER-KEY") != path
    assert Path(path).parent.stat().st_mode & 0o077 == 0
