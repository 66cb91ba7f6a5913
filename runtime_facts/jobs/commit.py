"""The commit phase: batch rows, receipts and the fold, each crash-safe and idempotent."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
import polars as pl

from runtime_facts.errors import BatchRejected, Reason
from runtime_facts.home import Home
from runtime_facts.stores.lake import RECEIPT_SCHEMA, sql_literal
from transforms.fold import fold_facts
from transforms.schema import FACT_KEY, INT64_MAX

if TYPE_CHECKING:
    from runtime_facts.jobs.ingest import Prepared

FOLD_APP = "runtime-facts.fold"
RECEIPTS_APP = "runtime-facts.receipts"
_INFLIGHT = ("locks", "inflight.json")


@dataclass
class FoldResult:
    """What a fold did."""

    folded_batches: int = 0
    folded_rows: int = 0
    facts_version: int | None = None
    subjects: list[tuple[str, str, str]] = field(default_factory=list)


def commit_batch(home: Home, prepared: Prepared, clock: Callable[[], datetime]) -> dict[str, Any]:
    """Commit one prepared batch under the lock and return its sealed receipt."""
    with home.commit_lock():
        reconcile(home, clock())
        return _commit_locked(home, prepared, clock)


def _commit_locked(home: Home, prepared: Prepared, clock: Callable[[], datetime]) -> dict[str, Any]:
    lake = home.lake
    ctx = prepared.context
    versions: dict[str, int] = {}
    if prepared.error is None and ctx is not None and prepared.rows is not None:
        if _batch_present(home, prepared.sha, ctx.tenant):
            return _append_receipt(home, prepared.receipt("duplicate", clock()))
        try:
            _check_overflow(home, prepared.rows, ctx.tenant, clock())
        except BatchRejected as exc:
            prepared.error = exc
    if prepared.error is not None:
        if ctx is not None and prepared.rejections is not None and prepared.rejections.height:
            version = _append_rejections(home, prepared, ctx.tenant, clock())
            if version is not None:
                versions["rejections"] = version
        return _append_receipt(home, prepared.receipt("rejected", clock(), table_versions=versions))
    assert ctx is not None
    assert prepared.rows is not None
    draft = prepared.receipt("accepted", clock())
    marker = home.path(*_INFLIGHT)
    marker.write_bytes(orjson.dumps({"tenant": ctx.tenant, "receipt": draft}))
    if prepared.rejections is not None and prepared.rejections.height:
        version = _append_rejections(home, prepared, ctx.tenant, clock())
        if version is not None:
            versions["rejections"] = version
    versions["runtime_fact_batches"] = lake.append("runtime_fact_batches", prepared.rows)
    draft["table_versions"] = versions
    draft["finished_at"] = clock().isoformat()
    sealed = _append_receipt(home, draft)
    marker.unlink(missing_ok=True)
    return sealed


def _batch_present(home: Home, sha: str, tenant: str) -> bool:
    found = (
        home.lake.scan("runtime_fact_batches", tenant=tenant)
        .filter(pl.col("batch_sha256") == sha)
        .select(pl.len())
        .collect()
        .item()
    )
    return bool(found)


def _append_rejections(home: Home, prepared: Prepared, tenant: str, now: datetime) -> int | None:
    present = (
        home.lake.scan("rejections", tenant=tenant)
        .filter(pl.col("batch_sha256") == prepared.sha)
        .select(pl.len())
        .collect()
        .item()
    )
    if present or prepared.rejections is None:
        return None
    rows = prepared.rejections.with_columns(
        pl.lit(prepared.sha).alias("batch_sha256"),
        pl.lit(tenant).alias("tenant"),
        pl.lit(now).alias("rejected_at"),
    )
    return home.lake.append("rejections", rows)


def _append_receipt(home: Home, draft: dict[str, Any]) -> dict[str, Any]:
    sealed = home.receipts.append(draft)
    _mirror_receipts(home, [sealed])
    return sealed


def _receipt_rows(receipts: list[dict[str, Any]]) -> pl.DataFrame:
    rows = []
    for r in receipts:
        row = {k: r.get(k) for k in RECEIPT_SCHEMA}
        row["unknown_fields"] = orjson.dumps(r.get("unknown_fields") or {}).decode()
        row["table_versions"] = orjson.dumps(r.get("table_versions") or {}).decode()
        for ts in ("started_at", "finished_at"):
            row[ts] = datetime.fromisoformat(r[ts]) if r.get(ts) else None
        rows.append(row)
    return pl.DataFrame(rows, schema=RECEIPT_SCHEMA, orient="row")


def _mirror_receipts(home: Home, fresh: list[dict[str, Any]] | None = None) -> None:
    """Bring `ingest_receipts` up to the log; the app transaction makes it exactly-once."""
    table = home.lake.table("ingest_receipts")
    mirrored = table.transaction_version(RECEIPTS_APP) or 0
    last = home.receipts.last()
    if last is None or last["sequence"] <= mirrored:
        return
    if fresh and fresh[0]["sequence"] == mirrored + 1:
        missing = fresh
    else:
        missing = [r for r in home.receipts if r["sequence"] > mirrored]
    home.lake.append(
        "ingest_receipts", _receipt_rows(missing), txn=(RECEIPTS_APP, missing[-1]["sequence"])
    )


def reconcile(home: Home, now: datetime) -> None:
    """Finish what an interrupted run left: torn log line, in-flight batch, unmirrored receipts."""
    home.receipts.repair()
    marker = home.root.joinpath(*_INFLIGHT)
    if marker.exists():
        try:
            doc = orjson.loads(marker.read_bytes())
        except orjson.JSONDecodeError:
            doc = None
        if isinstance(doc, dict):
            draft = doc["receipt"]
            sha = draft["batch_sha256"]
            logged = any(
                r["batch_sha256"] == sha and r["status"] == "accepted" for r in home.receipts
            )
            if _batch_present(home, sha, doc["tenant"]) and not logged:
                draft["detail"] = "receipt completed after an interrupted commit"
                draft["finished_at"] = now.isoformat()
                home.receipts.append(draft)
        marker.unlink(missing_ok=True)
    _mirror_receipts(home)


def _check_overflow(home: Home, rows: pl.DataFrame, tenant: str, now: datetime) -> None:
    """Refuse a batch whose hits would push a cumulative counter past 2^63-1.

    A bound from Delta file statistics settles the normal case without reading data;
    only when the bound is not enough are pending batches folded and the keys summed exactly.
    """
    lake = home.lake
    facts_max = lake.stats_max("runtime_facts", "hit_count", tenant) or 0
    batch_max = lake.stats_max("runtime_fact_batches", "hit_count", tenant) or 0
    folded = lake.table("runtime_facts").transaction_version(FOLD_APP) or 0
    pending = max(0, lake.version("runtime_fact_batches") - folded)
    new_max = int(rows.get_column("hit_count").cast(pl.Int64).max() or 0)  # type: ignore[arg-type]
    if facts_max + pending * batch_max + new_max <= INT64_MAX:
        return
    _fold_locked(home, now)
    subject = rows.select("tenant", "subject_key").unique()
    current = lake.read(
        "runtime_facts",
        tenant=tenant,
        where=pl.col("subject_key").is_in(subject.get_column("subject_key").to_list()),
    )
    fold_facts(current, rows, now)  # raises hit_count_overflow


def fold_pending(home: Home, now: datetime) -> FoldResult:
    """Fold every committed batch row not yet in `runtime_facts` (idempotent, crash-safe)."""
    with home.commit_lock():
        reconcile(home, now)
        return _fold_locked(home, now)


def _fold_locked(home: Home, now: datetime) -> FoldResult:
    lake = home.lake
    done = lake.table("runtime_facts").transaction_version(FOLD_APP)
    head = lake.version("runtime_fact_batches")
    result = FoldResult(facts_version=lake.version("runtime_facts"))
    if done is not None and done >= head:
        return result
    pending = lake.changes("runtime_fact_batches", 0 if done is None else done + 1, head)
    if pending.is_empty():
        return result
    subjects = pending.select("tenant", "subject_key").unique().sort("tenant", "subject_key")
    predicates = []
    current_parts = []
    for (tenant,), group in subjects.group_by(["tenant"], maintain_order=True):
        keys = group.get_column("subject_key").to_list()
        current_parts.append(
            lake.read("runtime_facts", tenant=str(tenant), where=pl.col("subject_key").is_in(keys))
        )
        in_list = ", ".join(sql_literal(k) for k in keys)
        predicates.append(f"(tenant = {sql_literal(str(tenant))} AND subject_key IN ({in_list}))")
    current = pl.concat(current_parts)
    folded = fold_facts(current, pending, now)
    result.facts_version = lake.replace_where(
        "runtime_facts", folded, " OR ".join(predicates), txn=(FOLD_APP, head)
    )
    result.folded_batches = pending.get_column("batch_sha256").n_unique()
    result.folded_rows = pending.height
    result.subjects = sorted(
        {
            (str(t), str(c), str(s))
            for t, c, s in pending.select("tenant", "callgraph_id", "subject_key")
            .unique()
            .iter_rows()
        }
    )
    return result


__all__ = ["FACT_KEY", "FoldResult", "Reason", "commit_batch", "fold_pending", "reconcile"]
