"""Query, report and doctor on an s3:// home (moto's S3 server on 127.0.0.1)."""

from __future__ import annotations

import gzip
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest

from runtime_facts.config import Settings
from runtime_facts.home import Home
from runtime_facts.jobs.doctor import run_doctor
from runtime_facts.jobs.ingest import ingest
from runtime_facts.query import connect
from runtime_facts.report import build_report
from runtime_facts.subject import SubjectContext

NOW = datetime(2026, 11, 26, tzinfo=UTC)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = _free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture
def s3_home(s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Home:
    for key, value in {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
        "RUNTIME_FACTS_LOCAL_DIR": str(tmp_path / "local"),
    }.items():
        monkeypatch.setenv(key, value)
    bucket = f"rf-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    home = Home(Settings.load(f"s3://{bucket}/prod"))
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
