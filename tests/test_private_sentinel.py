"""The session-wide sentinel check works: it finds planted secrets, and it fails a session.

Planting the real sentinel inside this session's temp folder would (rightly) fail the whole
run, so the scanner is tried on a folder of its own, and the plugin on nested pytest sessions
that plant a random canary (``MR_TEST_SENTINEL_EXTRA``) instead.
"""

from __future__ import annotations

import gzip
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recorder.exchanges.kraken.rest import nonce_state_path
from tests.sentinel import (
    EXTRA_NEEDLES_ENV,
    SENTINEL_KEY,
    SENTINEL_SECRET,
    WRONG_SECRET,
    Scanner,
)
from tests.sentinel_plugin import SentinelPlugin

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def outside():
    """A folder outside the session's temp folder (the session scan never sees it)."""
    path = Path(tempfile.mkdtemp(prefix="mr-sentinel-plant-"))
    try:
        yield path
    finally:
        shutil.rmtree(path)


def test_scanner_finds_planted_secrets_in_every_format(outside):
    detail = f'{{"token_request": "{SENTINEL_SECRET}"}}'
    (outside / "collector.log").write_text(f"INFO signing with {SENTINEL_SECRET[:-2]}\n")
    with gzip.open(outside / "old.log.gz", "wt") as f:
        f.write(f"key={SENTINEL_KEY}\n")
    # zstd Parquet and Arrow IPC (the journal's format): decoded, since compressed bytes on
    # disk need not show a value.
    table = pa.table({"kind": ["a", "b"], "detail": ["{}", detail],
                      "tags": pa.array([["x"], [WRONG_SECRET]])})
    pq.write_table(table, outside / "events.parquet", compression="zstd")
    meta = table.replace_schema_metadata({"recorder.source": SENTINEL_SECRET})
    pq.write_table(meta.select(["kind"]), outside / "meta.parquet", compression="zstd")
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    with pa.ipc.new_stream(str(outside / "seg.arrows"), table.schema, options=options) as w:
        w.write_table(table)
    clean = pa.table({"kind": ["a"], "detail": ["{}"]})
    pq.write_table(clean, outside / "clean.parquet", compression="zstd")
    (outside / "clean.json").write_text('{"state": "running"}')

    findings, count = Scanner().scan_tree(outside)
    assert count == 7
    text = "\n".join(findings)
    for needle in (SENTINEL_SECRET, SENTINEL_KEY, WRONG_SECRET, "U0VOVElORUw"):
        assert needle not in text, "a finding must name the place, not the value"
    assert "collector.log: sentinel secret (file bytes)" in text
    assert "old.log.gz: sentinel key (gzip contents)" in text
    assert "events.parquet: sentinel secret in column detail (Parquet values)" in text
    assert "events.parquet: wrong secret in column tags (Parquet values)" in text
    assert "meta.parquet: sentinel secret (Parquet metadata)" in text
    assert "seg.arrows: sentinel secret in column detail (Arrow values)" in text
    assert "clean." not in text
    # The files a test writes a secret into on purpose can be left out, and only those.
    findings, count = Scanner().scan_tree(outside, skip=[outside / "collector.log"])
    assert count == 6 and not any("collector.log" in f for f in findings)


def test_report_sections_and_failure_text_are_redacted():
    plugin = SentinelPlugin()
    report = SimpleNamespace(
        nodeid="tests/x.py::test_y", when="call",
        sections=[("Captured stdout call", f"token for {SENTINEL_SECRET}\n"),
                  ("Captured log call", "INFO fine\n")],
        longrepr=f"AssertionError: assert '{WRONG_SECRET}' == 'x'")
    plugin.redact_report(report)
    assert report.sections[0] == ("Captured stdout call",
                                  "token for <sentinel secret redacted>==\n")
    assert report.sections[1] == ("Captured log call", "INFO fine\n")
    assert report.longrepr == "AssertionError: assert '<wrong secret redacted>=' == 'x'"
    assert plugin.findings == [
        "tests/x.py::test_y: Captured stdout call: sentinel secret",
        "tests/x.py::test_y: the call failure text: wrong secret",
    ]


def test_the_session_plugin_is_active(request):
    plugin = request.config.pluginmanager.get_plugin("sentinel")
    assert isinstance(plugin, SentinelPlugin)
    # Nonce state of every process of the session lands in a folder the plugin scans.
    assert os.environ["XDG_RUNTIME_DIR"] == str(plugin.runtime_dir)
    assert nonce_state_path("any key").startswith(str(plugin.runtime_dir))
    spawns = plugin.spawns
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3)"])
    try:
        deadline = time.monotonic() + 10
        while child.pid not in {pid for pid, _ in plugin.processes}:
            assert time.monotonic() < deadline, "the process watcher did not see the child"
            time.sleep(0.05)
    finally:
        child.kill()
        child.wait()
    assert plugin.spawns > spawns


_LEAKY = '''
import os, subprocess, sys
CANARY = os.environ["{env}"]

def test_prints():
    print("signing with", CANARY)

def test_writes_a_file(tmp_path):
    (tmp_path / "state.json").write_text('{{"secret": "%s"}}' % CANARY)

def test_argv():
    subprocess.run([sys.executable, "-c", "pass", CANARY], check=True)

def test_grandchild_argv():
    # The child's own command line is clean; its child's is not.
    code = ("import os, subprocess, sys; subprocess.run([sys.executable, '-c', "
            "'import time; time.sleep(1.5)', os.environ['{env}']])")
    subprocess.run([sys.executable, "-c", code], check=True)

def test_fails():
    assert CANARY == "something else"

def test_clean():
    pass
'''


def _inner(tmp_path: Path, canary: str, select: str) -> subprocess.CompletedProcess:
    folder = tmp_path / "inner"
    folder.mkdir(exist_ok=True)
    (folder / "test_leaky.py").write_text(_LEAKY.format(env=EXTRA_NEEDLES_ENV))
    env = {**os.environ, EXTRA_NEEDLES_ENV: canary,
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.sentinel_plugin", "-p",
         "no:cacheprovider", "-q", "-k", select, "--basetemp", str(tmp_path / f"bt-{select}"),
         "--rootdir", str(folder), str(folder / "test_leaky.py")],
        cwd=folder, env=env, capture_output=True, text=True, timeout=120)


def test_a_session_whose_tests_all_pass_fails_when_a_secret_leaked(tmp_path):
    canary = secrets.token_hex(16)
    proc = _inner(tmp_path, canary, "not fails and not clean")
    out = proc.stdout + proc.stderr
    assert "4 passed" in out
    assert proc.returncode == 1, out[-2000:]
    assert canary not in out, "the canary was printed"
    assert "sentinel credentials FOUND in" in out
    assert "test_leaky.py::test_prints: Captured stdout call: canary 1" in out
    assert "state.json: canary 1 (file bytes)" in out
    assert "command line of a process started by the test process (subprocess.Popen, " \
           "during test_leaky.py::test_argv): canary 1" in out
    assert "command line or title of child process" in out, "grandchild not seen"


def test_a_failure_text_with_the_secret_is_redacted_and_a_clean_session_passes(tmp_path):
    canary = secrets.token_hex(16)
    proc = _inner(tmp_path, canary, "fails")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "1 failed" in out
    assert canary not in out and "<canary 1 redacted>" in out
    assert "test_leaky.py::test_fails: the call failure text: canary 1" in out
    proc = _inner(tmp_path, canary, "clean")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-2000:]
    assert "sentinel secret: not found (" in out
