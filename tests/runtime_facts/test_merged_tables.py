"""`runtime_facts` and `reachability_states` as a base plus recent changes, merged on read."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import datetime

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from runtime_facts.analyst.query import connect, read_table
from runtime_facts.home import Home
from runtime_facts.ops.compact import compact
from runtime_facts.pipeline.ingest import ingest
from runtime_facts.stores import lake as lake_module
from runtime_facts.stores.lake import MERGED_KEYS, TABLES, recent_name
from transforms.schema import FACT_KEY

Stage = Callable[..., str]
Clock = Callable[[], datetime]


def _fact(symbol: str, hits: int, code_id: str | None = None) -> dict[str, object]:
    return {
        "tenant": "acme",
        "callgraph_id": "cg-1",
        "subject_key": "s",
        "symbol_id": symbol,
        "code_id": code_id,
        "loader_base": None,
        "hit_count": hits,
        "event_count": 1,
        "batch_count": 1,
        "first_observed_at": None,
        "last_observed_at": None,
        "updated_at": None,
    }


def _facts(rows: list[dict[str, object]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=TABLES["runtime_facts"])


def _sorted(frame: pl.DataFrame, name: str = "runtime_facts") -> pl.DataFrame:
    return frame.sort(MERGED_KEYS[name], nulls_last=False)


def _sql_rows(home: Home, name: str = "runtime_facts") -> pl.DataFrame:
    with connect(home) as conn:
        table = conn.sql(f"SELECT * FROM {name}").table
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return _sorted(frame.cast(TABLES[name]), name)  # type: ignore[arg-type]


def test_latest_recent_row_wins_and_a_removed_key_is_gone(home: Home) -> None:
    home.ensure_lake()
    lake = home.lake
    lake.append("runtime_facts", _facts([_fact("a", 1), _fact("b", 1, "c1"), _fact("c", 1)]))
    lake.upsert("runtime_facts", _facts([_fact("b", 5, "c1")]), 3)
    lake.upsert("runtime_facts", _facts([_fact("b", 7, "c1"), _fact("d", 2)]), 4)
    lake.upsert("runtime_facts", _facts([]), 5, removed=_facts([_fact("c", 0)]))
    merged = _sorted(lake.read("runtime_facts"))
    assert merged.select("symbol_id", "code_id", "hit_count").rows() == [
        ("a", None, 1),
        ("b", "c1", 7),
        ("d", None, 2),
    ]
    # A null in a key column is a value of the key: `d` with code_id null overrides nothing
    # else, and the SQL view says exactly what the polars scan says.
    assert_frame_equal(_sql_rows(home), merged)
    assert_frame_equal(_sorted(read_table("runtime_facts", home=home).collect()), merged)


def test_merge_moves_recent_rows_into_the_base_without_changing_what_readers_see(
    home: Home, stage: Stage, clock: Clock
) -> None:
    stage('{"symbolId":"a","hitCount":1}\n{"symbolId":"b","hitCount":2}\n')
    ingest(home, clock=clock)
    stage('{"symbolId":"b","hitCount":3}\n{"symbolId":"c","hitCount":4}\n')
    ingest(home, clock=clock)
    lake = home.lake
    before = {n: _sorted(lake.read(n), n) for n in MERGED_KEYS}
    assert lake.read(recent_name("runtime_facts")).height == 4  # a, b; then b, c
    report = compact(home, vacuum=False)
    assert report.merged == {"runtime_facts": 4, "reachability_states": 4}
    for name in MERGED_KEYS:
        assert lake.read(recent_name(name)).is_empty()
        assert_frame_equal(_sorted(lake.read(name), name), before[name])
        base = lake.table(name).to_pyarrow_table()  # the Delta folder alone, as Spark reads it
        assert_frame_equal(_sorted(pl.DataFrame(base).cast(TABLES[name]), name), before[name])  # type: ignore[arg-type]
        assert_frame_equal(_sql_rows(home, name), before[name])


def test_a_merge_cut_between_its_two_commits_reads_the_same(
    home: Home, stage: Stage, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    stage('{"symbolId":"a","hitCount":1}\n')
    ingest(home, clock=clock)
    stage('{"symbolId":"a","hitCount":2}\n')
    ingest(home, clock=clock)
    lake = home.lake
    before = _sorted(lake.read("runtime_facts"))

    class Cut(Exception):
        pass

    def cut(*_: object, **__: object) -> None:
        raise Cut

    recent = lake.table(recent_name("runtime_facts"))
    monkeypatch.setattr(type(recent), "delete", cut)
    with pytest.raises(Cut):
        lake.merge_recent("runtime_facts", "acme")
    monkeypatch.undo()
    assert lake.read(recent_name("runtime_facts")).height == 2  # not cleaned up
    assert_frame_equal(_sorted(lake.read("runtime_facts")), before)
    assert_frame_equal(_sql_rows(home), before)
    assert lake.merge_recent("runtime_facts", "acme") == 2
    assert_frame_equal(_sorted(lake.read("runtime_facts")), before)
    stage('{"symbolId":"a","hitCount":4}\n')
    ingest(home, clock=clock)
    assert lake.read("runtime_facts").select("hit_count").item() == 7


def test_a_fold_appends_only_the_keys_its_batch_touched(
    home: Home, stage: Stage, clock: Clock
) -> None:
    stage("".join(f'{{"symbolId":"s{i}","hitCount":1}}\n' for i in range(50)))
    ingest(home, clock=clock)
    compact(home, vacuum=False)
    stage('{"symbolId":"s7","hitCount":5}\n')
    ingest(home, clock=clock)
    for name in MERGED_KEYS:
        recent = home.lake.read(recent_name(name))
        assert recent.get_column("symbol_id").to_list() == ["s7"], name
    facts = home.lake.read("runtime_facts")
    assert facts.height == 50
    assert facts.filter(pl.col("symbol_id") == "s7").select("hit_count", "batch_count").row(0) == (
        6,
        2,
    )


def test_recent_rows_are_merged_once_they_pass_the_threshold(
    home: Home, stage: Stage, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lake_module, "RECENT_MERGE_ROWS", 3)
    for i in range(6):
        stage(f'{{"symbolId":"a","hitCount":1}}\n{{"symbolId":"b{i}","hitCount":1}}\n')
        ingest(home, clock=clock)
        for name in MERGED_KEYS:
            recent, base = home.lake.recent_rows(name, "acme")
            assert recent <= max(3, lake_module.RECENT_MERGE_SHARE * base) + 2, (i, name)
    facts = home.lake.read("runtime_facts").sort(FACT_KEY, nulls_last=False)
    assert facts.height == 7
    assert facts.filter(pl.col("symbol_id") == "a").select("hit_count").item() == 6
    assert not home.lake.read("runtime_facts", where=pl.col("symbol_id") == "a").is_empty()
    assert home.lake.table("runtime_facts").to_pyarrow_table().num_rows > 0  # merged on the way


def test_as_of_a_version_reads_the_merged_view_of_that_time(
    home: Home, stage: Stage, clock: Clock
) -> None:
    stage('{"symbolId":"a","hitCount":1}\n')
    ingest(home, clock=clock)
    first = home.lake.version("runtime_facts")
    stage('{"symbolId":"a","hitCount":2}\n{"symbolId":"b","hitCount":1}\n')
    ingest(home, clock=clock)
    compact(home, vacuum=False)  # the base now holds a=3, b=1; the recent rows are gone
    old = read_table("runtime_facts", home=home, version=first).collect()
    assert old.select("symbol_id", "hit_count").rows() == [("a", 1)]
    with connect(home, as_of=first, tables=["runtime_facts"]) as conn:
        rows = conn.sql("SELECT symbol_id, hit_count FROM runtime_facts").table.to_pylist()
    assert rows == [{"symbol_id": "a", "hit_count": 1}]
    now = read_table("runtime_facts", home=home).collect().sort("symbol_id")
    assert now.select("symbol_id", "hit_count").rows() == [("a", 3), ("b", 1)]


def test_a_cut_while_creating_the_recent_tables_is_repaired_by_the_next_run(
    home: Home, stage: Stage, clock: Clock
) -> None:
    """A run cut while creating the tables leaves a recent table missing or a folder with an
    empty log: the next run creates it and ingests (the five tables alone are not enough)."""
    home.ensure_lake()
    shutil.rmtree(home.root / "lake" / recent_name("reachability_states"))
    shutil.rmtree(home.root / "lake" / recent_name("runtime_facts"))
    (home.root / "lake" / recent_name("runtime_facts") / "_delta_log").mkdir(parents=True)
    again = Home(home.settings)
    assert again.lake.exists()
    assert not again.lake.complete()
    assert again.lake.read("runtime_facts").is_empty()
    stage('{"symbolId":"a","hitCount":1}\n{"symbolId":"b","hitCount":2}\n')
    ingest(again, clock=clock)
    stage('{"symbolId":"a","hitCount":4}\n')
    ingest(again, clock=clock)
    assert again.lake.complete()
    facts = again.lake.read("runtime_facts").sort("symbol_id")
    assert facts.select("symbol_id", "hit_count").rows() == [("a", 5), ("b", 2)]
    assert again.lake.read("reachability_states").height == 2


def test_a_first_backfill_is_not_merged_until_a_second_write(
    home: Home, stage: Stage, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Into an empty base, one write's recent rows hold one row per key: merging them would
    only copy them. The next write makes the merge due."""
    monkeypatch.setattr(lake_module, "RECENT_MERGE_ROWS", 3)
    stage("".join(f'{{"symbolId":"s{i}","hitCount":1}}\n' for i in range(10)))
    ingest(home, clock=clock)
    assert home.lake.recent_rows("runtime_facts", "acme") == (10, 0)
    stage('{"symbolId":"s1","hitCount":1}\n')
    ingest(home, clock=clock)
    assert home.lake.recent_rows("runtime_facts", "acme") == (0, 10)
    assert home.lake.read("runtime_facts").get_column("hit_count").sum() == 11
