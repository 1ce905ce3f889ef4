"""Coverage report: per symbol and hour, rows per table, minutes without data, connection gaps
and integrity failures (checksum mismatch or sequence gap); and a picture of coverage over
time (a self-contained HTML page with an SVG chart, or a PNG heat map), because a person
reads a coverage chart faster than a table.

What counts:
- ``rows_<table>``: rows of that table for the symbol in the hour (trades, book, spread,
  ohlc, ticker);
- ``empty_minutes``: minutes of the hour in which the symbol has no row in any table, counted
  between the first and the last row of the whole report (a quiet market also shows here,
  so read it next to ``gaps``);
- ``gaps``: ``disconnected``, ``stale`` and ``connect_failed`` events in the hour (connection
  events carry no symbol, so they count for every symbol);
- ``trade_gaps_repaired`` / ``trade_gaps_unrepaired``: gaps in the symbol's trades that
  began in the hour and were repaired from the exchange's REST history completely, or only
  in part or not at all (``trades_backfilled`` with ``complete`` false,
  ``backfill_abandoned``): trades may be missing there;
- ``integrity_failures``: ``checksum_mismatch`` and ``sequence_gap`` events of the symbol;
  ``unverified_rows``: its book rows with ``verified = false``.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from recorder.analysis.sql import symbol_filter, time_filter, to_arrow
from recorder.core.schema import GAP_EVENT_KINDS, INTEGRITY_EVENT_KINDS, REPAIRED_SQL
from recorder.core.times import DatasetError, parse_time, to_datetime

if TYPE_CHECKING:
    from recorder.analysis.dataset import Dataset

LANE_TABLES = ("trades", "book", "spread", "ohlc", "ticker")
HOUR_US = 3_600_000_000
MINUTE_US = 60_000_000
_BUCKETS = (60, 300, 900, 3600, 6 * 3600, 86400)  # seconds; the chart picks one


def _where(terms: list[str]) -> str:
    return (" WHERE " + " AND ".join(terms)) if terms else ""


def hourly(ds: Dataset, symbols: Any = None, start: Any = None, end: Any = None) -> pa.Table:
    """The per symbol and hour table (see the module doc), ordered by symbol and hour."""
    lo, hi = parse_time(start, "start"), parse_time(end, "end")
    where = symbol_filter(symbols) + time_filter(lo, hi)
    tables = [t for t in LANE_TABLES if ds.has_rows(t)]
    if not tables:
        raise DatasetError(f"no market data recorded in {ds.data}")
    counts = " UNION ALL ".join(
        f"SELECT '{t}' AS tbl, symbol, epoch_us(ts_recv) // {MINUTE_US} AS minute, count(*) AS n"
        f"{', count(*) FILTER (WHERE verified = false) AS bad' if t == 'book' else ', 0 AS bad'}"
        f" FROM {t}{_where(where)} GROUP BY ALL" for t in tables)
    ev_where = time_filter(lo, hi)
    pivots = ", ".join(f"coalesce(sum(n) FILTER (WHERE tbl = '{t}'), 0)::BIGINT AS rows_{t}"
                       for t in LANE_TABLES if t in tables)
    gap_kinds = ", ".join(f"'{k}'" for k in GAP_EVENT_KINDS)
    bad_kinds = ", ".join(f"'{k}'" for k in INTEGRITY_EVENT_KINDS)
    repair_kinds = "'trades_backfilled', 'backfill_abandoned'"
    query = f"""
        WITH m AS ({counts}),
        span AS (SELECT min(minute) AS a, max(minute) AS b FROM m),
        per_min AS (SELECT symbol, minute FROM m GROUP BY ALL),
        hours AS (
            SELECT s.symbol, h.hour FROM (SELECT DISTINCT symbol FROM m) s,
                 (SELECT unnest(range((SELECT a FROM span) // 60,
                                      (SELECT b FROM span) // 60 + 1)) AS hour) h
        ),
        agg AS (SELECT symbol, minute // 60 AS hour, {pivots},
                       sum(bad)::BIGINT AS unverified_rows
                FROM m GROUP BY ALL),
        filled AS (SELECT symbol, minute // 60 AS hour, count(*) AS minutes_with_data
                   FROM per_min GROUP BY ALL),
        ev AS (SELECT kind, symbol, epoch_us(ts_recv) // {HOUR_US} AS hour FROM events
               {_where(ev_where + [f"kind IN ({gap_kinds}, {bad_kinds})"])}),
        gaps AS (SELECT hour, count(*) AS gaps FROM ev WHERE kind NOT IN ({bad_kinds})
                 GROUP BY ALL),
        bad AS (SELECT symbol, hour, count(*) AS integrity_failures FROM ev
                WHERE kind IN ({bad_kinds}) GROUP BY ALL),
        rep AS (SELECT symbol, epoch_us(coalesce(TRY_CAST(json_extract_string(detail,
                       '$.since') AS TIMESTAMPTZ), ts_recv)) // {HOUR_US} AS hour,
                       count(*) FILTER (WHERE {REPAIRED_SQL}) AS repaired,
                       count(*) FILTER (WHERE NOT ({REPAIRED_SQL})) AS unrepaired
                FROM events {_where(ev_where + [f"kind IN ({repair_kinds})"])}
                GROUP BY ALL)
        SELECT h.symbol, make_timestamp(h.hour * {HOUR_US})::TIMESTAMPTZ AS hour,
               {", ".join(f"coalesce(agg.rows_{t}, 0) AS rows_{t}"
                          for t in LANE_TABLES if t in tables)},
               (least((SELECT b FROM span) + 1, (h.hour + 1) * 60)
                - greatest((SELECT a FROM span), h.hour * 60)
                - coalesce(f.minutes_with_data, 0))::BIGINT AS empty_minutes,
               coalesce(g.gaps, 0)::BIGINT AS gaps,
               coalesce(r.repaired, 0)::BIGINT AS trade_gaps_repaired,
               coalesce(r.unrepaired, 0)::BIGINT AS trade_gaps_unrepaired,
               coalesce(b.integrity_failures, 0)::BIGINT AS integrity_failures,
               coalesce(agg.unverified_rows, 0) AS unverified_rows
        FROM hours h
        LEFT JOIN agg USING (symbol, hour)
        LEFT JOIN filled f USING (symbol, hour)
        LEFT JOIN gaps g USING (hour)
        LEFT JOIN bad b USING (symbol, hour)
        LEFT JOIN rep r USING (symbol, hour)
        ORDER BY h.symbol, h.hour"""
    if not ds.has_rows("events"):
        query = query.replace("FROM events", "FROM (SELECT NULL::VARCHAR AS kind, "
                              "NULL::VARCHAR AS symbol, NULL::TIMESTAMPTZ AS ts_recv, "
                              "NULL::VARCHAR AS detail, NULL::DATE AS date WHERE false)")
    return to_arrow(ds.con.sql(query))


@dataclass
class Coverage:
    """Rows per lane (symbol × table) and time bucket, plus event marks, for the chart."""

    start_us: int
    bucket_us: int
    buckets: int
    lanes: list[tuple[str, str]]          # (symbol, table)
    cells: dict[tuple[int, int], int]     # (lane, bucket) -> rows
    gaps: list[int]                       # bucket of each gap event
    failures: list[tuple[str, int]]       # (symbol, bucket) of each integrity failure


def coverage(ds: Dataset, symbols: Any = None, start: Any = None, end: Any = None,
             max_buckets: int = 720) -> Coverage:
    lo, hi = parse_time(start, "start"), parse_time(end, "end")
    where = symbol_filter(symbols) + time_filter(lo, hi)
    tables = [t for t in LANE_TABLES if ds.has_rows(t)]
    if not tables:
        raise DatasetError(f"no market data recorded in {ds.data}")
    span = " UNION ALL ".join(f"SELECT min(epoch_us(ts_recv)) AS a, max(epoch_us(ts_recv)) AS b"
                              f" FROM {t}{_where(where)}" for t in tables)
    a, b = ds.con.execute(f"SELECT min(a), max(b) FROM ({span})").fetchall()[0]
    if a is None:
        raise DatasetError("no rows in the chosen symbols and time range")
    a = lo if lo is not None else a
    b = hi if hi is not None else b + 1
    seconds = max(1, (b - a) // 1_000_000)
    bucket_s = next((s for s in _BUCKETS if seconds / s <= max_buckets), _BUCKETS[-1])
    bucket = bucket_s * 1_000_000
    start_us = a // bucket * bucket
    nb = max(1, -(-(b - start_us) // bucket))
    rows = ds.con.execute(" UNION ALL ".join(
        f"SELECT symbol, '{t}' AS tbl, (epoch_us(ts_recv) - {start_us}) // {bucket} AS k, "
        f"count(*) FROM {t}{_where(where)} GROUP BY ALL" for t in tables)).fetchall()
    lanes = sorted({(s, t) for s, t, _, _ in rows if s is not None},
                   key=lambda x: (x[0], LANE_TABLES.index(x[1])))
    index = {lane: i for i, lane in enumerate(lanes)}
    cells = {(index[(s, t)], int(k)): int(n) for s, t, k, n in rows if s is not None}
    gaps: list[int] = []
    failures: list[tuple[str, int]] = []
    if ds.has_rows("events"):
        kinds = ", ".join(f"'{k}'" for k in (*GAP_EVENT_KINDS, *INTEGRITY_EVENT_KINDS))
        ev = ds.con.execute(
            f"SELECT kind, symbol, (epoch_us(ts_recv) - {start_us}) // {bucket} FROM events"
            f"{_where(time_filter(lo, hi) + [f'kind IN ({kinds})'])}").fetchall()
        for kind, sym, k in ev:
            if kind in INTEGRITY_EVENT_KINDS:
                failures.append((sym, int(k)))
            else:
                gaps.append(int(k))
    return Coverage(start_us, bucket, int(nb), lanes, cells, gaps, failures)


# -- pictures --------------------------------------------------------------------------------


def _shade(n: int, top: int) -> tuple[int, int, int]:
    """Empty: light grey; otherwise light to dark blue on a log scale."""
    if n <= 0:
        return (236, 236, 236)
    f = math.log1p(n) / math.log1p(max(top, 1))
    return (int(198 - 160 * f), int(219 - 130 * f), int(239 - 60 * f))


def _label(us: int, bucket_us: int) -> str:
    d = to_datetime(us)
    return d.strftime("%Y-%m-%d %H:%M" if bucket_us < 86_400_000_000 else "%Y-%m-%d")


def coverage_svg(cov: Coverage) -> str:
    left, top, lane_h, width = 190, 30, 18, 900
    cw = max(1.0, width / cov.buckets)
    width = cw * cov.buckets
    height = top + lane_h * (len(cov.lanes) + 1) + 40
    peak: dict[int, int] = {}
    for (lane, _), n in cov.cells.items():
        peak[lane] = max(peak.get(lane, 0), n)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 20:.0f}" '
           f'height="{height}" font-family="sans-serif" font-size="11">']
    for i, (sym, table) in enumerate(cov.lanes):
        y = top + i * lane_h
        out.append(f'<text x="{left - 6}" y="{y + 12}" text-anchor="end">'
                   f'{html.escape(sym)} {table}</text>')
        out.append(f'<rect x="{left}" y="{y}" width="{width:.1f}" height="{lane_h - 2}" '
                   'fill="rgb(236,236,236)"/>')
        for k in range(cov.buckets):
            n = cov.cells.get((i, k), 0)
            if n:
                r, g, b = _shade(n, peak[i])
                t0 = _label(cov.start_us + k * cov.bucket_us, cov.bucket_us)
                out.append(f'<rect x="{left + k * cw:.2f}" y="{y}" width="{cw + 0.05:.2f}" '
                           f'height="{lane_h - 2}" fill="rgb({r},{g},{b})"><title>{t0}: {n:,} '
                           'rows</title></rect>')
    y = top + len(cov.lanes) * lane_h
    out.append(f'<text x="{left - 6}" y="{y + 12}" text-anchor="end">events</text>')
    for k in sorted(set(cov.gaps)):
        out.append(f'<rect x="{left + k * cw:.2f}" y="{y}" width="{max(cw, 2):.2f}" '
                   f'height="{lane_h - 2}" fill="#d62728"><title>connection gap</title></rect>')
    for sym, k in cov.failures:
        out.append(f'<rect x="{left + k * cw:.2f}" y="{y + 4}" width="{max(cw, 2):.2f}" '
                   f'height="{lane_h - 10}" fill="#ff7f0e"><title>integrity failure '
                   f'{html.escape(str(sym))}</title></rect>')
    ticks = 6
    for j in range(ticks + 1):
        k = round(j * cov.buckets / ticks)
        x = left + k * cw
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top - 4}" y2="{y + lane_h}" '
                   'stroke="#999" stroke-width="0.5"/>')
        out.append(f'<text x="{x:.1f}" y="{top - 8}" text-anchor="middle">'
                   f'{_label(cov.start_us + k * cov.bucket_us, cov.bucket_us)}</text>')
    out.append(f'<text x="{left}" y="{height - 12}">one column = {cov.bucket_us // 1_000_000}'
               ' s; grey: no rows; blue: rows (log scale, per lane); red: connection gap; '
               'orange: integrity failure (times UTC)</text></svg>')
    return "\n".join(out)


def write_html(path: Path, cov: Coverage, table: pa.Table, title: str) -> None:
    cols = table.column_names
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for row in table.to_pylist():
        cells = []
        for c in cols:
            v = row[c]
            if c == "hour" and v is not None:
                v = v.strftime("%Y-%m-%d %H:00")
            warn = c in ("gaps", "trade_gaps_unrepaired", "integrity_failures",
                         "unverified_rows") and v
            style = ' class="warn"' if warn else ""
            cells.append(f"<td{style}>{html.escape(str(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:20px}}table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}td:first-child{{text-align:left}}
.warn{{background:#fdd}}</style></head><body>
<h2>{html.escape(title)}</h2>
{coverage_svg(cov)}
<h3>Per symbol and hour</h3>
<table><tr>{head}</tr>
{chr(10).join(body)}
</table></body></html>
"""
    path.write_text(page)


def write_png(path: Path, cov: Coverage) -> None:
    """The coverage chart as a PNG, drawn with matplotlib (the optional ``report`` extra):
    one row per lane (symbol x table) shaded by rows per column on a log scale, then the
    events row (red: connection gap, orange: integrity failure), a UTC time axis and a
    legend."""
    try:
        import matplotlib
    except ImportError:
        raise DatasetError("--out .png needs matplotlib: pip install 'market-recorder[report]',"
                           " or write a self-contained .html chart instead") from None
    matplotlib.use("Agg")  # no screen; never pick an interactive backend
    import matplotlib.colors as mcolors
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Patch

    lanes = len(cov.lanes)
    grid = np.zeros((lanes, cov.buckets))
    for (lane, k), n in cov.cells.items():
        grid[lane, k] = n
    peak = grid.max(axis=1, keepdims=True)
    # Shaded per lane, like the HTML chart: a quiet lane is not lost next to a busy one.
    shade = np.where(grid > 0, np.log1p(grid) / np.log1p(np.maximum(peak, 1)), np.nan)
    t0 = mdates.date2num(to_datetime(cov.start_us))
    t1 = mdates.date2num(to_datetime(cov.start_us + cov.buckets * cov.bucket_us))
    fig, ax = plt.subplots(figsize=(12, 1.2 + 0.32 * (lanes + 1)), dpi=100)
    try:
        cmap = matplotlib.colormaps["Blues"].with_extremes(bad="#ececec")
        ax.imshow(shade, aspect="auto", cmap=cmap, norm=mcolors.Normalize(0, 1),
                  extent=(t0, t1, lanes - 0.5, -0.5), interpolation="nearest")
        width = (t1 - t0) / cov.buckets
        ax.add_patch(plt.Rectangle((t0, lanes - 0.5), t1 - t0, 1, color="#ececec"))
        for k in sorted(set(cov.gaps)):
            ax.add_patch(plt.Rectangle((t0 + k * width, lanes - 0.45), max(width, (t1 - t0)
                                       / 600), 0.9, color="#d62728"))
        for _, k in cov.failures:
            ax.add_patch(plt.Rectangle((t0 + k * width, lanes - 0.25), max(width, (t1 - t0)
                                       / 600), 0.5, color="#ff7f0e"))
        ax.set_ylim(lanes + 0.5, -0.5)
        ax.set_yticks(range(lanes + 1), [f"{s} {t}" for s, t in cov.lanes] + ["events"])
        ax.set_xlim(t0, t1)
        ax.xaxis_date(tz="UTC")
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(ax.xaxis.get_major_locator()))
        ax.set_xlabel(f"UTC; one column = {cov.bucket_us // 1_000_000} s")
        axes_inches = ax.get_position().height * fig.get_figheight()  # legend below the axis
        ax.legend(handles=[Patch(color=matplotlib.colormaps["Blues"](0.8),
                                 label="rows (log scale, per lane)"),
                           Patch(color="#ececec", label="no rows"),
                           Patch(color="#d62728", label="connection gap"),
                           Patch(color="#ff7f0e", label="integrity failure")],
                  loc="upper center", bbox_to_anchor=(0.5, -0.62 / axes_inches),
                  ncol=4, frameon=False, fontsize=8)
        ax.set_title("Recording coverage", fontsize=10)
        fig.savefig(path, bbox_inches="tight")
    finally:
        plt.close(fig)


def report(ds: Dataset, out: Path | None = None, symbols: Any = None, start: Any = None,
           end: Any = None) -> pa.Table:
    """The hourly table; with ``out`` (.html or .png) also the coverage picture."""
    table = hourly(ds, symbols, start, end)
    if out is not None:
        suffix = Path(out).suffix.lower()
        if suffix not in (".html", ".htm", ".png"):
            raise DatasetError(f"--out {out}: use a .html or .png file name")
        cov = coverage(ds, symbols, start, end)
        if suffix == ".png":
            write_png(Path(out), cov)
        else:
            write_html(Path(out), cov, table, f"Coverage of {ds.data}")
    return table
