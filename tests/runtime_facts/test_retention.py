"""Retention (SPEC §7) without Airflow: what expires, what is kept and why, dry run == real run."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import polars as pl
import pytest

from runtime_facts.errors import RejectedError
from runtime_facts.home import Home
from runtime_facts.ops.retention import RETENTION_LOG, apply_retention
from runtime_facts.pipeline.ingest import ingest
from runtime_facts.stores.cas import cas_uri
from runtime_facts.stores.graphs import compiled_graph_dir, current_graph_sha, stage_graph
from runtime_facts.stores.receipts import verify_chain
from runtime_facts.subject import SubjectContext

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
OLD = SubjectContext("acme", "cg-old", scan_id="old")
FRESH = SubjectContext("acme", "cg-fresh", scan_id="fresh")
Stage = Callable[..., str]


def _events(prefix: str, observed: datetime, n: int = 3) -> str:
    stamp = observed.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return "".join(
        orjson.dumps(
            {"symbolId": f"sym:{prefix}:{i}", "hitCount": i + 1, "observedAt": stamp}
        ).decode()
        + "\n"
        for i in range(n)
    )


def _age(home: Home, kind: str, sha: str, days: float) -> None:
    ts = (NOW - timedelta(days=days)).timestamp()
    os.utime(home.root / "cas" / "reachability" / kind / sha, (ts, ts))


def _ingest(home: Home) -> None:
    ingest(home, clock=lambda: NOW)


@pytest.fixture
def aged(home: Home, stage: Stage) -> dict[str, str]:
    """An expired subject and a fresh one, both batches staged 200 days ago."""
    old = stage(_events("old", NOW - timedelta(days=60)), OLD)
    fresh = stage(_events("fresh", NOW - timedelta(days=1)), FRESH)
    _ingest(home)
    for sha in (old, fresh):
        _age(home, "runtime", sha, 200)
    return {"old": old, "fresh": fresh}


def _cas(home: Home) -> set[str]:
    return set(home.cas.list("runtime"))


def test_dry_run_lists_exactly_what_the_real_run_deletes(home: Home, aged: dict[str, str]) -> None:
    before = home.lake.read("runtime_facts")

    dry = apply_retention(home, dry_run=True, now=NOW)

    assert home.lake.read("runtime_facts").equals(before)
    assert _cas(home) == set(aged.values())
    assert not (home.root / RETENTION_LOG).exists()
    real = apply_retention(home, dry_run=False, now=NOW)
    assert real == dry
    assert (dry.dry_run, real.dry_run) == (True, False)
    assert real.expired_facts == 3
    assert real.expired_facts_by_subject == [
        {"tenant": "acme", "callgraph_id": "cg-old", "subject_key": "scan:old", "facts": 3}
    ]
    assert [d["sha256"] for d in real.cas_deleted] == [aged["old"]]
    assert real.cas_kept == {cas_uri("runtime", aged["fresh"]): "live_fact"}


def test_real_run_deletes_expired_facts_and_unreferenced_objects(
    home: Home, aged: dict[str, str]
) -> None:
    apply_retention(home, dry_run=False, now=NOW)

    facts = home.lake.read("runtime_facts")
    assert facts.get_column("subject_key").unique().to_list() == ["scan:fresh"]
    assert _cas(home) == {aged["fresh"]}
    assert not (home.root / "cas/reachability/runtime" / f"{aged['old']}.context.json").exists()
    # Batch rows stay: the old batch, staged again, is still a duplicate.
    batches = home.lake.read("runtime_fact_batches").get_column("batch_sha256").unique()
    assert set(batches.to_list()) == set(aged.values())


def test_every_deletion_is_recorded_first_in_a_hash_chained_log(
    home: Home, aged: dict[str, str]
) -> None:
    report = apply_retention(home, dry_run=False, now=NOW)

    log = home.root / RETENTION_LOG
    records = [orjson.loads(line) for line in log.read_bytes().splitlines()]
    assert len(records) == 1
    assert records[0]["cas_deleted"] == report.cas_deleted
    assert records[0]["cas_deleted"][0]["cas_uri"] == cas_uri("runtime", aged["old"])
    assert records[0]["expired_facts"] == 3
    assert records[0]["expired_facts_digest"] == report.expired_facts_digest
    assert verify_chain(iter(log.read_bytes().splitlines())) == (1, None)


def test_a_second_run_deletes_nothing(home: Home, aged: dict[str, str]) -> None:
    apply_retention(home, dry_run=False, now=NOW)
    version = home.lake.version("runtime_facts")

    again = apply_retention(home, dry_run=False, now=NOW)

    assert (again.expired_facts, again.cas_deleted) == (0, [])
    assert home.lake.version("runtime_facts") == version
    assert len((home.root / RETENTION_LOG).read_bytes().splitlines()) == 1


def test_objects_younger_than_the_cas_window_are_not_considered(home: Home, stage: Stage) -> None:
    sha = stage(_events("old", NOW - timedelta(days=60)), OLD)
    _ingest(home)
    _age(home, "runtime", sha, 179)

    report = apply_retention(home, dry_run=False, now=NOW)

    assert report.expired_facts == 3
    assert (report.cas_deleted, report.cas_kept) == ([], {})
    assert _cas(home) == {sha}


def test_a_held_replay_manifest_keeps_its_objects(home: Home, aged: dict[str, str]) -> None:
    held = home.path("replay", "held", "audit-2026.json")
    uri = cas_uri("runtime", aged["old"])
    manifest = {"reachability": {"graphs": [], "runtimeTraces": [{"casUri": uri}]}}
    held.write_bytes(orjson.dumps(manifest))

    report = apply_retention(home, dry_run=False, now=NOW)

    assert report.expired_facts == 3
    assert report.cas_deleted == []
    assert report.cas_kept[uri] == "held_manifest"
    assert aged["old"] in _cas(home)


def test_an_unreadable_held_manifest_stops_retention(home: Home, aged: dict[str, str]) -> None:
    home.path("replay", "held", "broken.json").write_text("{not json")
    version = home.lake.version("runtime_facts")

    with pytest.raises(RejectedError) as info:
        apply_retention(home, dry_run=False, now=NOW)

    assert info.value.reason == "invalid_replay_manifest"
    assert home.lake.version("runtime_facts") == version
    assert _cas(home) == set(aged.values())


def test_a_batch_never_ingested_is_kept(home: Home, stage: Stage) -> None:
    sha = stage(_events("late", NOW - timedelta(days=60)), OLD)
    _age(home, "runtime", sha, 365)

    report = apply_retention(home, dry_run=False, now=NOW)

    assert report.cas_kept == {cas_uri("runtime", sha): "not_ingested"}
    assert _cas(home) == {sha}


def test_an_old_rejected_batch_is_deleted(home: Home, stage: Stage) -> None:
    sha = stage('{"hitCount": 1}\n', OLD)
    _ingest(home)
    _age(home, "runtime", sha, 365)

    report = apply_retention(home, dry_run=False, now=NOW)

    assert [d["sha256"] for d in report.cas_deleted] == [sha]
    assert _cas(home) == set()


def test_a_batch_committed_but_not_folded_yet_is_kept(home: Home, stage: Stage) -> None:
    sha = stage(_events("new", NOW - timedelta(days=60)), OLD)
    ingest(home, fold=False, clock=lambda: NOW)
    _age(home, "runtime", sha, 365)

    report = apply_retention(home, dry_run=False, now=NOW)

    assert report.cas_kept == {cas_uri("runtime", sha): "live_fact"}


def _stage_graph(home: Home, tmp_path: Path, graph_id: str, version: int) -> str:
    doc = {
        "schema": "runtime-facts.callgraph.v1",
        "callgraphId": graph_id,
        "language": "java",
        "nodes": [{"id": f"sym:{graph_id}:{i}"} for i in range(version)],
        "edges": [],
        "entrypoints": [f"sym:{graph_id}:0"],
    }
    path = tmp_path / f"{graph_id}-{version}.json"
    path.write_bytes(orjson.dumps(doc))
    sha = stage_graph(home, path, "acme", NOW).sha256
    _age(home, "graphs", sha, 400)
    return sha


def test_only_the_current_graph_of_a_callgraph_in_use_is_kept(
    home: Home, aged: dict[str, str], tmp_path: Path
) -> None:
    superseded = _stage_graph(home, tmp_path, "cg-fresh", 1)
    current = _stage_graph(home, tmp_path, "cg-fresh", 2)
    unused = _stage_graph(home, tmp_path, "cg-gone", 1)

    report = apply_retention(home, dry_run=False, now=NOW)

    assert report.cas_kept[cas_uri("graphs", current)] == "graph_in_use"
    deleted = {d["cas_uri"] for d in report.cas_deleted}
    assert {cas_uri("graphs", superseded), cas_uri("graphs", unused)} <= deleted
    assert set(home.cas.list("graphs")) == {current}
    assert current_graph_sha(home, "acme", "cg-fresh") == current
    assert current_graph_sha(home, "acme", "cg-gone") is None
    kept = {sha for sha in (superseded, unused, current) if compiled_graph_dir(home, sha).exists()}
    assert kept == {current}  # compiled forms go with their graphs


def test_facts_without_timestamps_age_by_update_time(home: Home, stage: Stage) -> None:
    stage('{"symbolId": "sym:untimed", "hitCount": 2}\n', OLD)
    ingest(home, clock=lambda: NOW - timedelta(days=45))

    report = apply_retention(home, dry_run=False, now=NOW)

    assert report.expired_facts == 1
    assert home.lake.read("runtime_facts").is_empty()


def test_vacuum_keeps_the_table_history_inside_the_default_window(
    home: Home, aged: dict[str, str]
) -> None:
    apply_retention(home, dry_run=False, now=NOW)
    head = home.lake.version("runtime_facts")

    report = apply_retention(home, dry_run=False, now=NOW)

    assert set(report.vacuumed_files) == {
        "runtime_fact_batches",
        "runtime_facts",
        "runtime_facts_recent",
        "reachability_states",
        "reachability_states_recent",
        "ingest_receipts",
        "rejections",
    }
    previous = home.lake.table("runtime_facts", version=head - 1)
    before_delete = pl.DataFrame(previous.to_pyarrow_table())
    assert before_delete.height == 6  # the deleted rows' files are still there to time-travel


def test_an_empty_home_has_nothing_to_do(home: Home) -> None:
    report = apply_retention(home, dry_run=False, now=NOW)

    assert (report.expired_facts, report.cas_deleted, report.cas_kept) == (0, [], {})
