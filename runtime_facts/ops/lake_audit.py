"""Does the lake still hold what the receipts say? (`doctor`, `receipts verify` on a home).

Three checks, each naming what differs:

1. `lake_version_missing`: every table version a receipt recorded (`table_versions`) is still
   in that table's Delta log: its commit file `_delta_log/<version>.json` is there, or a Delta
   checkpoint at or after it (log cleanup removes commit files a checkpoint covers).
2. `lake_batch_missing`: every batch whose receipt says `accepted` has exactly `key_count` rows
   in `runtime_fact_batches` (its rows were not removed from the table's log).
3. `lake_facts_mismatch`: `runtime_facts` equals the fold of `runtime_fact_batches`, recomputed
   from scratch with polars at the batch-table version each tenant's last fold recorded (its
   `runtime-facts.fold/<tenant>` app transaction): per fact key the summed `hit_count` and
   `event_count`, the number of batches, the first and last observation. Subjects that
   retention expired facts from (`receipts/retention.log`) are checked one way only: no fact
   row the batches do not explain, and no counter above what the batches hold.

The cost is one read of the key and counter columns of both tables: a check, not a hot path.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import polars as pl

from runtime_facts.errors import Reason
from runtime_facts.home import Home
from runtime_facts.pipeline.fold import folded_through
from transforms.fold import SUMMARY_COLUMNS, summarize_batch_rows
from transforms.schema import FACT_KEY

COUNTERS = ("hit_count", "event_count", "batch_count")
COMPARED = (*COUNTERS, "first_observed_at", "last_observed_at")
MAX_NAMED = 20


@dataclass(frozen=True)
class LakeFinding:
    """One way the lake differs from the receipts."""

    reason_code: str
    reason: str
    table: str | None = None
    tenant: str | None = None
    subject_key: str | None = None
    batch_sha256: str | None = None


def _version_present(home: Home, table: str, version: int, checkpoints: dict[str, int]) -> bool:
    folder = f"lake/{table}/_delta_log"
    if home.objects.exists(f"{folder}/{version:020d}.json"):
        return True
    if table not in checkpoints:
        names = [k.rsplit("/", 1)[1] for k in home.objects.list(folder)]
        found = [int(n.split(".", 1)[0]) for n in names if ".checkpoint" in n]
        checkpoints[table] = max(found, default=-1)
    return checkpoints[table] >= version


def check_versions(home: Home, receipts: Iterable[dict[str, Any]]) -> list[LakeFinding]:
    """Every recorded table version is in its Delta log."""
    wanted: dict[tuple[str, int], str] = {}
    for receipt in receipts:
        for table, version in (receipt.get("table_versions") or {}).items():
            wanted.setdefault((str(table), int(version)), str(receipt.get("receipt_sha256")))
    findings = []
    checkpoints: dict[str, int] = {}
    for (table, version), receipt_sha in sorted(wanted.items()):
        if not _version_present(home, table, version, checkpoints):
            findings.append(
                LakeFinding(
                    Reason.LAKE_VERSION_MISSING,
                    f"{table} version {version}, recorded by receipt {receipt_sha[:16]}…, is not "
                    f"in the table's Delta log (current version {home.lake.version(table)})",
                    table=table,
                )
            )
    return findings


def check_batches(home: Home, receipts: Iterable[dict[str, Any]]) -> list[LakeFinding]:
    """Every accepted batch still has its `key_count` rows in `runtime_fact_batches`."""
    accepted: dict[str, dict[str, Any]] = {}
    for receipt in receipts:
        if receipt.get("status") == "accepted" and isinstance(receipt.get("batch_sha256"), str):
            accepted.setdefault(receipt["batch_sha256"], receipt)
    if not accepted:
        return []
    rows = dict(
        home.lake.scan("runtime_fact_batches").group_by("batch_sha256").len().collect().iter_rows()
    )
    findings = []
    for sha, receipt in sorted(accepted.items()):
        have, want = int(rows.get(sha, 0)), int(receipt.get("key_count") or 0)
        if have != want:
            findings.append(
                LakeFinding(
                    Reason.LAKE_BATCH_MISSING,
                    f"batch {sha[:16]}… (tenant {receipt.get('tenant')}, "
                    f"{receipt.get('subject_key')}) was accepted with {want} keys; "
                    f"runtime_fact_batches holds {have} rows of it",
                    table="runtime_fact_batches",
                    tenant=receipt.get("tenant"),
                    subject_key=receipt.get("subject_key"),
                    batch_sha256=sha,
                )
            )
    return findings


def expected_facts(home: Home, also: set[str] | None = None) -> pl.DataFrame | None:
    """The fold of `runtime_fact_batches` from scratch: each tenant's rows at the batch-table
    version its last fold reached (folds are per tenant).

    Returns None when such a version is no longer in the batch table's Delta log.
    """
    head = home.lake.version("runtime_fact_batches")
    parts = []
    for tenant in sorted(set(home.lake.tenants()) | (also or set())):
        folded = folded_through(home, tenant)
        if folded is None:
            continue
        if folded > head:
            return None
        table = home.lake.table("runtime_fact_batches", folded)
        rows = table.to_pyarrow_table(
            columns=list(SUMMARY_COLUMNS), filters=[("tenant", "=", tenant)]
        )
        parts.append(pl.DataFrame(pl.from_arrow(rows)))
    if not parts:
        return pl.DataFrame()
    summary = summarize_batch_rows(pl.concat(parts))
    return summary.with_columns(pl.col(c).cast(pl.Int64) for c in COUNTERS)


def check_facts(home: Home, expired: set[tuple[str, str, str]]) -> list[LakeFinding]:
    """`runtime_facts` equals the fold of `runtime_fact_batches` (module docstring)."""
    actual = home.lake.read("runtime_facts").select(*FACT_KEY, *COMPARED)
    expected = expected_facts(home, set(actual.get_column("tenant").unique().to_list()))
    if expected is None:
        return [
            LakeFinding(
                Reason.LAKE_VERSION_MISSING,
                "runtime_facts was folded from a runtime_fact_batches version that is no longer "
                f"in its Delta log (current version {home.lake.version('runtime_fact_batches')})",
                table="runtime_fact_batches",
            )
        ]
    if expected.is_empty():
        if actual.is_empty():
            return []
        expected = actual.clear()
    expected = expected.select(*FACT_KEY, *COMPARED)
    joined = expected.join(actual, on=FACT_KEY, how="full", nulls_equal=True, coalesce=True)
    missing = pl.col("hit_count_right").is_null()
    extra = pl.col("hit_count").is_null()
    changed = (
        pl.any_horizontal(pl.col(c).ne_missing(pl.col(f"{c}_right")) for c in COMPARED)
        & ~missing
        & ~extra
    )
    over = pl.any_horizontal(pl.col(f"{c}_right") > pl.col(c) for c in COUNTERS) & ~extra
    in_expired = (
        pl.struct("tenant", "callgraph_id", "subject_key").is_in(
            [{"tenant": t, "callgraph_id": c, "subject_key": s} for t, c, s in sorted(expired)]
        )
        if expired
        else pl.lit(False)
    )
    bad = joined.with_columns(
        missing=missing & ~in_expired,
        extra=extra,
        changed=pl.when(in_expired).then(over).otherwise(changed),
    ).filter(pl.col("missing") | pl.col("extra") | pl.col("changed"))
    if bad.is_empty():
        return []
    per_subject = (
        bad.group_by("tenant", "callgraph_id", "subject_key")
        .agg(pl.col("missing").sum(), pl.col("extra").sum(), pl.col("changed").sum())
        .sort("tenant", "callgraph_id", "subject_key")
    )
    findings = []
    for row in per_subject.head(MAX_NAMED).iter_rows(named=True):
        findings.append(
            LakeFinding(
                Reason.LAKE_FACTS_MISMATCH,
                f"runtime_facts of tenant {row['tenant']} {row['subject_key']} "
                f"({row['callgraph_id']}) differs from the fold of runtime_fact_batches: "
                f"{row['missing']} rows missing, {row['extra']} unexplained, "
                f"{row['changed']} with other counters",
                table="runtime_facts",
                tenant=row["tenant"],
                subject_key=row["subject_key"],
            )
        )
    return findings


def expired_subjects(home: Home) -> set[tuple[str, str, str]]:
    """Subjects retention has expired facts from (from the retention log)."""
    from runtime_facts.ops.retention import retention_log

    out: set[tuple[str, str, str]] = set()
    for record in retention_log(home):
        for item in record.get("expired_facts_by_subject") or []:
            out.add((str(item["tenant"]), str(item["callgraph_id"]), str(item["subject_key"])))
    return out


def audit_lake(home: Home, receipts: list[dict[str, Any]]) -> list[LakeFinding]:
    """Every check of the module docstring; an empty list when the lake agrees."""
    if not home.lake.exists():
        return []
    return [
        *check_versions(home, receipts),
        *check_batches(home, receipts),
        *check_facts(home, expired_subjects(home)),
    ]
