"""Folding batch rows into cumulative facts."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime_facts.errors import BatchRejected
from transforms.fold import (
    SUMMARY_COLUMNS,
    add_rows,
    combine_summaries,
    fold_facts,
    fold_touched,
    summarize_batch_rows,
    summarize_batch_stream,
    summarize_rows,
)
from transforms.schema import BATCH_ROW_SCHEMA, FACT_KEY, FACT_SCHEMA

NOW = datetime(2026, 2, 1, tzinfo=UTC)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _batch(sha: str, symbol: str, hits: int, code: str | None = None) -> dict[str, object]:
    return {
        "batch_sha256": sha, "cas_uri": f"cas://reachability/runtime/{sha}", "tenant": "t",
        "callgraph_id": "cg", "subject_key": "scan:s", "symbol_id": symbol, "code_id": code,
        "loader_base": None, "hit_count": hits, "event_count": 1, "first_observed_at": T0,
        "last_observed_at": T0, "process_names": [], "container_ids": [], "evidence_uris": [],
        "ingested_at": T0,
    }  # fmt: skip


def test_fold_adds_batches_to_existing_facts() -> None:
    first = fold_facts(
        pl.DataFrame(schema=FACT_SCHEMA),
        pl.DataFrame([_batch("1", "a", 2)], schema=BATCH_ROW_SCHEMA),
        T0,
    )
    second = fold_facts(
        first,
        pl.DataFrame([_batch("2", "a", 3), _batch("2", "b", 1)], schema=BATCH_ROW_SCHEMA),
        NOW,
    )
    assert second.select("symbol_id", "hit_count", "batch_count").rows() == [
        ("a", 5, 2),
        ("b", 1, 1),
    ]
    assert second.get_column("updated_at").to_list() == [NOW, NOW]


def test_cumulative_overflow_is_an_error() -> None:
    first = fold_facts(
        pl.DataFrame(schema=FACT_SCHEMA),
        pl.DataFrame([_batch("1", "a", 2**63 - 1)], schema=BATCH_ROW_SCHEMA),
        T0,
    )
    with pytest.raises(BatchRejected) as info:
        fold_facts(first, pl.DataFrame([_batch("2", "a", 1)], schema=BATCH_ROW_SCHEMA), NOW)
    assert info.value.reason == "hit_count_overflow"


def test_folded_rows_come_out_sorted_by_the_whole_key() -> None:
    rows = [
        {**_batch("1", symbol, 1), "subject_key": subject, "tenant": tenant}
        for tenant, subject, symbol in [
            ("t", "scan:b", "a"), ("t", "scan:a", "z"), ("s", "scan:b", "m"), ("t", "scan:a", "b"),
        ]
    ]  # fmt: skip
    folded = fold_facts(
        pl.DataFrame(schema=FACT_SCHEMA), pl.DataFrame(rows, schema=BATCH_ROW_SCHEMA), NOW
    )
    assert folded.select("tenant", "subject_key", "symbol_id").rows() == [
        ("s", "scan:b", "m"),
        ("t", "scan:a", "b"),
        ("t", "scan:a", "z"),
        ("t", "scan:b", "a"),
    ]


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from("1234"),
            st.sampled_from(["scan:a", "scan:b"]),
            st.sampled_from("abc"),
            st.sampled_from([None, "x"]),
            st.integers(1, 2**62),
        ),
        max_size=30,
        unique_by=lambda r: (r[0], r[1], r[2], r[3]),  # a batch holds one row per key
    ),
    deleted=st.integers(0, 3),
)
def test_streamed_summary_equals_the_in_memory_one(
    rows: list[tuple[str, str, str, str | None, int]], deleted: int
) -> None:
    """DuckDB's streamed aggregation agrees with the polars one; deletes are not counted."""
    frame = pl.DataFrame(
        [
            {**_batch(sha, symbol, hits, code), "subject_key": subject}
            for sha, subject, symbol, code, hits in rows
        ],
        schema=BATCH_ROW_SCHEMA,
    ).select(SUMMARY_COLUMNS)
    changes = pl.concat(
        [
            frame.with_columns(pl.lit("insert").alias("_change_type")),
            frame.head(deleted).with_columns(pl.lit("delete").alias("_change_type")),
        ]
    )
    table = changes.to_arrow(compat_level=pl.CompatLevel.oldest())
    result = summarize_batch_stream(
        pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=7))
    )
    expected = summarize_batch_rows(frame)
    assert result.summary.sort(FACT_KEY, nulls_last=False).equals(
        expected.select(result.summary.columns).sort(FACT_KEY, nulls_last=False)
    )
    assert (result.batches, result.rows) == (
        frame.get_column("batch_sha256").n_unique(),
        frame.height,
    )


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from("1234"),
            st.sampled_from("abc"),
            st.sampled_from([None, "x"]),
            st.integers(1, 2**62),
            st.integers(0, 10**6),
            st.sampled_from(["scan:s", "scan:s", "scan:s", "scan:t"]),  # mostly one subject
        ),
        max_size=30,
        unique_by=lambda r: (r[0], r[1], r[2], r[5]),  # a batch holds one row per key
    ),
)
def test_summaries_of_disjoint_batches_combine_into_the_whole_ones(
    rows: list[tuple[str, str, str | None, int, int, str]],
) -> None:
    """Summaries of each batch's rows, combined, are the summary of all rows, as the change
    feed's streamed aggregation makes it (what a fold reads otherwise)."""
    frame = pl.DataFrame(
        [
            {**_batch(sha, symbol, hits, code), "first_observed_at": T0.replace(second=s % 60),
             "last_observed_at": T0.replace(minute=s % 60), "subject_key": subject}
            for sha, symbol, code, hits, s, subject in rows
        ],
        schema=BATCH_ROW_SCHEMA,
    )  # fmt: skip
    parts = [summarize_rows(frame.filter(pl.col("batch_sha256") == sha)) for sha in "1234"]
    combined = combine_summaries(parts)
    changes = frame.select(SUMMARY_COLUMNS).with_columns(pl.lit("insert").alias("_change_type"))
    table = changes.to_arrow(compat_level=pl.CompatLevel.oldest())
    streamed = summarize_batch_stream(
        pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=5))
    )
    assert combined.summary.schema == streamed.summary.schema
    assert combined.summary.sort(FACT_KEY, nulls_last=False).equals(
        streamed.summary.sort(FACT_KEY, nulls_last=False)
    )
    assert (combined.batches, combined.rows) == (streamed.batches, streamed.rows)
    # rows added to a summary in one group-by: the same as summarising them and combining
    added = add_rows(add_rows(None, frame.filter(pl.col("batch_sha256") <= "2")),
                     frame.filter(pl.col("batch_sha256") > "2"))  # fmt: skip
    assert added.summary.schema == combined.summary.schema
    assert added.summary.sort(FACT_KEY, nulls_last=False).equals(
        combined.summary.sort(FACT_KEY, nulls_last=False)
    )
    assert (added.batches, added.rows) == (combined.batches, combined.rows)


