"""Fold batch rows into cumulative facts (SPEC §4): one row per fact key."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import polars as pl

from transforms.duck import offline_connection
from transforms.errors import Reason, TransformError
from transforms.schema import BATCH_ROW_SCHEMA, FACT_KEY, FACT_SCHEMA, INT64_MAX, SUBJECT

if TYPE_CHECKING:
    import pyarrow as pa

_SUMS = ("hit_count", "event_count", "batch_count")
SUMMARY_COLUMNS = (*FACT_KEY, "batch_sha256", "hit_count", "event_count",
                   "first_observed_at", "last_observed_at")  # fmt: skip


def summarize_batch_rows(batches: pl.DataFrame) -> pl.DataFrame:
    """Per fact key: summed hits and events, number of batches, first/last observation.

    Args:
        batches: `runtime_fact_batches` rows (at least `SUMMARY_COLUMNS`); each batch holds
            at most one row per key, so summaries of disjoint row sets add up exactly.

    Returns:
        One row per fact key, sums as Int128 (overflow is checked when folding).
    """
    return batches.group_by(FACT_KEY).agg(
        pl.col("hit_count").cast(pl.Int128).sum(),
        pl.col("event_count").cast(pl.Int128).sum(),
        pl.col("batch_sha256").n_unique().cast(pl.Int128).alias("batch_count"),
        pl.col("first_observed_at").min(),
        pl.col("last_observed_at").max(),
    )


@dataclass(frozen=True)
class StreamSummary:
    """`summarize_batch_stream`'s result: one row per fact key, and what went into it."""

    summary: pl.DataFrame
    batches: int
    rows: int


_STREAM_SQL = """
SELECT tenant, callgraph_id, subject_key, symbol_id, code_id, loader_base, batch_sha256,
       grouping(batch_sha256) AS per_key,
       sum(hit_count) AS hit_count, sum(event_count) AS event_count, count(*) AS batch_count,
       min(first_observed_at) AS first_observed_at, max(last_observed_at) AS last_observed_at
FROM pending_rows
WHERE _change_type = 'insert'
GROUP BY GROUPING SETS ((tenant, callgraph_id, subject_key, symbol_id, code_id, loader_base),
                        (batch_sha256))
"""


def summarize_batch_stream(stream: pa.RecordBatchReader) -> StreamSummary:
    """`summarize_batch_rows` over a stream of change-feed record batches, in bounded memory.

    DuckDB aggregates the stream as it arrives (memory follows the number of distinct keys,
    not rows), in the same scan as the distinct batch digests. Each batch holds one row per
    key and a batch is committed once, so a key's row count is its number of batches.

    Args:
        stream: record batches with `SUMMARY_COLUMNS` and the change feed's `_change_type`;
            only inserts count.

    Returns:
        The per-key summary (as `summarize_batch_rows`), the number of batches and of rows.
    """
    import pyarrow as pa  # only a fold that reads the change feed needs it

    batches = (pa.record_batch(b) for b in stream)  # pyarrow's, or deltalake's arro3 ones
    first = next((b for b in batches if b.num_rows), None)
    if first is None:  # nothing in the range (a table's creation, another tenant's commits)
        return summarize_rows(pl.DataFrame(schema=_EMPTY_ROWS))
    stream = pa.RecordBatchReader.from_batches(first.schema, itertools.chain([first], batches))
    con = offline_connection()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("pending_rows", stream)
        grouped = con.sql(_STREAM_SQL).pl()
    finally:
        con.close()
    per_key = grouped.filter(pl.col("per_key") == 1)
    summary = per_key.select(
        *FACT_KEY,
        *(pl.col(c).cast(pl.Int128) for c in _SUMS),
        pl.col("first_observed_at").cast(FACT_SCHEMA["first_observed_at"]),
        pl.col("last_observed_at").cast(FACT_SCHEMA["last_observed_at"]),
    )
    rows = int(per_key.get_column("batch_count").sum())
    return StreamSummary(summary, grouped.height - per_key.height, rows)


