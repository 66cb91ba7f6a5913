"""`runtime-facts doctor`: healthy homes pass, each kind of damage fails with exit 3."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from runtime_facts.cli.main import app
from runtime_facts.config import Settings
from runtime_facts.home import Home
from runtime_facts.ops.doctor import redact, run_doctor
from runtime_facts.pipeline.ingest import ingest
from runtime_facts.subject import SubjectContext
from tests.runtime_facts.analyst_fixtures import FixtureHome, shared_fixture_home

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
runner = CliRunner()


@pytest.fixture(scope="module")
def facts(tmp_path_factory: pytest.TempPathFactory) -> FixtureHome:
    return shared_fixture_home(tmp_path_factory)


def _home(root: Path, batches: int = 2) -> Home:
    home = Home(Settings.load(str(root)))
    for i in range(batches):
        data = gzip.compress(f'{{"symbolId":"sym:{i}","hitCount":1}}\n'.encode(), mtime=0)
        home.cas.put("runtime", data, SubjectContext("acme", "cg-1", scan_id="s-1"))
    ingest(home, clock=lambda: NOW)
    return home


def _doctor(root: Path, *args: str) -> tuple[int, dict[str, Any]]:
    result = runner.invoke(app, ["--home", str(root), "--json", "doctor", *args])
    return result.exit_code, json.loads(result.stdout)


def _check(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in doc["checks"] if c["name"] == name)


def test_healthy_home_passes(facts: FixtureHome) -> None:
    code, doc = _doctor(facts.home.root)
    assert code == 0
    assert doc["ok"] is True
    assert [c["name"] for c in doc["checks"]] == [
        "home",
        "cas",
        "lake",
        "receipts",
        "lake_receipts",
        "metrics",
        "config",
    ]
    assert {c["status"] for c in doc["checks"]} <= {"ok", "warn"}
    lake = _check(doc, "lake")["details"]["tables"]
    assert lake["runtime_facts"] == {
        "version": facts.home.lake.version("runtime_facts"),  # one fold commit per tenant
        "files": lake["runtime_facts"]["files"],
        "rows": 10,  # as readers see them: the base and the recent rows merged
        "recent_files": lake["runtime_facts"]["recent_files"],
        "recent_rows": 11,  # every fold's new rows, one key folded twice
    }
    assert _check(doc, "receipts")["details"]["receipts"] == 5
    assert _check(doc, "cas")["details"]["sampled"] == 6  # 5 batches + 1 callgraph, all sampled


def test_text_output_lists_checks_and_configuration(facts: FixtureHome) -> None:
    result = runner.invoke(app, ["--home", str(facts.home.root), "doctor", "--sample", "2"])
    assert result.exit_code == 0
    assert "2 of 6 objects rehashed: all match" in result.stdout
    assert "ingest.max_batch_bytes = 10485760" in result.stdout


def test_sample_is_seeded(facts: FixtureHome) -> None:
    first = run_doctor(facts.home, sample=2, seed=7, now=NOW).to_dict()
    second = run_doctor(facts.home, sample=2, seed=7, now=NOW).to_dict()
    assert first == second


def test_missing_home_exits_3(tmp_path: Path) -> None:
    code, doc = _doctor(tmp_path / "nowhere")
    assert code == 3
    assert _check(doc, "home")["status"] == "fail"
    assert "does not exist" in _check(doc, "home")["summary"]
    assert _check(doc, "lake")["status"] == "skip"
    assert not (tmp_path / "nowhere").exists()  # the doctor creates nothing


def test_fresh_home_only_warns(tmp_path: Path) -> None:
    (tmp_path / "fresh").mkdir()
    code, doc = _doctor(tmp_path / "fresh")
    assert code == 0
    assert _check(doc, "lake")["status"] == "warn"
    assert _check(doc, "cas")["summary"] == "no CAS objects yet"


def test_corrupt_cas_object_exits_3(tmp_path: Path) -> None:
    home = _home(tmp_path / "h")
    sha = next(home.cas.list("runtime"))
    (home.root / "cas" / "reachability" / "runtime" / sha).write_bytes(b"tampered")
    code, doc = _doctor(home.root)
    assert code == 3
    cas = _check(doc, "cas")
    assert cas["status"] == "fail"
    assert cas["details"]["bad"] == [
        {"uri": f"cas://reachability/runtime/{sha}", "reason": "cas_digest_mismatch"}
    ]
    assert "cas verify --all" in cas["hint"]


def test_broken_receipts_chain_exits_3(tmp_path: Path) -> None:
    home = _home(tmp_path / "h")
    lines = home.receipts.path.read_text().splitlines()
    home.receipts.path.write_text(lines[1] + "\n")  # the first receipt was cut out
    code, doc = _doctor(home.root)
    assert code == 3
    receipts = _check(doc, "receipts")
    assert receipts["details"]["first_break"]["line"] == 1
    assert "prev_receipt_sha256" in receipts["summary"]


def test_missing_table_exits_3(tmp_path: Path) -> None:
    home = _home(tmp_path / "h", batches=1)
    log = home.root / "lake" / "rejections" / "_delta_log"
    for entry in log.iterdir():
        entry.unlink()
    log.rmdir()
    code, doc = _doctor(home.root)
    assert code == 3
    assert "rejections" in _check(doc, "lake")["summary"]


def test_unwritable_home_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = _home(tmp_path / "h", batches=1)

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("runtime_facts.ops.doctor.tempfile.mkstemp", refuse)
    report = run_doctor(home, now=NOW)
    assert not report.ok
    assert report.checks[0].summary.endswith("is not writable: Permission denied")


def test_redact_hides_secret_looking_settings() -> None:
    settings = {"serve": {"airflow_token": "abc", "token_file": None, "port": 8080}}
    assert redact(settings) == {"serve": {"airflow_token": "***", "token_file": None, "port": 8080}}


def test_metrics_file_is_checked_against_the_receipts(tmp_path: Path) -> None:
    from runtime_facts.pipeline.publish import write_metrics

    home = _home(tmp_path / "h", batches=1)
    assert run_doctor(home, now=NOW).checks[5].status == "warn"  # not written yet
    write_metrics(home)
    metrics = run_doctor(home, now=NOW).checks[5]
    assert (metrics.status, metrics.details["batches_counted"]) == ("ok", 1)
    data = gzip.compress(b'{"symbolId":"sym:late","hitCount":1}\n', mtime=0)
    home.cas.put("runtime", data, SubjectContext("acme", "cg-1", scan_id="s-1"))
    ingest(home, clock=lambda: NOW)
    stale = run_doctor(home, now=NOW).checks[5]
    assert stale.status == "warn"
    assert "counts 1 of 2 receipts: stale" in stale.summary
