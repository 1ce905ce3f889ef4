"""Collector processes keep pandas and numpy out: pyarrow would import them (numpy at its own
import, pandas on its first list conversion)."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
{setup}
import pyarrow as pa
pa.array(["1.5", None]); pa.scalar(3)
import duckdb
duckdb.sql("SELECT 1").fetchall()
import pyarrow.compute as pc, pyarrow.parquet as pq, pyarrow.ipc
pc.cast(pa.array(["1.25"]), pa.decimal128(10, 3))
print("pandas" in sys.modules, "numpy" in sys.modules)
"""


def _loaded(setup: str) -> tuple[bool, bool]:
    """Whether pandas and numpy are in sys.modules after the probe."""
    out = subprocess.run([sys.executable, "-c", PROBE.format(setup=setup)], check=True,
                         capture_output=True, text=True, timeout=60)
    pandas, numpy = out.stdout.split()
    return pandas == "True", numpy == "True"


def test_pyarrow_loads_pandas_and_numpy_unless_kept_out():
    # The cost this guards against (both are installed for the tests).
    assert _loaded("") == (True, True)
    # Arrow conversion, decimal casts, IPC, Parquet and DuckDB still work without them.
    assert _loaded("from recorder.core.lean_imports import keep_out; keep_out()") == (
        False, False)


def test_keep_out_leaves_loaded_modules_alone():
    setup = "import pandas\nfrom recorder.core.lean_imports import keep_out; keep_out()"
    assert _loaded(setup) == (True, True)


def test_allowed_by_environment(monkeypatch):
    monkeypatch.setenv("RECORDER_COLLECTOR_IMPORTS", "numpy")
    assert _loaded("from recorder.core.lean_imports import keep_out; keep_out()") == (
        False, True)
