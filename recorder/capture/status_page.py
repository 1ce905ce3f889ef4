"""The live status page the metrics endpoint serves at ``/``.

One HTML page without outside resources: the server renders its live part (``fragment``)
and the page's script fetches ``/fragment`` again every ``REFRESH_SECONDS`` and swaps it in,
so what a person sees is rendered by the same code however it is reached. The coverage chart
(``/coverage.svg``, the last hour) is reloaded every minute.
"""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from typing import Any

from recorder.core.schema import GAP_EVENT_KINDS, INTEGRITY_EVENT_KINDS

REFRESH_SECONDS = 2.0
COVERAGE_REFRESH_SECONDS = 60.0
RECENT_GAP_SECONDS = 300.0  # a collector's row stays marked this long after a gap
SILENT_SECONDS = 60.0  # the "no data" alert's threshold, marked on the page too
_ROW_TABLES_SHOWN = ("trades", "book", "spread", "ohlc", "ticker", "fills", "orders", "events")

_STYLE = """
body{font-family:system-ui,sans-serif;margin:16px;color:#222;background:#fafafa}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:18px 0 6px}
table{border-collapse:collapse;font-size:13px;background:#fff}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:left;white-space:nowrap}
th{background:#f0f0f0}td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.bad td{background:#fde8e8}tr.gap td{background:#fff4e0}
.kind-gap{color:#b00020;font-weight:600}.kind-integrity{color:#c25e00;font-weight:600}
.muted{color:#777}.warn{color:#b00020;font-weight:600}#banner{display:none;padding:6px;
background:#b00020;color:#fff;margin-bottom:8px}td.detail{white-space:normal;max-width:520px;
font-family:monospace;font-size:12px;word-break:break-all}
"""

_SCRIPT = """
(function(){
  var live=document.getElementById('live'), banner=document.getElementById('banner');
  function refresh(){
    fetch('fragment',{credentials:'same-origin',cache:'no-store'}).then(function(r){
      if(!r.ok) throw new Error('HTTP '+r.status); return r.text();
    }).then(function(t){live.innerHTML=t; banner.style.display='none';
      document.body.dataset.refreshes=String(1+Number(document.body.dataset.refreshes||0));
    }).catch(function(e){banner.textContent='cannot reach the recorder: '+e.message+
      ' (the job may have stopped)'; banner.style.display='block';});
  }
  function coverage(){
    var imgs=document.querySelectorAll('img.coverage');
    for(var i=0;i<imgs.length;i++){imgs[i].src='coverage.svg?i='+i+'&t='+Date.now();}
  }
  setInterval(refresh, %(refresh_ms)d);
  setInterval(coverage, %(coverage_ms)d);
})();
"""


def _t(ts: float | None) -> str:
    if not ts:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return str(n)


def _kind_class(kind: str) -> str:
    if kind in GAP_EVENT_KINDS or kind in ("stale", "collector_failed", "credentials_refused"):
        return "kind-gap"
    if kind in INTEGRITY_EVENT_KINDS or kind.startswith("resync"):
        return "kind-integrity"
    return ""


