"""Dedupe a batch's valid events by (symbolId, codeId, loaderBase) (SPEC §4)."""

from __future__ import annotations

from datetime import datetime

import polars as pl

from transforms.errors import Reason, TransformError
from transforms.schema import BATCH_ROW_SCHEMA, INT64_MAX, KEY


def dedupe_events(events: pl.DataFrame) -> pl.DataFrame:
    """Group a batch's events by key; nulls are ordinary key values.

    Args:
        events: valid events (`EVENT_COLUMNS`).

    Returns:
        One row per key: summed hits, event count, first/last observation and the sorted
        distinct process names, container ids and evidence URIs, sorted by key.

    Raises:
        TransformError: `hit_count_overflow` when a key's hits pass 2^63-1.
    """

    def distinct(column: str) -> pl.Expr:
        return pl.col(column).drop_nulls().unique().sort()

    grouped = events.group_by(KEY).agg(
        pl.col("hit_count").cast(pl.Int128).sum().alias("hit_count"),
        pl.len().cast(pl.Int64).alias("event_count"),
        pl.col("observed_at").min().alias("first_observed_at"),
        pl.col("observed_at").max().alias("last_observed_at"),
        distinct("process_name").alias("process_names"),
        distinct("container_id").alias("container_ids"),
        distinct("evidence_uri").alias("evidence_uris"),
    )
    over = grouped.filter(pl.col("hit_count") > INT64_MAX)
    if over.height:
        first = over.sort(KEY, nulls_last=False).row(0, named=True)
        raise TransformError(
            Reason.HIT_COUNT_OVERFLOW,
            f"hitCount sum for symbol {first['symbol_id']!r} passes 2^63-1 within the batch",
        )
    return grouped.with_columns(pl.col("hit_count").cast(pl.Int64)).sort(KEY, nulls_last=False)


def build_batch_rows(
    deduped: pl.DataFrame,
    *,
    batch_sha256: str,
    cas_uri: str,
    tenant: str,
    callgraph_id: str,
    subject_key: str,
    ingested_at: datetime,
) -> pl.DataFrame:
    """Stamp deduped keys with their batch and subject: the `runtime_fact_batches` rows,
    in buffers of their own (`owned`)."""
    return (
        owned(deduped)
        .with_columns(
            pl.lit(batch_sha256).alias("batch_sha256"),
            pl.lit(cas_uri).alias("cas_uri"),
            pl.lit(tenant).alias("tenant"),
            pl.lit(callgraph_id).alias("callgraph_id"),
            pl.lit(subject_key).alias("subject_key"),
            pl.lit(ingested_at).cast(BATCH_ROW_SCHEMA["ingested_at"]).alias("ingested_at"),
        )
        .select([pl.col(name).cast(dtype) for name, dtype in BATCH_ROW_SCHEMA.items()])
    )


def owned(frame: pl.DataFrame) -> pl.DataFrame:
    """The same rows with their strings packed into buffers of their own.

    A polars string column is views into the buffers it was cut from: the keys of a batch
    would keep the whole batch's decoded strings alive (about 30 MB for 120k events) while
    they wait to be committed. A round trip of the string (and list) columns through Arrow's
    contiguous layout copies only what the rows use (a few ms per batch).
    """
    strings = [c for c, t in frame.schema.items() if t == pl.String or isinstance(t, pl.List)]
    if not strings:
        return frame
    copied = pl.from_arrow(frame.select(strings).to_arrow(compat_level=pl.CompatLevel.oldest()))
    assert isinstance(copied, pl.DataFrame)
    return frame.with_columns(copied.get_columns())
