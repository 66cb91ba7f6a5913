"""Compaction merges files without changing what readers see."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from runtime_facts.home import Home
from runtime_facts.ops.compact import compact
from runtime_facts.pipeline.ingest import ingest
from runtime_facts.stores import lake as lake_tables
from runtime_facts.subject import SubjectContext

Stage = Callable[..., str]


def test_compaction_merges_files_and_keeps_rows_and_fold_position(
    home: Home, stage: Stage, clock: Callable[[], datetime]
) -> None:
    for i in range(5):
        stage(f'{{"symbolId":"s{i % 2}","hitCount":{i + 1}}}\n')
        ingest(home, clock=clock)
    before = {n: home.lake.read(n) for n in ("runtime_facts", "runtime_fact_batches")}
    files = len(home.lake.table("runtime_fact_batches").file_uris())
    report = compact(home)
    assert report.tables["runtime_fact_batches"]["files_after"] < files
    for name, frame in before.items():
        assert_frame_equal(home.lake.read(name).sort(frame.columns), frame.sort(frame.columns))
    stage('{"symbolId":"s0","hitCount":100}\n')
    ingest(home, clock=clock)  # the fold still reads exactly the new rows after compaction
    facts = dict(home.lake.read("runtime_facts").select("symbol_id", "hit_count").iter_rows())
    assert facts == {"s0": 1 + 3 + 5 + 100, "s1": 2 + 4}
    assert report.tables["runtime_facts"]["vacuumed"] == 0  # nothing older than 7 days


def _files(home: Home, name: str) -> pl.DataFrame:
    return lake_tables.file_actions(home.lake.table(name)).select(
        "path", "num_records", first="min.subject_key", last="max.subject_key"
    )


@pytest.mark.parametrize("name", lake_tables.SUBJECT_TABLES)
def test_after_compaction_a_subject_rewrite_leaves_other_subjects_files_alone(
    home: Home,
    stage: Stage,
    clock: Callable[[], datetime],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
) -> None:
    """Compaction clusters the per-subject tables by subject_key, in files of bounded size,
    so merging one subject's changes afterwards rewrites its own rows and few others: not the
    tenant. The fold and the re-score themselves rewrite no base file at all."""
    monkeypatch.setattr(lake_tables, "SUBJECT_FILE_BYTES", 4096)  # a few files per subject
    subjects = [SubjectContext("acme", "cg-1", scan_id=f"s{i}") for i in range(6)]
    for i, ctx in enumerate(subjects):
        stage(
            "".join(f'{{"symbolId":"sym:{j:04d}","hitCount":{i + 1}}}\n' for j in range(300)), ctx
        )
    ingest(home, clock=clock)  # one fold, one file holding every subject
    compact(home)
    before = _files(home, name)
    other_rows = home.lake.read(name).filter(pl.col("subject_key") != "scan:s2").height

    stage('{"symbolId":"sym:new","hitCount":1}\n', subjects[2])
    ingest(home, clock=clock)
    assert set(_files(home, name)["path"]) == set(before["path"])
    with home.commit_lock("acme"):
        home.lake.merge_recent(name, "acme")

    after = set(_files(home, name)["path"])
    removed = before.filter(~pl.col("path").is_in(list(after)))
    assert removed.height > 0
    # every rewritten file held scan:s2 rows (its subject range covers it) ...
    assert removed.filter((pl.col("first") > "scan:s2") | (pl.col("last") < "scan:s2")).is_empty()
    # ... so of the other subjects' rows, only those sharing a file with scan:s2 were copied
    assert removed["num_records"].sum() - 301 < other_rows / 2


def test_overlapping_subject_ranges_are_clustered_once(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runtime_facts.ops.compact import unclustered_tenants

    monkeypatch.setattr(lake_tables, "SUBJECT_FILE_BYTES", 4096)
    home.ensure_lake()
    schema = lake_tables.TABLES["reachability_states"]

    def write(tenant: str, subjects: list[str]) -> None:
        rows = [
            {"tenant": tenant, "callgraph_id": "cg", "subject_key": s, "symbol_id": f"{s}:{i}"}
            for s in subjects
            for i in range(200)
        ]
        frame = pl.DataFrame(rows).with_columns(
            pl.lit(None, dtype=t).alias(c) for c, t in schema.items() if c not in rows[0]
        )
        home.lake.append("reachability_states", frame.select(list(schema)))

    write("acme", ["scan:a", "scan:b"])
    write("acme", ["scan:c", "scan:d"])  # after the first file's range: still clustered
    write("other", ["scan:a", "scan:z"])  # another tenant's ranges do not count
    table = home.lake.table("reachability_states")
    assert unclustered_tenants(table) == []

    write("acme", ["scan:a", "scan:d"])  # spans both earlier files
    assert unclustered_tenants(home.lake.table("reachability_states")) == ["acme"]

    compact(home, vacuum=False)
    table = home.lake.table("reachability_states")
    assert unclustered_tenants(table) == []
    version = table.version()
    compact(home, vacuum=False)  # nothing left to cluster: no new version
    assert home.lake.table("reachability_states").version() == version