def fragment(view: dict) -> str:
    """The live part of the page (what ``/fragment`` returns)."""
    e = html.escape
    now = view["now"]
    out = [f'<p id="summary">supervisor pid {view["pid"]}, up '
           f'{_age(now - view["started_at"])}, RSS {_bytes(view.get("rss_bytes"))}; '
           f'updated {_t(now)} UTC</p>']
    for d in view["disks"]:
        share = d["free_bytes"] / d["size_bytes"] if d["size_bytes"] else 1.0
        cls = ' class="warn"' if share < 0.10 else ""
        out.append(f'<p{cls} data-disk="{e(d["path"])}">disk of {e(d["path"])}: '
                   f'{_bytes(d["free_bytes"])} free of {_bytes(d["size_bytes"])} '
                   f'({share:.0%})</p>')
    out.append('<h2>Collectors</h2><table id="collectors"><tr><th>collector</th>'
               '<th>exchange</th><th>state</th><th>pid</th><th>up</th><th>restarts</th>'
               '<th>connection</th><th>msgs/s</th><th>rows/s</th><th>last message</th>'
               '<th>last data</th><th>gaps</th><th>last gap</th><th>integrity fails</th>'
               '<th>reconnects</th><th>resyncs</th><th>token age</th><th>RSS</th>'
               '<th>rows (journaled)</th></tr>')
    for c in view["collectors"]:
        if c.get("orphan"):
            continue
        t = c["totals"]
        gaps = t["counters"].get("gaps", 0)
        integrity = sum(t["integrity"].values())
        silent = c["last_message_age_s"] > SILENT_SECONDS
        recent_gap = c["last_gap_at"] is not None and now - c["last_gap_at"] < RECENT_GAP_SECONDS
        cls = ("bad" if c["state"] not in ("running", "starting") or not c["connected"]
               or silent
               else "gap" if recent_gap or integrity else "")
        conn = (f'connected (#{c["conn_id"]})' if c["connected"] else "not connected")
        rows = ", ".join(f"{tbl} {t['rows'][tbl]:,}" for tbl in _ROW_TABLES_SHOWN
                         if t["rows"].get(tbl))
        last_gap = (f'{_age(now - c["last_gap_at"])} ago' if c["last_gap_at"] else "never")
        out.append(
            f'<tr class="{cls}" data-collector="{e(c["collector"])}" data-gaps="{gaps}" '
            f'data-integrity="{integrity}" data-connected="{int(c["connected"])}">'
            f'<td>{e(c["collector"])}</td><td>{e(c["exchange"] or "")}</td>'
            f'<td>{e(c["state"] or "")}</td><td class="n">{c["pid"] or "-"}</td>'
            f'<td class="n">{_age(c["up_s"])}</td><td class="n">{c["restarts"]}</td>'
            f'<td>{e(conn)}</td><td class="n">{_rate(c["messages_per_s"])}</td>'
            f'<td class="n">{_rate(c["rows_per_s"])}</td>'
            f'<td class="n">{_age(c["last_message_age_s"])}</td>'
            f'<td class="n">{_age(c["last_data_age_s"])}</td>'
            f'<td class="n">{gaps}</td><td>{last_gap}</td><td class="n">{integrity}</td>'
            f'<td class="n">{t["counters"].get("reconnects", 0)}</td>'
            f'<td class="n">{t["counters"].get("resyncs", 0)}</td>'
            f'<td class="n">{_age(c["token_age_s"])}</td>'
            f'<td class="n">{_bytes(c["rss_bytes"])}</td><td>{e(rows)}</td></tr>')
    out.append("</table>")
    out.append('<h2>Recent events</h2><table id="events"><tr><th>time (UTC)</th>'
               '<th>collector</th><th>kind</th><th>symbol</th><th>detail</th></tr>')
    events = view["events"]
    if not events:
        out.append('<tr><td colspan="5" class="muted">none yet</td></tr>')
    for ev in events:
        kind = ev["kind"] or ""
        out.append(f'<tr data-kind="{e(kind)}"><td>{_t(ev["ts"])}</td>'
                   f'<td>{e(ev["collector"])}</td>'
                   f'<td class="{_kind_class(kind)}">{e(kind)}</td>'
                   f'<td>{e(ev["symbol"] or "")}</td>'
                   f'<td class="detail">{e(ev["detail"] or "")}</td></tr>')
    out.append("</table>")
    return "\n".join(out)


def page(view: dict, title: str = "market-recorder") -> str:
    roots = sorted({c["root"] for c in view["collectors"] if c.get("root")})
    charts = "\n".join(
        f'<p class="muted">{html.escape(root)}</p><img class="coverage" alt="coverage chart '
        f'of {html.escape(root)}" src="coverage.svg?i={i}">' for i, root in enumerate(roots))
    script = _SCRIPT % {"refresh_ms": int(REFRESH_SECONDS * 1000),
                        "coverage_ms": int(COVERAGE_REFRESH_SECONDS * 1000)}
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width">'
            f"<title>{html.escape(title)}: status</title><style>{_STYLE}</style></head>"
            f'<body><div id="banner"></div><h1>{html.escape(title)}</h1>'
            f'<p class="muted">refreshes every {REFRESH_SECONDS:g} s; metrics at '
            '<a href="metrics">/metrics</a>, JSON at <a href="api/status">/api/status</a></p>'
            f'<div id="live">{fragment(view)}</div>'
            f'<h2>Coverage, last hour</h2><div id="coverage">{charts}</div>'
            f"<script>{script}</script></body></html>")


def as_json(view: dict) -> Any:
    """``/api/status``: the view as it is (numbers, no HTML)."""
    return json.loads(json.dumps(view, default=str))