def summarize_rows(rows: pl.DataFrame) -> StreamSummary:
    """`summarize_batch_stream` of rows in memory (`runtime_fact_batches` rows, each batch at
    most once): the same summary, batch and row counts."""
    summary = summarize_batch_rows(rows).select(
        *FACT_KEY,
        *(pl.col(c).cast(pl.Int128) for c in _SUMS),
        pl.col("first_observed_at").cast(FACT_SCHEMA["first_observed_at"]),
        pl.col("last_observed_at").cast(FACT_SCHEMA["last_observed_at"]),
    )
    return StreamSummary(summary, rows.get_column("batch_sha256").n_unique(), rows.height)


def combine_summaries(parts: list[StreamSummary]) -> StreamSummary:
    """One summary of disjoint sets of batch rows (each batch in one part only): per key the
    sums add up and the first/last observations are the extremes."""
    if len(parts) == 1:
        return parts[0]
    frames = [p.summary for p in parts if p.summary.height]
    if not frames:
        return parts[0] if parts else summarize_rows(pl.DataFrame(schema=_EMPTY_ROWS))
    # A part's summary has one row per key already: with one non-empty part there is no merge.
    summary = frames[0] if len(frames) == 1 else _merge(frames)
    return StreamSummary(summary, sum(p.batches for p in parts), sum(p.rows for p in parts))


def add_rows(held: StreamSummary | None, rows: pl.DataFrame) -> StreamSummary:
    """`combine_summaries([held, summarize_rows(rows)])` in one group-by instead of two.

    Args:
        held: a summary of other batches' rows, or None.
        rows: `runtime_fact_batches` rows (at least `SUMMARY_COLUMNS`) of batches not in
            `held`; a batch holds one row per key, so each row counts one batch of its key.
    """
    part = rows.select(
        *FACT_KEY,
        pl.col("hit_count").cast(pl.Int128),
        pl.col("event_count").cast(pl.Int128),
        pl.lit(1, dtype=pl.Int128).alias("batch_count"),
        pl.col("first_observed_at").cast(FACT_SCHEMA["first_observed_at"]),
        pl.col("last_observed_at").cast(FACT_SCHEMA["last_observed_at"]),
    )
    frames = [held.summary, part] if held is not None and held.summary.height else [part]
    batches = rows.get_column("batch_sha256").n_unique()
    return StreamSummary(
        _merge(frames),
        batches + (held.batches if held is not None else 0),
        rows.height + (held.rows if held is not None else 0),
    )


