import sys
from pathlib import Path

# Tests import helpers as ``tests.<module>``; make the checkout importable however pytest runs.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The session-wide check that the sentinel credentials (tests/sentinel.py) leak nowhere:
# captured output, test ids, child command lines, every file of the session's temp folder.
from tests.sentinel_plugin import pytest_configure  # noqa: E402, F401
