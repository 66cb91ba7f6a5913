"""`runtime-facts report`: one self-contained HTML page about a home (or one tenant of it).

Everything is read through the offline SQL views (`runtime_facts.analyst.query`) and drawn
as inline SVG (`runtime_facts.analyst.svg`): the page fetches nothing, runs no script, and is
byte-for-byte the same for the same tables, receipts log and `now`.
"""

from __future__ import annotations

from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any

from runtime_facts import __version__
from runtime_facts.analyst.query import AsOf, connect
from runtime_facts.analyst.report_data import ReportData, collect
from runtime_facts.analyst.svg import (
    bar_chart,
    fmt_number,
    line_chart,
    stacked_bars,
    stacked_columns,
)
from runtime_facts.home import Home

STATES: tuple[tuple[str, str, str], ...] = (
    ("U", "Unknown", "#9ca3af"),
    ("SR", "StaticallyReachable", "#93c5fd"),
    ("SU", "StaticallyUnreachable", "#cbd5e1"),
    ("RO", "RuntimeObserved", "#38bdf8"),
    ("RU", "RuntimeUnobserved", "#94a3b8"),
    ("CR", "ConfirmedReachable", "#16a34a"),
    ("CU", "ConfirmedUnreachable", "#475569"),
    ("X", "Contested", "#dc2626"),
)
STATUS_COLORS = (("accepted", "#16a34a"), ("rejected", "#dc2626"), ("duplicate", "#9ca3af"))
CHARTS = (
    "events-per-day",
    "batches-per-day",
    "rejected-lines-by-reason",
    "rejected-batches-by-reason",
    "states-per-subject",
    "top-symbols",
)
"""`data-chart` ids of every chart the page can hold (a section without data has none)."""

CSS = """
body{font:14px/1.45 system-ui,'DejaVu Sans',sans-serif;margin:24px auto;max-width:820px;
color:#111827;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid
#e5e7eb;padding-bottom:4px}.meta{color:#6b7280;margin:0 0 16px}
.cards{display:flex;flex-wrap:wrap;gap:8px}.card{border:1px solid #e5e7eb;border-radius:6px;
padding:8px 12px;min-width:110px}.card b{display:block;font-size:18px}
.card span{color:#6b7280;font-size:12px}figure{margin:8px 0}figcaption{color:#6b7280;
font-size:12px}table{border-collapse:collapse;margin:8px 0;font-size:13px}
td,th{border-bottom:1px solid #e5e7eb;padding:3px 8px;text-align:left}td.num{text-align:right}
.empty{color:#6b7280;font-style:italic}.ok{color:#166534;font-weight:600}
.broken{color:#b91c1c;font-weight:600}code{font-size:12px}svg{max-width:100%;height:auto}
"""


def _section(title: str, body: str, section_id: str) -> str:
    return f'<section id="{section_id}">\n<h2>{escape(title)}</h2>\n{body}\n</section>'


def _figure(svg: str, caption: str) -> str:
    return f"<figure>\n{svg}\n<figcaption>{escape(caption)}</figcaption>\n</figure>"


def _empty(text: str) -> str:
    return f'<p class="empty">{escape(text)}</p>'


def _volume(data: ReportData) -> str:
    if not data.volume:
        return _empty("no receipts yet: nothing has been ingested")
    labels = [d["day"].isoformat() for d in data.volume]
    events = line_chart(
        labels,
        [("accepted events", [d["events"] for d in data.volume], "#2563eb")],
        chart_id="events-per-day",
        title="Accepted events per day (UTC)",
    )
    batches = stacked_columns(
        labels,
        [(s, [d[s] for d in data.volume], color) for s, color in STATUS_COLORS],
        chart_id="batches-per-day",
        title="Batch attempts per day by outcome (UTC)",
    )
    span = f"{labels[0]} to {labels[-1]}"
    return "\n".join(
        [
            _figure(events, f"Events in accepted batches per day, {span} (receipt finished_at)."),
            _figure(batches, f"Batch attempts per day by receipt status, {span}."),
        ]
    )


def _rejections(data: ReportData) -> str:
    parts = []
    if data.line_reasons:
        chart = bar_chart(
            data.line_reasons,
            chart_id="rejected-lines-by-reason",
            title="Rejected lines by reason code",
            color="#dc2626",
        )
        parts.append(_figure(chart, "Lines in the rejections table, by reason code."))
    if data.batch_reasons:
        chart = bar_chart(
            data.batch_reasons,
            chart_id="rejected-batches-by-reason",
            title="Rejected batches by reason code",
            color="#f97316",
        )
        parts.append(
            _figure(chart, "Rejected batch attempts (receipts) per reason code they carry.")
        )
    return "\n".join(parts) if parts else _empty("no rejections")


