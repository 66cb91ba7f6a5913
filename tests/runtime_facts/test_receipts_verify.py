"""Receipts verification: the hash chain, and the ingest_receipts table against the log."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import orjson
import polars as pl
import pytest
from typer.testing import CliRunner

from runtime_facts.cli.main import app
from runtime_facts.home import Home
from runtime_facts.ops.receipts_verify import verify_receipts
from runtime_facts.pipeline.ingest import ingest

Stage = Callable[..., str]
Clock = Callable[[], datetime]


@pytest.fixture
def ingested(home: Home, stage: Stage, clock: Clock) -> Home:
    """Three receipts: two accepted batches and one rejected."""
    stage('{"symbolId":"a","hitCount":1}\n')
    stage('{"symbolId":"b","hitCount":2}\n')
    stage('{"symbolId":"c","hitCount":"x"}\n')
    ingest(home, clock=clock)
    assert home.receipts.count() == 3
    return home


def _log_lines(home: Home) -> list[bytes]:
    return home.receipts.path.read_bytes().splitlines(keepends=True)


def _write_lines(home: Home, lines: list[bytes]) -> None:
    home.receipts.path.write_bytes(b"".join(lines))


def test_intact_trail_verifies(ingested: Home) -> None:
    report = verify_receipts(ingested)
    assert report.ok
    assert (report.receipts, report.table_checked, report.table_rows) == (3, True, 3)


def test_empty_home_verifies(home: Home) -> None:
    report = verify_receipts(home)
    assert report.ok
    assert report.receipts == 0


@pytest.mark.parametrize("line", [1, 2, 3])
@pytest.mark.parametrize("where", [0.1, 0.5, 0.9])
def test_one_changed_byte_in_any_receipt_breaks_the_chain_there(
    ingested: Home, line: int, where: float
) -> None:
    lines = _log_lines(ingested)
    target = bytearray(lines[line - 1])
    target[int((len(target) - 1) * where)] ^= 0x01
    lines[line - 1] = bytes(target)
    _write_lines(ingested, lines)
    report = verify_receipts(ingested)
    assert not report.ok
    assert report.first_break is not None
    assert report.first_break.line_number == line
    assert report.first_break.reason_code == "receipt_chain_broken"


def test_removed_receipt_in_the_middle_breaks_the_chain(ingested: Home) -> None:
    lines = _log_lines(ingested)
    _write_lines(ingested, [lines[0], lines[2]])
    report = verify_receipts(ingested)
    assert report.first_break is not None
    assert report.first_break.line_number == 2
    assert "prev_receipt_sha256" in report.first_break.reason


def test_removed_last_receipt_is_caught_by_the_table(ingested: Home) -> None:
    _write_lines(ingested, _log_lines(ingested)[:-1])
    report = verify_receipts(ingested)
    assert report.first_break is not None
    assert report.first_break.reason_code == "receipts_table_mismatch"
    assert report.first_break.sequence == 3


def test_deleted_log_is_caught_by_the_table(ingested: Home) -> None:
    ingested.receipts.path.unlink()
    report = verify_receipts(ingested)
    assert report.first_break is not None
    assert report.first_break.sequence == 1


def test_edited_table_row_is_caught(ingested: Home) -> None:
    row = ingested.lake.read("ingest_receipts", where=pl.col("sequence") == 3)
    edited = row.with_columns(pl.lit("duplicate").alias("status"))
    ingested.lake.replace_where("ingest_receipts", edited, "sequence = 3")
    report = verify_receipts(ingested)
    assert report.first_break is not None
    assert report.first_break.reason_code == "receipts_table_mismatch"
    assert (report.first_break.sequence, report.first_break.line_number) == (3, 3)
    assert "status" in report.first_break.reason


def test_receipt_not_yet_mirrored_is_not_tampering(ingested: Home) -> None:
    last = ingested.receipts.last()
    assert last is not None
    draft = {k: v for k, v in last.items() if k not in ("sequence", "receipt_sha256")}
    ingested.receipts.append({**draft, "status": "duplicate"})
    report = verify_receipts(ingested)
    assert report.ok
    assert report.unmirrored == 1


def test_synced_back_log_is_verified_on_its_own(ingested: Home, tmp_path: Path) -> None:
    synced = tmp_path / "synced.log"
    synced.write_bytes(ingested.receipts.path.read_bytes())
    report = verify_receipts(ingested, synced)
    assert report.ok
    assert not report.table_checked


def test_cli_exit_codes(ingested: Home, tmp_path: Path) -> None:
    runner = CliRunner()
    home_args = ["--home", str(ingested.root)]
    result = runner.invoke(app, ["receipts", "verify", *home_args])
    assert result.exit_code == 0, result.output
    assert "receipts ok: 3 receipts" in result.output
    synced = tmp_path / "synced.log"
    lines = _log_lines(ingested)
    tampered = lines[1].replace(b'"line_count":1', b'"line_count":7')
    assert tampered != lines[1]
    synced.write_bytes(lines[0] + tampered + lines[2])
    result = runner.invoke(app, ["receipts", "verify", str(synced), *home_args, "--json"])
    assert result.exit_code == 3
    doc = orjson.loads(result.stdout)
    assert (doc["ok"], doc["first_break"]["line_number"]) == (False, 2)
    result = runner.invoke(app, ["receipts", "verify", str(synced), *home_args])
    assert result.exit_code == 3
    assert "line 2" in result.output
    result = runner.invoke(app, ["receipts", "verify", str(tmp_path / "none.log"), *home_args])
    assert result.exit_code == 4
    assert "receipts_log_missing" in result.output


def test_each_tenants_chain_is_mirrored_and_compared_on_its_own(
    home: Home, stage: Stage, clock: Clock
) -> None:
    from runtime_facts.subject import SubjectContext

    stage('{"symbolId":"a","hitCount":1}\n')
    stage('{"symbolId":"g","hitCount":1}\n', SubjectContext("globex", "cg-1", scan_id="s-1"))
    stage('{"symbolId":"b","hitCount":1}\n')
    ingest(home, clock=clock)
    table = home.lake.table("ingest_receipts")
    assert table.transaction_version("runtime-facts.receipts/acme") == 2
    assert table.transaction_version("runtime-facts.receipts/globex") == 1
    report = verify_receipts(home)
    assert (report.ok, report.chains, report.table_rows) == (True, 2, 3)
    lines = _log_lines(home)
    last_acme = max(i for i, ln in enumerate(lines) if b'"tenant":"acme"' in ln)
    _write_lines(home, [ln for i, ln in enumerate(lines) if i != last_acme])
    report = verify_receipts(home)
    assert report.first_break is not None
    assert (report.first_break.reason_code, report.first_break.tenant) == (
        "receipts_table_mismatch",
        "acme",
    )
    assert report.first_break.sequence == 2


def test_a_home_with_a_log_from_before_per_tenant_chains_keeps_verifying(
    home: Home, stage: Stage, clock: Clock
) -> None:
    import hashlib

    from runtime_facts.pipeline.ledger import RECEIPTS_APP, receipt_rows
    from runtime_facts.stores.chain import GENESIS, canonical_json

    prev, old = GENESIS, []
    for i, tenant in enumerate(["acme", "globex", "acme"], start=1):
        body = {
            "batch_sha256": hashlib.sha256(f"old-{i}".encode()).hexdigest(),
            "status": "rejected",
            "tenant": tenant,
            "sequence": i,
            "prev_receipt_sha256": prev,
            "line_count": 1,
            "reason_codes": ["invalid_gzip"],
        }
        body["receipt_sha256"] = hashlib.sha256(canonical_json(body)).hexdigest()
        prev = body["receipt_sha256"]
        old.append(body)
    home.receipts.path.parent.mkdir(parents=True)
    home.receipts.path.write_bytes(b"".join(canonical_json(r) + b"\n" for r in old))
    home.ensure_lake()
    home.lake.append("ingest_receipts", receipt_rows(old), txn=(RECEIPTS_APP, 3))
    stage('{"symbolId":"a","hitCount":1}\n')
    ingest(home, clock=clock)  # the new code appends onto acme's own chain
    new = home.receipts.last("acme")
    assert new is not None
    assert (new["sequence"], new["chain_scope"]) == (1, "tenant")
    report = verify_receipts(home)
    assert report.ok, report.findings
    assert (report.receipts, report.chains, report.table_rows) == (4, 2, 4)
    lines = _log_lines(home)
    _write_lines(home, [lines[0], lines[2], lines[3]])
    report = verify_receipts(home)
    assert report.first_break is not None
    assert report.first_break.line_number == 2


def test_cli_export_writes_the_log_once(ingested: Home, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "usb" / "signals-runtime-ingest.log"
    args = ["receipts", "export", str(out), "--home", str(ingested.root)]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout)["receipts"] == 3
    assert out.read_bytes() == ingested.receipts.path.read_bytes()
    result = runner.invoke(app, ["receipts", "verify", str(out), "--home", str(ingested.root)])
    assert result.exit_code == 0
    assert "3 receipts in 1 chain," in result.output
    again = runner.invoke(app, args)
    assert again.exit_code == 2
    assert "kit_output_exists" in again.output