def test_an_empty_change_feed_is_summarised_without_duckdb(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import transforms.fold as fold

    def refuse() -> None:
        raise AssertionError("no connection for an empty stream")

    monkeypatch.setattr(fold, "offline_connection", refuse)
    frame = pl.DataFrame(schema=BATCH_ROW_SCHEMA).select(SUMMARY_COLUMNS)
    table = frame.with_columns(pl.lit("insert").alias("_change_type")).to_arrow()
    result = summarize_batch_stream(pa.RecordBatchReader.from_batches(table.schema, []))
    assert (result.summary.height, result.batches, result.rows) == (0, 0, 0)
    assert result.summary.schema == summarize_rows(frame).summary.schema


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.sampled_from("abcd"), st.sampled_from([None, "x"]), st.integers(1, 2**62)),
        min_size=1,
        max_size=20,
        unique_by=lambda r: (r[0], r[1]),
    )
)
def test_a_first_fold_skips_the_join_and_gives_what_the_join_gives(
    rows: list[tuple[str, str | None, int]],
) -> None:
    """Into no current rows, the touched keys' rows are made without the left join; they are
    what the join gives against current rows that hold none of those keys."""
    batch = pl.DataFrame([_batch("1", s, h, c) for s, c, h in rows], schema=BATCH_ROW_SCHEMA)
    incoming = summarize_batch_rows(batch)
    other = fold_facts(
        pl.DataFrame(schema=FACT_SCHEMA),
        pl.DataFrame(
            [{**_batch("0", "zz", 7), "subject_key": "scan:other"}], schema=BATCH_ROW_SCHEMA
        ),
        T0,
    )
    first = fold_touched(pl.DataFrame(schema=FACT_SCHEMA), incoming, NOW)
    joined = fold_touched(other, incoming, NOW)
    assert first.schema == joined.schema
    assert first.equals(joined)
    assert first.get_column("updated_at").to_list() == [NOW] * len(rows)