def _states(data: ReportData) -> str:
    if not data.states:
        return _empty("no states yet: run runtime-facts recompute, or ingest with a callgraph")
    chart = stacked_bars(
        data.states,
        [(f"{code} {name}", color) for code, name, color in STATES],
        chart_id="states-per-subject",
        title="Reachability state distribution per subject",
    )
    shown = len(data.states)
    note = (
        f" Showing the {shown} largest of {data.subjects_total} subjects."
        if data.subjects_total > shown
        else ""
    )
    return _figure(chart, f"Share of symbols in each lattice state, per subject.{note}")


def _top_symbols(data: ReportData) -> str:
    if not data.top_symbols:
        return _empty("no facts yet")
    chart = bar_chart(
        [(r["symbol_id"], r["hits"]) for r in data.top_symbols],
        chart_id="top-symbols",
        title="Top observed symbols by hit count",
        color="#0891b2",
    )
    rows = "\n".join(
        f"<tr><td><code>{escape(r['symbol_id'])}</code></td>"
        f'<td class="num">{fmt_number(r["hits"])}</td>'
        f'<td class="num">{r["subjects"]}</td>'
        f"<td>{escape(_iso(r['last_observed_at']))}</td></tr>"
        for r in data.top_symbols
    )
    table = (
        "<table><thead><tr><th>symbol_id</th><th>hits</th><th>subjects</th>"
        f"<th>last observed</th></tr></thead><tbody>\n{rows}\n</tbody></table>"
    )
    return _figure(chart, "Cumulative hit count over every subject.") + "\n" + table


def _iso(value: Any) -> str:
    if value is None or isinstance(value, str):  # text: a stored value beyond years 1-9999
        return value or ""
    return str(value.isoformat())


def _chain(data: ReportData) -> str:
    chain = data.chain
    if chain["ok"]:
        status = f'<p class="ok" data-chain="ok">ok: {chain["receipts"]} receipts verify</p>'
    else:
        first = chain["first_break"]
        status = (
            f'<p class="broken" data-chain="broken">broken at line {first["line"]}: '
            f"{escape(first['reason'])} ({chain['receipts']} receipts verify before it)</p>"
        )
    return (
        f"{status}\n<p>Log: <code>{escape(chain['log'])}</code>. The whole chain is checked; "
        "<code>runtime-facts receipts verify</code> also compares it with ingest_receipts.</p>"
    )


def _cards(data: ReportData) -> str:
    s = data.summary
    items = [
        ("batches accepted", s["accepted"]),
        ("batches rejected", s["rejected"]),
        ("events", s["events"]),
        ("fact keys", s["fact_keys"]),
        ("symbols", s["symbols"]),
        ("subjects", s["subjects"]),
        ("hits", s["hits"]),
    ]
    cards = "".join(
        f'<div class="card"><b>{fmt_number(v)}</b><span>{escape(k)}</span></div>' for k, v in items
    )
    return f'<div class="cards">{cards}</div>'


def render_html(data: ReportData) -> str:
    """The page as one string."""
    scope = f"tenant {data.tenant}" if data.tenant else "all tenants"
    versions = ", ".join(f"{k} v{v}" for k, v in data.versions.items())
    generated = data.now.isoformat()
    sections = [
        _section("Ingestion volume", _volume(data), "volume"),
        _section("Rejections by reason", _rejections(data), "rejections"),
        _section("Reachability states per subject", _states(data), "states"),
        _section("Top observed symbols", _top_symbols(data), "symbols"),
        _section("Receipt chain", _chain(data), "receipts"),
    ]
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
            "style-src 'unsafe-inline'; img-src data:\">",
            f"<title>runtime-facts report · {escape(scope)}</title>",
            f"<style>{CSS}</style>",
            "</head>",
            "<body>",
            f"<h1>Runtime facts · {escape(scope)}</h1>",
            f'<p class="meta">Generated {escape(generated)} by runtime-facts '
            f"{escape(__version__)} from <code>{escape(data.home)}</code> "
            f"({escape(versions)}).</p>",
            _cards(data),
            *sections,
            "</body>",
            "</html>",
            "",
        ]
    )


def build_report(
    home: Home, *, tenant: str | None, now: datetime, as_of: AsOf = None, top: int = 15
) -> str:
    """The report's HTML for a home, or one tenant of it, as of now (or a past version)."""
    with connect(home, tenant=tenant, as_of=as_of) as conn:
        data = collect(conn, home, tenant=tenant, now=now, top=top)
    return render_html(data)


def write_report(
    home: Home,
    out: Path,
    *,
    tenant: str | None,
    now: datetime,
    as_of: AsOf = None,
    top: int = 15,
) -> dict[str, Any]:
    """Write the report and say what it holds (path, bytes, chart ids)."""
    page = build_report(home, tenant=tenant, now=now, as_of=as_of, top=top)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    charts = [c for c in CHARTS if f'data-chart="{c}"' in page]
    return {"path": str(out), "bytes": len(page.encode()), "charts": charts, "tenant": tenant}
