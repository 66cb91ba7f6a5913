"""Compaction: merge small files, checkpoint the logs, vacuum what no reader can still need.

Every ingest appends at least one small file per commit group to the append-only tables and
one log entry per commit; left alone, reads and log replays slow down with history. Compaction
rewrites files without changing data (`dataChange=false`), so the fold's change-data-feed
position and every reader at an older version stay valid. Vacuum never goes below Delta's
retention window (7 days by default): time travel and lagging readers keep working.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from runtime_facts.home import Home
from runtime_facts.stores.lake import TABLES

MIN_VACUUM_HOURS = 168


@dataclass
class CompactReport:
    """Per table: files before/after compaction, vacuumed files, new version."""

    tables: dict[str, dict[str, Any]] = field(default_factory=dict)


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
        for name in TABLES:
            table = home.lake.table(name)
            before = len(table.file_uris())
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
