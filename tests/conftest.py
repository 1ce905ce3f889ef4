import os
import sys
from pathlib import Path

import pytest

# Tests import helpers as ``tests.<module>``; make the checkout importable however pytest runs.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The session-wide check that the sentinel credentials (tests/sentinel.py) leak nowhere:
# captured output, test ids, child command lines, every file of the session's temp folder.
from tests.sentinel_plugin import pytest_configure  # noqa: E402, F401


@pytest.fixture(autouse=True, scope="session")
def _no_cached_pair_list(tmp_path_factory):
    """Config validation also reads the pair list `recorder pairs --update` caches: tests
    (and the recorders they start) see only the bundled table, never a list cached on this
    machine."""
    os.environ["MARKET_RECORDER_CACHE"] = str(tmp_path_factory.mktemp("pair-cache"))
    yield
    os.environ.pop("MARKET_RECORDER_CACHE", None)
