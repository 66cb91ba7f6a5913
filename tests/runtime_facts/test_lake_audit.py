"""The lake against the receipts: Delta-log tampering is found by `doctor` and `receipts verify`."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from runtime_facts.cli.main import app
from runtime_facts.config import Settings
from runtime_facts.home import Home
from runtime_facts.ops.compact import compact
from runtime_facts.ops.lake_audit import audit_lake
from runtime_facts.ops.retention import apply_retention
from runtime_facts.pipeline.ingest import ingest
from runtime_facts.stores.lake import recent_name
from runtime_facts.subject import SubjectContext

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
runner = CliRunner()
FIRST = SubjectContext("acme", "cg-1", scan_id="first")
LAST = SubjectContext("acme", "cg-1", scan_id="last")
OTHER = SubjectContext("globex", "cg-1", scan_id="first")


def _put(home: Home, ctx: SubjectContext, symbols: str, at: str = "2026-11-25T10:00:00Z") -> None:
    lines = "".join(
        f'{{"symbolId":"sym:{s}","hitCount":{i + 1},"observedAt":"{at}"}}\n'
        for i, s in enumerate(symbols)
    )
    home.cas.put("runtime", gzip.compress(lines.encode(), mtime=0), ctx)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Two runs: facts of two tenants, then one more subject folded in the last commit."""
    home = Home(Settings.load(str(tmp_path / "home")))
    _put(home, FIRST, "abc")
    _put(home, OTHER, "xy")
    ingest(home, clock=lambda: NOW)
    _put(home, LAST, "pqrs")
    ingest(home, clock=lambda: NOW)
    return home.root


def _fresh(root: Path) -> Home:
    return Home(Settings.load(str(root)))


def _last_commit(root: Path, table: str) -> Path:
    return sorted((root / "lake" / table / "_delta_log").glob("*.json"))[-1]


def _drop_adds(commit: Path) -> int:
    lines = commit.read_bytes().splitlines(keepends=True)
    kept = [line for line in lines if "add" not in orjson.loads(line)]
    commit.write_bytes(b"".join(kept))
    return len(lines) - len(kept)


def _run(root: Path, *args: str) -> tuple[int, dict[str, Any]]:
    result = runner.invoke(app, ["--home", str(root), "--json", *args])
    return result.exit_code, json.loads(result.stdout)


def test_an_intact_lake_agrees_with_its_receipts(root: Path) -> None:
    home = _fresh(root)
    assert audit_lake(home, list(home.receipts)) == []
    code, doc = _run(root, "doctor")
    assert code == 0
    check = next(c for c in doc["checks"] if c["name"] == "lake_receipts")
    assert check["status"] == "ok"


def test_dropping_the_adds_of_the_last_facts_commit_is_named(root: Path) -> None:
    # The last fold appended the new rows of the keys it touched to the recent facts table.
    assert _drop_adds(_last_commit(root, recent_name("runtime_facts"))) >= 1
    findings = audit_lake(_fresh(root), list(_fresh(root).receipts))
    assert [(f.reason_code, f.tenant, f.subject_key) for f in findings] == [
        ("lake_facts_mismatch", "acme", "scan:last")
    ]
    assert "4 rows missing" in findings[0].reason
    code, doc = _run(root, "doctor")
    assert code == 3
    check = next(c for c in doc["checks"] if c["name"] == "lake_receipts")
    assert check["status"] == "fail"
    assert "scan:last" in check["summary"]
    code, doc = _run(root, "receipts", "verify")
    assert code == 3
    assert doc["first_break"]["reason_code"] == "lake_facts_mismatch"
    assert doc["first_break"]["tenant"] == "acme"


def test_dropping_the_adds_of_a_batch_commit_is_named(root: Path) -> None:
    _drop_adds(_last_commit(root, "runtime_fact_batches"))
    home = _fresh(root)
    codes = {(f.reason_code, f.subject_key) for f in audit_lake(home, list(home.receipts))}
    assert ("lake_batch_missing", "scan:last") in codes
    assert ("lake_facts_mismatch", "scan:last") in codes  # facts the batches no longer explain
    code, doc = _run(root, "receipts", "verify")
    assert code == 3
    assert doc["first_break"]["reason_code"] in {"lake_batch_missing", "lake_facts_mismatch"}


def test_a_removed_commit_file_is_a_missing_version(root: Path) -> None:
    home = _fresh(root)
    recorded = max(int(r["table_versions"]["runtime_fact_batches"]) for r in home.receipts)
    last = _last_commit(root, "runtime_fact_batches")
    assert last.name == f"{recorded:020d}.json"
    last.unlink()
    home = _fresh(root)
    findings = audit_lake(home, list(home.receipts))
    missing = [f for f in findings if f.reason_code == "lake_version_missing"]
    assert missing
    assert f"runtime_fact_batches version {recorded}" in missing[0].reason
    assert _run(root, "doctor")[0] == 3


def test_an_edited_counter_in_the_log_is_a_mismatch(root: Path) -> None:
    compact(_fresh(root), vacuum=False)  # every fact row in the base table, edited below
    commit = _last_commit(root, "runtime_facts")
    home = _fresh(root)
    facts = home.lake.read("runtime_facts", tenant="globex")
    edited = facts.with_columns(hit_count=facts.get_column("hit_count") * 2)
    home.lake.replace_where("runtime_facts", edited, "tenant = 'globex'")  # a rogue writer
    assert commit != _last_commit(root, "runtime_facts")
    findings = audit_lake(_fresh(root), list(_fresh(root).receipts))
    assert {(f.reason_code, f.tenant) for f in findings} >= {("lake_facts_mismatch", "globex")}


def test_facts_expired_by_retention_are_not_tampering(root: Path) -> None:
    home = _fresh(root)
    report = apply_retention(home, dry_run=False, now=NOW + timedelta(days=45))
    assert report.expired_facts == 9
    home = _fresh(root)
    assert home.lake.read("runtime_facts").is_empty()
    assert audit_lake(home, list(home.receipts)) == []
    assert _run(root, "doctor")[0] == 0
