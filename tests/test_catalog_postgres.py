"""The catalog for many machines: PostgreSQL (Debian's server, started on loopback for this
module). Two committers, as two hosts, commit queued files at once; all land once."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from sinks.catalog import Tables, target_for
from sinks.catalog_queue import Committer, enqueue
from sinks.reporting import Reporter
from tests.datasets import T0, S, trade, write
from tests.s3_helpers import free_port

PG_BIN = Path("/usr/lib/postgresql")


def _bin(name: str) -> str:
    found = sorted(PG_BIN.glob(f"*/bin/{name}")) or [Path(p) for p in [shutil.which(name)] if p]
    if not found:
        pytest.fail(f"PostgreSQL's {name} is not installed (apt-get install postgresql; "
                    ".ci/run does)")
    return str(found[-1])


@pytest.fixture(scope="module")
def postgres():
    """A throw-away server on 127.0.0.1; root runs it as the postgres user (the server
    refuses to run as root), in a folder of its own (pytest's are private to root)."""
    base = Path(tempfile.mkdtemp(prefix="recorder-test-pg-"))
    data = base / "db"
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    done = subprocess.run([*as_user, _bin("initdb"), "-D", str(data), "-A", "trust", "-U",
                           "postgres", "--no-sync"], capture_output=True, text=True)
    if done.returncode:
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"initdb failed: {done.stderr[-1000:]}")
    port = free_port()
    proc = subprocess.Popen([*as_user, _bin("postgres"), "-D", str(data), "-p", str(port),
                             "-h", "127.0.0.1", "-k", str(base), "-c", "fsync=off"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    import psycopg2

    deadline = time.monotonic() + 30
    while True:
        try:
            psycopg2.connect(host="127.0.0.1", port=port, user="postgres").close()
            break
        except psycopg2.OperationalError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"PostgreSQL did not start (exit {proc.poll()})")
            time.sleep(0.1)
    yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    shutil.rmtree(base, ignore_errors=True)


def test_two_hosts_commit_to_one_postgresql_catalog(postgres: str, tmp_path: Path):
    shared = (tmp_path / "data").resolve()  # the warehouse both hosts see (a store in life)
    hosts = {}
    for h in ("a", "b"):
        spool = tmp_path / f"host-{h}"
        for i in range(8):
            write(shared, {"trades": [trade("BTC/USD", T0 + i * S, "1", "1", tid=i)]},
                  source=f"host{h}-{i}")
        files = sorted(p for p in (shared / "trades").rglob(f"*-host{h}-*.parquet"))
        for p in files:
            enqueue(spool, "trades", f"file://{p}")
        # Each host commits its own queue, to the one catalog.
        hosts[h] = (Committer(target_for(shared, postgres), Reporter("kraken", None),
                              queue=spool), spool, files)

    results = {}
    threads = [threading.Thread(target=lambda h=h: results.__setitem__(
        h, hosts[h][0].commit_pending())) for h in hosts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results == {"a": True, "b": True}, [h[0].last_error for h in hosts.values()]
    tables = Tables(target_for(shared, postgres))
    got = sorted(tables.referenced(tables.table("trades")))
    assert got == sorted(f"file://{p}" for _, _, fs in hosts.values() for p in fs)
    assert tables.table("trades").scan().to_arrow().num_rows == 16
