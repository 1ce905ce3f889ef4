"""Coverage report: per symbol and hour rows, empty minutes, gaps and checksum failures; the
HTML chart and the PNG."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from recorder.analysis.dataset import open_dataset, to_datetime
from recorder.analysis.report import report
from recorder.core.events import event
from tests.datasets import HOUR, T0, level, run, trade, write

M = 60_000_000


@pytest.fixture(scope="module")
def rec(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rep")
    trades = [trade("BTC/USD", T0 + m * M + 5, "100", "1", tid=m) for m in range(120)
              if not 70 <= m < 80]                      # 10 silent minutes in hour 1
    trades += [trade("ETH/USD", T0 + m * M + 7, "10", "1", tid=m) for m in range(0, 120, 2)]
    book = [level(T0 + 30 * M, 1, "ask", "101", "1", True),
            level(T0 + 90 * M, 2, "ask", "101", "2", verified=False)]
    # One gap, not three:
    events = [event("kraken", T0 + 20 * M, "stale", detail="{}", conn_id=1),
              event("kraken", T0 + 20 * M + 1, "disconnected", detail="{}", conn_id=1),
              event("kraken", T0 + 20 * M + 2, "connect_failed", detail="{}", conn_id=2),
              event("kraken", T0 + 21 * M, "connected", detail="{}", conn_id=3),
              event("kraken", T0 + 71 * M, "disconnected", detail="{}", conn_id=1),
              event("kraken", T0 + 79 * M, "connected", detail="{}", conn_id=2),
              event("kraken", T0 + 90 * M, "checksum_mismatch", symbol="BTC/USD",
                    channel="book", detail="{}", conn_id=2),
              # a crashed collector writes no "disconnected": the supervisor's restart counts
              event("kraken", T0 + 100 * M, "collector_restarted", detail="{}")]
    write(root, {"trades": trades, "book": book, "events": events})
    return root


def test_hourly_table(rec: Path) -> None:
    rows = {(r["symbol"], r["hour"]): r for r in report(open_dataset(rec)).to_pylist()}
    h0, h1 = to_datetime(T0), to_datetime(T0 + HOUR)
    assert set(rows) == {("BTC/USD", h0), ("BTC/USD", h1), ("ETH/USD", h0), ("ETH/USD", h1)}
    b0, b1 = rows[("BTC/USD", h0)], rows[("BTC/USD", h1)]
    assert (b0["rows_trades"], b0["rows_book"], b0["empty_minutes"], b0["gaps"]) == (60, 1, 0, 1)
    assert (b1["rows_trades"], b1["rows_book"], b1["empty_minutes"], b1["gaps"],
            b1["integrity_failures"], b1["unverified_rows"]) == (50, 1, 10, 2, 1, 1)
    e1 = rows[("ETH/USD", h1)]
    assert (e1["rows_trades"], e1["empty_minutes"], e1["gaps"], e1["integrity_failures"]) == (
        30, 30, 2, 0)


def test_html_and_png(rec: Path, tmp_path: Path) -> None:
    page = tmp_path / "r.html"
    report(open_dataset(rec), page)
    text = page.read_text()
    assert "<svg" in text and "BTC/USD trades" in text and "connection gap" in text
    assert "http" not in text.replace("http://www.w3.org/2000/svg", "")  # self-contained
    png = tmp_path / "r.png"
    report(open_dataset(rec), png)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 900 and height >= 150  # lanes, axis and legend, not a bare strip


def test_report_command(rec: Path, tmp_path: Path) -> None:
    r = run("report", "--data", str(rec), "--format", "csv", "--symbol", "ETH/USD")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].startswith("symbol,hour,rows_trades,rows_book,empty_minutes,gaps")
    assert len(lines) == 3 and all(x.startswith("ETH/USD") for x in lines[1:])
    r = run("report", "--data", str(rec), "--out", str(tmp_path / "r.pdf"))
    assert r.exit_code == 2 and "use a .html or .png file name" in r.output
