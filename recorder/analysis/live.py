"""The coverage chart of the live status page (``recorder run --metrics-port``).

The supervisor runs ``python -m recorder.analysis.live coverage DATA --window SECONDS`` when
the page asks for its chart (at most once a minute): DuckDB and Arrow load in that short
child process and never stay in the supervisor. It prints the SVG of
``recorder.analysis.report.coverage_svg`` for the last ``--window`` seconds, journaled rows
included (so the current hour shows up about a second after it was recorded).
"""

from __future__ import annotations

import argparse
import html
import sys
import time
from collections.abc import Sequence
from pathlib import Path


def _note(text: str) -> str:
    return ('<svg xmlns="http://www.w3.org/2000/svg" width="900" height="30" '
            'font-family="sans-serif" font-size="12"><text x="4" y="18">'
            f'{html.escape(text)}</text></svg>')


def coverage_svg(data: Path, window: float = 3600.0, now: float | None = None) -> str:
    from recorder.analysis.dataset import Dataset
    from recorder.analysis.report import coverage
    from recorder.analysis.report import coverage_svg as draw
    from recorder.core.times import DatasetError

    if not Path(data).is_dir():
        return _note(f"no data directory {data} yet")
    now = time.time() if now is None else now
    ds = Dataset(data, threads=1)
    try:
        cov = coverage(ds, start=now - window, end=now, max_buckets=360)
    except DatasetError as e:
        return _note(f"no coverage to show yet: {e}")
    finally:
        ds.con.close()
    return draw(cov)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m recorder.analysis.live")
    sub = p.add_subparsers(dest="what", required=True)
    c = sub.add_parser("coverage", help="print the coverage SVG of the last --window seconds")
    c.add_argument("data", type=Path)
    c.add_argument("--window", type=float, default=3600.0)
    args = p.parse_args(argv)
    sys.stdout.write(coverage_svg(args.data, args.window))
    return 0


if __name__ == "__main__":
    sys.exit(main())
