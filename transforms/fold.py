"""Fold batch rows into cumulative facts (SPEC §4): one row per fact key."""

from __future__ import annotations

from datetime import datetime

import polars as pl

from runtime_facts.errors import BatchRejected, Reason
from transforms.schema import FACT_KEY, FACT_SCHEMA, INT64_MAX


def fold_facts(current: pl.DataFrame, batches: pl.DataFrame, now: datetime) -> pl.DataFrame:
    """Add batch rows to the current facts of the same subjects.

    Args:
        current: existing `runtime_facts` rows of every subject touched by `batches`.
        batches: `runtime_fact_batches` rows not yet folded (each batch at most once).
        now: stamped as `updated_at` on every key the batches touch.

    Returns:
        The new `runtime_facts` rows for those subjects, sorted by key.

    Raises:
        BatchRejected: `hit_count_overflow` when a cumulative sum would pass 2^63-1.
    """
    incoming = batches.group_by(FACT_KEY).agg(
        pl.col("hit_count").cast(pl.Int128).sum(),
        pl.col("event_count").cast(pl.Int128).sum(),
        pl.col("batch_sha256").n_unique().cast(pl.Int128).alias("batch_count"),
        pl.col("first_observed_at").min(),
        pl.col("last_observed_at").max(),
        pl.lit(now).cast(FACT_SCHEMA["updated_at"]).alias("updated_at"),
    )
    base = current.select(
        *FACT_KEY,
        *(pl.col(c).cast(pl.Int128) for c in ("hit_count", "event_count", "batch_count")),
        "first_observed_at",
        "last_observed_at",
        "updated_at",
    )
    merged = (
        pl.concat([base, incoming])
        .group_by(FACT_KEY)
        .agg(
            pl.col("hit_count").sum(),
            pl.col("event_count").sum(),
            pl.col("batch_count").sum(),
            pl.col("first_observed_at").min(),
            pl.col("last_observed_at").max(),
            pl.col("updated_at").max(),
        )
    )
    over = merged.filter((pl.col("hit_count") > INT64_MAX) | (pl.col("event_count") > INT64_MAX))
    if over.height:
        row = over.sort(FACT_KEY, nulls_last=False).row(0, named=True)
        raise BatchRejected(
            Reason.HIT_COUNT_OVERFLOW,
            f"cumulative hitCount of {row['symbol_id']!r} in {row['subject_key']} passes 2^63-1",
        )
    return merged.select([pl.col(name).cast(dtype) for name, dtype in FACT_SCHEMA.items()]).sort(
        FACT_KEY, nulls_last=False
    )
