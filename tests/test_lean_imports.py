"""Collector processes keep pandas out: pyarrow would import it on its first list conversion."""

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
print("pandas" in sys.modules)
"""


def _pandas_loaded(setup: str) -> bool:
    out = subprocess.run([sys.executable, "-c", PROBE.format(setup=setup)], check=True,
                         capture_output=True, text=True, timeout=60)
    return out.stdout.strip() == "True"


def test_pyarrow_loads_pandas_unless_kept_out():
    assert _pandas_loaded("")  # the cost this guards against (pandas is a test dependency)
    assert not _pandas_loaded("from recorder.core.lean_imports import keep_out; keep_out()")


def test_keep_out_leaves_loaded_modules_alone():
    setup = "import pandas\nfrom recorder.core.lean_imports import keep_out; keep_out()"
    assert _pandas_loaded(setup)
