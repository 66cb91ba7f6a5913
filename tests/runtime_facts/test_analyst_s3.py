"""Query, report and doctor on an s3:// home (moto's S3 server on 127.0.0.1)."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime

import pytest

from runtime_facts.analyst.query import connect
from runtime_facts.analyst.report import build_report
from runtime_facts.home import Home
from runtime_facts.ops.doctor import run_doctor
from runtime_facts.pipeline.ingest import ingest
from runtime_facts.subject import SubjectContext

NOW = datetime(2026, 11, 26, tzinfo=UTC)


@pytest.fixture
def s3_home(s3_home: Home) -> Home:
    """The shared empty S3 home, with one batch ingested for each of two tenants."""
    home = s3_home
    for tenant in ("acme", "globex"):
        data = gzip.compress(f'{{"symbolId":"sym:{tenant}","hitCount":2}}\n'.encode(), mtime=0)
        home.cas.put("runtime", data, SubjectContext(tenant, "cg-1", scan_id="s-1"))
    ingest(home, clock=lambda: NOW)
    return home


def test_query_report_and_doctor_over_s3(s3_home: Home) -> None:
    with connect(s3_home, tenant="acme") as conn:
        rows = conn.sql("SELECT tenant, symbol_id, hit_count FROM runtime_facts").table.to_pylist()
        receipts = conn.sql("SELECT count(*) AS n FROM ingest_receipts").table.to_pylist()
    assert rows == [{"tenant": "acme", "symbol_id": "sym:acme", "hit_count": 2}]
    assert receipts == [{"n": 1}]
    page = build_report(s3_home, tenant="acme", now=NOW)
    assert 'data-chain="ok"' in page
    assert "sym:globex" not in page
    report = run_doctor(s3_home, now=NOW)
    assert report.ok, report.to_dict()
    assert [c.status for c in report.checks[:4]] == ["ok", "ok", "ok", "ok"]
