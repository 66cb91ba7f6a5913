"""`retention [--dry-run]`, `compact` and `doctor` from the command line."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tests.runtime_facts.cli.conftest import Cli, write_batch

NOW = "2026-11-26T12:00:00Z"
OLD = '{"symbolId":"sym:old","hitCount":1,"observedAt":"2020-01-01T00:00:00Z"}\n'
RECENT = '{"symbolId":"sym:new","hitCount":1,"observedAt":"2026-11-25T00:00:00Z"}\n'
DECIDED = ("expired_facts", "expired_facts_digest", "expired_facts_by_subject", "cas_deleted",
           "cas_deleted_bytes", "cas_kept", "facts_cutoff", "cas_cutoff")  # fmt: skip


def _stage_aged(cli: Cli, tmp_path: Path, home_dir: Path) -> tuple[str, str]:
    shas = []
    for name, text, scan in (("old", OLD, "s-old"), ("new", RECENT, "s-new")):
        batch = write_batch(tmp_path / f"{name}.ndjson.gz", text)
        run = cli("cas", "put", str(batch), "--tenant", "acme", "--callgraph-id", "cg-1",
                  "--scan-id", scan)  # fmt: skip
        shas.append(run.out.strip().rsplit("/", 1)[-1])
    assert cli("ingest").code == 0
    for sha in shas:  # both staged long ago: only live facts keep an object
        os.utime(home_dir / "cas" / "reachability" / "runtime" / sha, (1.5e9, 1.5e9))
    return shas[0], shas[1]


def _decisions(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: doc[k] for k in DECIDED}


def test_dry_run_lists_exactly_what_the_real_run_deletes(
    cli: Cli, tmp_path: Path, home_dir: Path
) -> None:
    old, new = _stage_aged(cli, tmp_path, home_dir)
    dry = cli("--json", "retention", "--dry-run", "--now", NOW)
    assert dry.code == 0, dry.out
    planned = json.loads(dry.out)
    assert [d["sha256"] for d in planned["cas_deleted"]] == [old]
    assert planned["expired_facts"] == 1
    assert (home_dir / "cas" / "reachability" / "runtime" / old).exists()  # nothing deleted
    text = cli("retention", "--dry-run", "--now", NOW)
    assert f"would delete cas://reachability/runtime/{old}" in text.out
    assert "would expire 1 facts of acme scan:s-old" in text.out
    assert "dry run: would delete 1 CAS objects" in text.out
    assert "and expire 1 facts (nothing changed)" in text.out
    real = json.loads(cli("--json", "retention", "--now", NOW).out)
    assert _decisions(real) == _decisions(planned)
    assert not (home_dir / "cas" / "reachability" / "runtime" / old).exists()
    assert (home_dir / "cas" / "reachability" / "runtime" / new).exists()


def test_retention_on_a_missing_home_exits_4(cli: Cli, tmp_path: Path) -> None:
    run = cli("retention", "--dry-run", home=tmp_path / "nonexistent")
    assert run.code == 4
    assert "[home_not_found]" in run.err


def test_retention_refuses_a_malformed_now(cli: Cli, home_dir: Path) -> None:
    home_dir.mkdir()
    assert cli("retention", "--dry-run", "--now", "yesterday").code == 2


def test_compact_on_a_missing_home_exits_4(cli: Cli, tmp_path: Path) -> None:
    assert cli("compact", home=tmp_path / "nonexistent").code == 4


def test_doctor_prints_the_home_in_use_first(cli: Cli, tmp_path: Path, home_dir: Path) -> None:
    batch = write_batch(tmp_path / "b.ndjson.gz")
    cli("cas", "put", str(batch), "--tenant", "acme", "--callgraph-id", "cg", "--scan-id", "s")
    run = cli("doctor")
    assert run.out.splitlines()[0] == f"home: {home_dir.resolve()}"
    doc = json.loads(cli("--json", "doctor").out)
    assert doc["home_uri"] == str(home_dir.resolve())


def test_doctor_on_a_missing_home_says_which_and_fails(cli: Cli, tmp_path: Path) -> None:
    missing = tmp_path / "typo"
    run = cli("doctor", home=missing)
    assert run.code == 3
    assert run.out.splitlines()[0] == f"home: {missing}"
    assert "does not exist" in run.out


def _put_as_is(home_dir: Path, path: Path) -> None:
    from runtime_facts.config import Settings
    from runtime_facts.home import Home
    from runtime_facts.subject import SubjectContext

    ctx = SubjectContext("acme", "cg", scan_id="s")
    Home(Settings.load(str(home_dir))).cas.put("runtime", path.read_bytes(), ctx)


def test_status_says_which_home_and_what_it_holds(cli: Cli, tmp_path: Path, home_dir: Path) -> None:
    subject = ("--tenant", "acme", "--callgraph-id", "cg", "--scan-id", "s")
    bad = write_batch(tmp_path / "bad.ndjson.gz", '{"hitCount":1}\n')
    assert cli("cas", "put", str(bad), *subject).code == 3  # staging refuses invalid lines
    _put_as_is(home_dir, bad)  # as a batch staged under an earlier policy would be
    assert cli("ingest").code == 3
    assert cli("cas", "put", str(write_batch(tmp_path / "good.ndjson.gz")), *subject).code == 0
    run = cli("status")
    assert run.code == 0
    lines = run.out.splitlines()
    assert lines[0] == f"home: {home_dir.resolve()}"
    assert "staged batches: 2 (1 pending ingest)" in lines
    assert "receipts: rejected 1" in lines
    doc = json.loads(cli("--json", "status").out)
    assert (doc["staged_batches"], doc["pending_batches"], doc["receipts"]) == (
        2,
        1,
        {"rejected": 1},
    )
    assert set(doc["table_versions"]) == {
        "runtime_facts", "runtime_fact_batches", "reachability_states", "ingest_receipts",
        "rejections",
    }  # fmt: skip


def test_status_of_a_missing_home_exits_4(cli: Cli, tmp_path: Path) -> None:
    run = cli("status", home=tmp_path / "typo")
    assert run.code == 4
    assert f"no home at {tmp_path / 'typo'}" in run.err