def _merge(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """Per key of the summary rows in `frames`: sums added, observations' extremes.

    A subject column with one value throughout (usually all three: one tenant's commits of
    one subject) is left out of the group-by and put back as that value; grouping by it
    would cost a third of the merge and change nothing."""
    rows = pl.concat(frames)
    constant = {c: rows.item(0, c) for c in SUBJECT if rows.get_column(c).n_unique() == 1}
    merged = rows.group_by([c for c in FACT_KEY if c not in constant]).agg(
        *(pl.col(c).sum() for c in _SUMS),
        pl.col("first_observed_at").min(),
        pl.col("last_observed_at").max(),
    )
    if constant:
        merged = merged.with_columns(
            pl.lit(v, dtype=rows.schema[c]).alias(c) for c, v in constant.items()
        )
    return merged.select(frames[0].columns)


_EMPTY_ROWS = {c: BATCH_ROW_SCHEMA[c] for c in SUMMARY_COLUMNS}


def fold_facts(current: pl.DataFrame, batches: pl.DataFrame, now: datetime) -> pl.DataFrame:
    """Add batch rows to the current facts of the same subjects.

    Args:
        current: existing `runtime_facts` rows of every subject touched by `batches`.
        batches: `runtime_fact_batches` rows not yet folded (each batch at most once).
        now: stamped as `updated_at` on every key the batches touch.

    Returns:
        The new `runtime_facts` rows for those subjects, sorted by key.

    Raises:
        TransformError: `hit_count_overflow` when a cumulative sum would pass 2^63-1.
    """
    return fold_summary(current, summarize_batch_rows(batches), now)


def fold_summary(current: pl.DataFrame, incoming: pl.DataFrame, now: datetime) -> pl.DataFrame:
    """`fold_facts` for batch rows already summarised by `summarize_batch_rows`.

    Only the keys in `incoming` change: they are joined to their current row and added up;
    every other current row is kept as it is. The cost follows the subject's row count
    through one anti-join and a sort of already sorted rows, not a full re-aggregation.
    """
    base = _cumulative(current)
    kept = base.join(incoming.select(FACT_KEY), on=FACT_KEY, how="anti", nulls_equal=True)
    merged = pl.concat([kept, _added(base, incoming, now)])
    return _sorted_by_key(
        merged.select([pl.col(name).cast(dtype) for name, dtype in FACT_SCHEMA.items()])
    )


def fold_touched(current: pl.DataFrame, incoming: pl.DataFrame, now: datetime) -> pl.DataFrame:
    """The new rows of the keys in `incoming` only (what `fold_summary` changes), sorted.

    Args:
        current: the current `runtime_facts` rows of at least those keys (other rows are
            ignored).
        incoming: per-key summary of the batch rows to add (`summarize_batch_rows`).
        now: stamped as `updated_at`.

    Raises:
        TransformError: `hit_count_overflow` when a cumulative sum would pass 2^63-1.
    """
    touched = _added(_cumulative(current), incoming, now)
    return _sorted_by_key(
        touched.select([pl.col(name).cast(dtype) for name, dtype in FACT_SCHEMA.items()])
    )


def _cumulative(current: pl.DataFrame) -> pl.DataFrame:
    sums = [pl.col(c).cast(pl.Int128) for c in _SUMS]
    return current.select(*FACT_KEY, *sums, "first_observed_at", "last_observed_at", "updated_at")


def _added(base: pl.DataFrame, incoming: pl.DataFrame, now: datetime) -> pl.DataFrame:
    if base.is_empty():  # new keys only (a first fold): what the left join gives, without it
        joined = incoming.with_columns(
            pl.lit(None, dtype=dtype).alias(f"{name}_old" if name in incoming.columns else name)
            for name, dtype in base.schema.items()
            if name not in FACT_KEY
        )
    else:
        joined = incoming.join(base, on=FACT_KEY, how="left", nulls_equal=True, suffix="_old")
    touched = joined.select(
        *FACT_KEY,
        *((pl.col(c) + pl.col(f"{c}_old").fill_null(0)).alias(c) for c in _SUMS),
        pl.min_horizontal("first_observed_at", "first_observed_at_old").alias("first_observed_at"),
        pl.max_horizontal("last_observed_at", "last_observed_at_old").alias("last_observed_at"),
        pl.max_horizontal(pl.lit(now).cast(FACT_SCHEMA["updated_at"]), "updated_at").alias(
            "updated_at"
        ),
    )
    over = touched.filter((pl.col("hit_count") > INT64_MAX) | (pl.col("event_count") > INT64_MAX))
    if over.height:
        row = over.sort(FACT_KEY, nulls_last=False).row(0, named=True)
        raise TransformError(
            Reason.HIT_COUNT_OVERFLOW,
            f"cumulative hitCount of {row['symbol_id']!r} in {row['subject_key']} passes 2^63-1",
        )
    return touched


def _sorted_by_key(frame: pl.DataFrame) -> pl.DataFrame:
    """Sort by the fact key; a column with one value cannot change the order, so leave it out
    (usually the subject columns: sorting by them costs more than the rest of a fold)."""
    key = [c for c in FACT_KEY if c not in SUBJECT or frame.get_column(c).n_unique() > 1]
    return frame.sort(key, nulls_last=False)
