"""The numbers behind `runtime-facts report`: SQL over the offline views, aggregated.

Every query orders its rows completely, so the same tables give the same data, in the same
order; `now` is passed in, never read here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from runtime_facts.analyst.query import FactsConnection
from runtime_facts.home import Home
from runtime_facts.readable import readable_table
from runtime_facts.stores.receipts import verify_chain

MAX_DAYS = 90
"""The volume charts show at most the last 90 days that have receipts."""
MAX_SUBJECTS = 25
STATE_CODES = ("U", "SR", "SU", "RO", "RU", "CR", "CU", "X")
"""The lattice states, bottom to top (SPEC §5)."""

SQL_VOLUME = """
SELECT CAST(finished_at AS DATE) AS day,
       count(*) FILTER (WHERE status = 'accepted') AS accepted,
       count(*) FILTER (WHERE status = 'rejected') AS rejected,
       count(*) FILTER (WHERE status = 'duplicate') AS duplicate,
       coalesce(sum(accepted_count) FILTER (WHERE status = 'accepted'), 0) AS events
FROM ingest_receipts
WHERE finished_at IS NOT NULL
GROUP BY day ORDER BY day
"""
SQL_LINE_REASONS = """
SELECT reason_code, count(*) AS n FROM rejections GROUP BY reason_code ORDER BY n DESC, reason_code
"""
SQL_BATCH_REASONS = """
SELECT reason, count(*) AS n
FROM (SELECT unnest(reason_codes) AS reason FROM ingest_receipts WHERE status = 'rejected')
GROUP BY reason ORDER BY n DESC, reason
"""
SQL_STATES = """
SELECT callgraph_id, subject_key, state, count(*) AS n
FROM reachability_states GROUP BY ALL ORDER BY ALL
"""
SQL_TOP_SYMBOLS = """
SELECT symbol_id, sum(hit_count) AS hits, count(DISTINCT subject_key) AS subjects,
       max(last_observed_at) AS last_observed_at
FROM runtime_facts GROUP BY symbol_id ORDER BY hits DESC, symbol_id LIMIT {top}
"""
SQL_SUMMARY = """
SELECT (SELECT count(*) FROM ingest_receipts) AS receipts,
       (SELECT count(*) FROM ingest_receipts WHERE status = 'accepted') AS accepted,
       (SELECT count(*) FROM ingest_receipts WHERE status = 'rejected') AS rejected,
       (SELECT coalesce(sum(accepted_count), 0) FROM ingest_receipts
         WHERE status = 'accepted') AS events,
       (SELECT count(*) FROM runtime_facts) AS fact_keys,
       (SELECT count(DISTINCT symbol_id) FROM runtime_facts) AS symbols,
       (SELECT count(DISTINCT subject_key) FROM runtime_facts) AS subjects,
       (SELECT coalesce(sum(hit_count), 0) FROM runtime_facts) AS hits
"""


@dataclass
class ReportData:
    """Everything the page shows, already aggregated."""

    tenant: str | None
    now: datetime
    home: str
    versions: dict[str, int]
    summary: dict[str, int]
    volume: list[dict[str, Any]]
    line_reasons: list[tuple[str, int]]
    batch_reasons: list[tuple[str, int]]
    states: list[tuple[str, list[int]]]
    subjects_total: int
    top_symbols: list[dict[str, Any]]
    chain: dict[str, Any] = field(default_factory=dict)


def _rows(conn: FactsConnection, sql: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = readable_table(conn.sql(sql).table, "report").to_pylist()
    return rows


def _int(value: Any) -> int:
    return int(value or 0)


def receipt_lines(home: Home) -> Iterator[bytes]:
    """The raw lines of the home's receipts log, in stream order."""
    yield from home.receipts.lines()


def chain_status(home: Home) -> dict[str, Any]:
    """Hash-chain check of the home's receipts log: ok, or the first broken link."""
    count, broken = verify_chain(receipt_lines(home))
    first = None if broken is None else {"line": broken.line_number, "reason": broken.reason}
    return {
        "ok": broken is None,
        "receipts": count,
        "log": home.receipts.location,
        "first_break": first,
    }


def fill_days(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per day from the first to the last (at most MAX_DAYS), zeros where idle."""
    if not rows:
        return []
    by_day = {row["day"]: row for row in rows}
    last: date = max(by_day)
    first: date = max(min(by_day), last - timedelta(days=MAX_DAYS - 1))
    zero = {"accepted": 0, "rejected": 0, "duplicate": 0, "events": 0}
    days = []
    for i in range((last - first).days + 1):
        day = first + timedelta(days=i)
        row = by_day.get(day, zero)
        days.append({"day": day, **{k: _int(row[k]) for k in zero}})
    return days


def collect(
    conn: FactsConnection, home: Home, *, tenant: str | None, now: datetime, top: int = 15
) -> ReportData:
    """Run the report's queries on an open connection."""
    summary = {k: _int(v) for k, v in _rows(conn, SQL_SUMMARY)[0].items()}
    per_subject: dict[str, dict[str, int]] = {}
    for row in _rows(conn, SQL_STATES):
        label = f"{row['subject_key']} · {row['callgraph_id']}"
        per_subject.setdefault(label, {})[row["state"]] = _int(row["n"])
    ranked = sorted(per_subject.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
    states = [(label, [c.get(s, 0) for s in STATE_CODES]) for label, c in ranked[:MAX_SUBJECTS]]
    return ReportData(
        tenant=tenant,
        now=now,
        home=str(home.root),
        versions=dict(conn.versions),
        summary=summary,
        volume=fill_days(_rows(conn, SQL_VOLUME)),
        line_reasons=[(r["reason_code"], _int(r["n"])) for r in _rows(conn, SQL_LINE_REASONS)],
        batch_reasons=[(r["reason"], _int(r["n"])) for r in _rows(conn, SQL_BATCH_REASONS)],
        states=states,
        subjects_total=len(per_subject),
        top_symbols=[
            {**r, "hits": _int(r["hits"]), "subjects": _int(r["subjects"])}
            for r in _rows(conn, SQL_TOP_SYMBOLS.format(top=int(top)))
        ],
        chain=chain_status(home),
    )
