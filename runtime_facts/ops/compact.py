"""Compaction: merge small files, checkpoint the logs, vacuum what no reader can still need.

First the recent rows of `runtime_facts` and `reachability_states` are merged into their base
tables (`Lake.merge_recent`), so readers of the Delta folders alone (Spark, Trino) are at most
one compaction behind. Every ingest appends at least one small file per commit group to the
append-only tables and one log entry per commit; left alone, reads and log replays slow down
with history. Compaction then rewrites files without changing data (`dataChange=false`), so
the fold's change-data-feed position and every reader at an older version stay valid. Vacuum
never goes below Delta's retention window (7 days by default): time travel and lagging readers
keep working.

The tables rewritten per subject (`runtime_facts`, `reachability_states`) are not merged
blindly: a plain bin-packing would put many subjects in one file, and every later fold or
recompute of any of them would rewrite all of them. They are clustered by `subject_key`
(Z-order on that one column, i.e. sorted) into files of `SUBJECT_FILE_BYTES`, so a subject's
rewrite stays bounded whatever the number of subjects. Only tenant partitions whose files'
subject ranges overlap are re-clustered: a compaction with nothing to do commits nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import polars as pl
from deltalake import DeltaTable

from runtime_facts.home import Home
from runtime_facts.stores import lake as lake_tables
from runtime_facts.stores.lake import (
    ALL_TABLES,
    MERGED_KEYS,
    SUBJECT_TABLES,
    file_actions,
    recent_name,
)

MIN_VACUUM_HOURS = 168


@dataclass
class CompactReport:
    """Per table: files before/after compaction, vacuumed files, new version."""

    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    merged: dict[str, int] = field(default_factory=dict)
    """Per merged table: the recent rows folded into its base."""


def unclustered_tenants(table: DeltaTable) -> list[str]:
    """Tenants whose files' subject_key ranges overlap (a file written since the last
    clustering, or none yet): only those need re-clustering. Ranges may touch at one subject
    (a large subject split over files); a file without statistics counts as overlapping."""
    actions = file_actions(table)
    if actions.is_empty():
        return []
    files = actions.select(
        tenant=pl.col("partition.tenant"),
        first=pl.col("min.subject_key"),
        last=pl.col("max.subject_key"),
    ).sort("tenant", "first", "last", nulls_last=False)
    reach = pl.col("last").cum_max().shift(1).over("tenant")  # furthest end of earlier files
    overlapping = pl.col("first").is_null() | pl.col("last").is_null() | (pl.col("first") < reach)
    tenants = files.filter(overlapping).get_column("tenant").unique().sort()
    return tenants.to_list()


def _cluster_by_subject(table: DeltaTable) -> dict[str, Any]:
    """Z-order by subject_key, one tenant partition at a time, where it is needed."""
    totals = {"numFilesAdded": 0, "numFilesRemoved": 0}
    for tenant in unclustered_tenants(table):
        metrics = table.optimize.z_order(
            ["subject_key"],
            partition_filters=[("tenant", "=", tenant)],
            target_size=lake_tables.SUBJECT_FILE_BYTES,
        )
        for key in totals:
            totals[key] += int(metrics.get(key, 0))
    return totals


def compact(
    home: Home, *, vacuum: bool = True, retention_hours: int = MIN_VACUUM_HOURS
) -> CompactReport:
    """Compact every table of the home (under the commit lock, so no fold interleaves).

    Args:
        home: the home.
        vacuum: also delete files no longer referenced within the retention window.
        retention_hours: vacuum window; values below 168 (7 days) are raised to 168.

    Returns:
        What was done to each table.
    """
    report = CompactReport()
    home.ensure_lake()
    hours = max(retention_hours, MIN_VACUUM_HOURS)
    with home.commit_lock():
        for name in MERGED_KEYS:
            merged = 0
            for tenant in home.lake.tenants_of(recent_name(name)):
                merged += home.lake.merge_recent(name, tenant)
            report.merged[name] = merged
        for name in ALL_TABLES:
            table = home.lake.table(name)
            before = len(table.file_uris())
            if name in SUBJECT_TABLES:
                metrics = _cluster_by_subject(table)
            else:
                metrics = table.optimize.compact()
            table.create_checkpoint()
            removed: list[str] = []
            if vacuum:
                removed = table.vacuum(retention_hours=hours, dry_run=False)
            report.tables[name] = {
                "files_before": before,
                "files_after": len(table.file_uris()),
                "files_added": metrics.get("numFilesAdded", 0),
                "files_removed": metrics.get("numFilesRemoved", 0),
                "vacuumed": len(removed),
                "version": table.version(),
            }
    return report
