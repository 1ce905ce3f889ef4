import sys
from pathlib import Path

# Tests import helpers as ``tests.<module>``; make the checkout importable however pytest runs.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
