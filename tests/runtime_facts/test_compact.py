"""Compaction merges files without changing what readers see."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from polars.testing import assert_frame_equal

from runtime_facts.home import Home
from runtime_facts.jobs.compact import compact
from runtime_facts.jobs.ingest import ingest

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
