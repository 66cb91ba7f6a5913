"""A fold takes the summaries of the batch commits its own process just made instead of reading
them back, reads every other version from the change feed, and folds the same facts."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import runtime_facts.pipeline.fold as fold
from runtime_facts.config import Settings
from runtime_facts.home import Home
from runtime_facts.pipeline.commit import commit_batches
from runtime_facts.pipeline.fold import fold_pending
from runtime_facts.pipeline.ingest import ingest
from runtime_facts.pipeline.outcomes import IngestOptions
from runtime_facts.pipeline.prepare import prepare_batch
from transforms.fold import SUMMARY_COLUMNS

Stage = Callable[..., str]
Clock = Callable[[], datetime]
BATCHES = [
    '{"symbolId":"sym:a","hitCount":3,"observedAt":"2026-11-30T10:00:00Z"}\n'
    '{"symbolId":"sym:b","hitCount":4}\n',
    '{"symbolId":"sym:a","hitCount":5,"observedAt":"2026-11-29T10:00:00Z"}\n',
    '{"symbolId":"sym:c","hitCount":1}\n{"symbolId":"sym:a","hitCount":2}\n',
    '{"symbolId":"sym:b","hitCount":9,"observedAt":"2026-12-01T10:00:00Z"}\n',
]


def _batch_reads(home: Home, monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The version ranges folds read from the batch table's change feed."""
    reads: list[tuple[int, int]] = []
    real = home.lake.change_reader

    def counting(name: str, start: int, end: int, columns: Any = None, **kw: Any) -> Any:
        if name == "runtime_fact_batches" and columns == list(SUMMARY_COLUMNS):
            reads.append((start, end))
        return real(name, start, end, columns, **kw)

    monkeypatch.setattr(home.lake, "change_reader", counting)
    return reads


def _facts(home: Home) -> pl.DataFrame:
    return home.lake.read("runtime_facts").sort("symbol_id")


def _reference(tmp_path: Path, home: Home, clock: Clock) -> pl.DataFrame:
    """The same batches folded from the change feed only, in a copy of the home."""
    copy = tmp_path / "reference"
    shutil.copytree(home.root, copy)
    other = Home(Settings.load(str(copy)))
    shutil.rmtree(copy / "lake" / "runtime_facts")
    shutil.rmtree(copy / "lake" / "runtime_facts_recent")
    other.ensure_lake()  # recreated empty: the fold starts over from the change feed
    fold_pending(other, clock())
    return _facts(other)


def test_a_fold_after_this_process_committed_reads_nothing_back(
    home: Home, stage: Stage, clock: Clock, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    reads = _batch_reads(home, monkeypatch)
    for text in BATCHES[:2]:
        stage(text)
    ingest(home, clock=clock)
    assert reads == [(0, 0)]  # the table's creation only: no version with rows
    reads.clear()
    for text in BATCHES[2:]:
        stage(text)
    ingest(home, clock=clock)
    assert reads == []
    assert fold._OWN == {}  # consumed by the fold
    facts = _facts(home)
    assert facts.filter(pl.col("symbol_id") == "sym:a")["hit_count"].to_list() == [10]
    assert_frame_equal(facts, _reference(tmp_path, home, clock))


def test_versions_committed_elsewhere_are_read_from_the_change_feed(
    home: Home, stage: Stage, clock: Clock, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    home.ensure_lake()
    reads = _batch_reads(home, monkeypatch)
    shas = [stage(text) for text in BATCHES]
    versions = []
    for i, sha in enumerate(shas):
        prepared = prepare_batch(home, sha, IngestOptions(), clock=clock)
        # odd batches as another process would commit them: nothing remembered here
        receipt = commit_batches(home, [prepared], clock, remember=i % 2 == 0)[0]
        versions.append(receipt["table_versions"]["runtime_fact_batches"])
    fold_pending(home, clock())
    assert reads == [(0, 0), (versions[1], versions[1]), (versions[3], versions[3])]
    assert_frame_equal(_facts(home), _reference(tmp_path, home, clock))


def test_remembered_commits_are_never_folded_twice(
    home: Home, stage: Stage, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A summary left behind (its version folded by another process) is not added again,
    and goes with the next fold."""
    home.ensure_lake()
    prepared = prepare_batch(home, stage(BATCHES[0]), IngestOptions(), clock=clock)
    commit_batches(home, [prepared], clock, remember=True)
    kept = dict(fold._OWN)
    fold_pending(home, clock())
    before = _facts(home)
    fold._OWN.update(kept)  # as if this process had not folded it itself
    stage(BATCHES[1])
    ingest(home, clock=clock)
    a = _facts(home).filter(pl.col("symbol_id") == "sym:a")["hit_count"].to_list()
    assert a == [before.filter(pl.col("symbol_id") == "sym:a")["hit_count"][0] + 5]
    assert fold._OWN == {}
