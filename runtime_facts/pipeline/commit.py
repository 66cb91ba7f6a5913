"""The commit phase: batch rows, receipts and the fold, each crash-safe and idempotent.

Everything here runs under the home's commit lock. Ready batches are committed in groups:
one Delta commit carries the rows of several batches (all or nothing), then one receipt per
batch is appended to the log. An intent marker written before the Delta commit lets
`reconcile` finish the receipts if the process dies in between. The receipts log is the
source of truth for "was this batch ingested"; `ingest_receipts` mirrors it exactly once
per sequence number (a Delta app transaction).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
import polars as pl

from runtime_facts.errors import BatchRejected
from runtime_facts.home import Home
from runtime_facts.logs import log_batch
from runtime_facts.stores.lake import RECEIPT_SCHEMA, sql_literal
from runtime_facts.stores.receipts import mirror_app
from transforms.fold import SUMMARY_COLUMNS, fold_facts, fold_summary, summarize_batch_stream
from transforms.schema import INT64_MAX, SUBJECT

if TYPE_CHECKING:
    from runtime_facts.pipeline.ingest import Prepared

FOLD_APP = "runtime-facts.fold"
RECEIPTS_APP = "runtime-facts.receipts"  # the global chain of logs before per-tenant chains
_INFLIGHT = "locks/inflight.json"
# Subjects a fold touched whose states may not be recomputed yet (fold head version each),
# written before the fold commits: a crash between fold and recompute loses no re-score.
_RECOMPUTE = "locks/recompute-pending.json"
Subject = tuple[str, str, str]


@dataclass
class FoldResult:
    """What a fold did."""

    folded_batches: int = 0
    folded_rows: int = 0
    facts_version: int | None = None
    subjects: list[tuple[str, str, str]] = field(default_factory=list)


def commit_batch(home: Home, prepared: Prepared, clock: Callable[[], datetime]) -> dict[str, Any]:
    """Commit one prepared batch; returns its sealed receipt."""
    return commit_batches(home, [prepared], clock)[0]


def commit_batches(
    home: Home, group: list[Prepared], clock: Callable[[], datetime]
) -> list[dict[str, Any]]:
    """Commit prepared batches under the lock, in one Delta commit; one receipt each, in order."""
    with home.commit_lock():
        reconcile(home, clock())
        receipts = _commit_locked(home, group, clock)
    for receipt in receipts:
        log_batch(receipt)
    return receipts


def _commit_locked(
    home: Home, group: list[Prepared], clock: Callable[[], datetime]
) -> list[dict[str, Any]]:
    index = home.receipt_index.refresh()
    drafts: dict[int, dict[str, Any]] = {}
    accepted: list[tuple[int, Prepared]] = []
    seen: set[str] = set()
    for i, prepared in enumerate(group):
        ctx = prepared.context
        if prepared.error is not None or ctx is None or prepared.rows is None:
            continue
        if index.accepted(prepared.sha) or prepared.sha in seen:
            drafts[i] = prepared.receipt("duplicate", clock())
            continue
        try:
            _check_overflow(home, prepared, [p for _, p in accepted], clock())
        except BatchRejected as exc:
            prepared.error = exc
            continue
        seen.add(prepared.sha)
        accepted.append((i, prepared))
    versions: dict[str, int] = {}
    if accepted:
        for i, prepared in accepted:
            drafts[i] = prepared.receipt("accepted", clock())
        home.objects.put(_INFLIGHT, orjson.dumps([drafts[i] for i, _ in accepted]))
        quarantined = [p for _, p in accepted if p.rejections is not None and p.rejections.height]
        if quarantined:
            versions["rejections"] = _append_rejections(home, quarantined, clock())
        rows = pl.concat([p.rows for _, p in accepted if p.rows is not None])
        versions["runtime_fact_batches"] = home.lake.append("runtime_fact_batches", rows)
    rejected = [p for p in group if p.error is not None]
    rejected_with_lines = [
        p for p in rejected if p.context and p.rejections is not None and p.rejections.height
    ]
    if rejected_with_lines:
        versions["rejections"] = _append_rejections(home, rejected_with_lines, clock())
    sealed = []
    for i, prepared in enumerate(group):
        draft = drafts.get(i) or prepared.receipt("rejected", clock())
        if draft["status"] != "duplicate":
            draft["table_versions"] = dict(versions)
        sealed.append(home.receipts.append(draft))
    if accepted:
        home.objects.delete(_INFLIGHT)
    return sealed


def _append_rejections(home: Home, group: list[Prepared], now: datetime) -> int:
    frames = []
    for prepared in group:
        assert prepared.rejections is not None
        assert prepared.context is not None
        frames.append(
            prepared.rejections.with_columns(
                pl.lit(prepared.sha).alias("batch_sha256"),
                pl.lit(prepared.context.tenant).alias("tenant"),
                pl.lit(now).alias("rejected_at"),
            )
        )
    shas = [p.sha for p in group]
    present = set(
        home.lake.scan("rejections")
        .filter(pl.col("batch_sha256").is_in(shas))
        .select("batch_sha256")
        .unique()
        .collect()
        .get_column("batch_sha256")
        .to_list()
    )
    fresh = [f for f, p in zip(frames, group, strict=True) if p.sha not in present]
    if not fresh:
        return home.lake.version("rejections")
    return home.lake.append("rejections", pl.concat(fresh))


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


def sync_receipts(home: Home) -> int:
    """Bring `ingest_receipts` up to the log, chain by chain (one app transaction per chain)."""
    table = home.lake.table("ingest_receipts")
    mirrored_total = 0
    for chain, head in home.receipts.heads().items():
        app = mirror_app(chain)
        mirrored = table.transaction_version(app) or 0
        if head.count <= mirrored:
            continue
        missing = home.receipts.after(chain, mirrored)
        if missing:
            home.lake.append(
                "ingest_receipts", _receipt_rows(missing), txn=(app, missing[-1]["sequence"])
            )
            mirrored_total += len(missing)
    return mirrored_total


def reconcile(home: Home, now: datetime) -> None:
    """Finish what an interrupted commit left: a torn log line, receipts of committed batches."""
    home.receipts.repair()
    try:
        drafts = orjson.loads(home.objects.get(_INFLIGHT))
    except FileNotFoundError:
        return
    except orjson.JSONDecodeError:
        drafts = []
    index = home.receipt_index.refresh()
    for draft in drafts if isinstance(drafts, list) else []:
        sha = draft["batch_sha256"]
        if index.accepted(sha) or not _batch_present(home, sha, draft["tenant"]):
            continue
        draft["detail"] = "receipt completed after an interrupted commit"
        draft["finished_at"] = now.isoformat()
        home.receipts.append(draft)
        index.refresh()
    home.objects.delete(_INFLIGHT)


def _batch_present(home: Home, sha: str, tenant: str) -> bool:
    found = (
        home.lake.scan("runtime_fact_batches", tenant=tenant)
        .filter(pl.col("batch_sha256") == sha)
        .select(pl.len())
        .collect()
        .item()
    )
    return bool(found)


def _check_overflow(
    home: Home, prepared: Prepared, same_commit: list[Prepared], now: datetime
) -> None:
    """Refuse a batch whose hits would push a cumulative counter past 2^63-1.

    Every key's cumulative count is bounded by its tenant's total hits, which the receipts
    index keeps; only past that bound are pending batches folded and the keys summed exactly.
    """
    assert prepared.context is not None
    assert prepared.rows is not None
    tenant = prepared.context.tenant
    same = [p for p in same_commit if p.context and p.context.tenant == tenant]
    bound = home.receipt_index.tenant_hits.get(tenant, 0) + sum(p.hit_total for p in same)
    if bound + prepared.hit_total <= INT64_MAX:
        return
    _fold_locked(home, now)
    keys = prepared.rows.select("subject_key").unique().get_column("subject_key").to_list()
    current = home.lake.read(
        "runtime_facts", tenant=tenant, where=pl.col("subject_key").is_in(keys)
    )
    rows = pl.concat([p.rows for p in [*same, prepared] if p.rows is not None])
    fold_facts(current, rows, now)  # raises hit_count_overflow


def fold_pending(home: Home, now: datetime) -> FoldResult:
    """Fold every committed batch row not yet in `runtime_facts` (idempotent, crash-safe)."""
    with home.commit_lock():
        reconcile(home, now)
        result = _fold_locked(home, now)
        sync_receipts(home)
        return result


def _fold_locked(home: Home, now: datetime) -> FoldResult:
    lake = home.lake
    done = lake.table("runtime_facts").transaction_version(FOLD_APP)
    head = lake.version("runtime_fact_batches")
    result = FoldResult(facts_version=lake.version("runtime_facts"))
    if done is not None and done >= head:
        return result
    summary, triples, batches, rows = _summarize_pending(
        home, 0 if done is None else done + 1, head
    )
    if not rows:
        return result
    subjects = sorted({(t, s) for t, _, s in triples})
    predicates = []
    current_parts = []
    for tenant in sorted({t for t, _ in subjects}):
        keys = [s for t, s in subjects if t == tenant]
        current_parts.append(
            lake.read("runtime_facts", tenant=tenant, where=pl.col("subject_key").is_in(keys))
        )
        in_list = ", ".join(sql_literal(k) for k in keys)
        predicates.append(f"(tenant = {sql_literal(tenant)} AND subject_key IN ({in_list}))")
    folded = fold_summary(pl.concat(current_parts), summary, now)
    result.subjects = sorted(triples)
    _write_recompute(home, {**pending_recompute(home), **dict.fromkeys(result.subjects, head)})
    result.facts_version = lake.replace_where(
        "runtime_facts", folded, " OR ".join(predicates), txn=(FOLD_APP, head)
    )
    result.folded_batches = batches
    result.folded_rows = rows
    return result


def _summarize_pending(
    home: Home, start: int, head: int
) -> tuple[pl.DataFrame, set[Subject], int, int]:
    """Stream the batch rows committed since the last fold into one summary per fact key."""
    reader = home.lake.change_reader("runtime_fact_batches", start, head, list(SUMMARY_COLUMNS))
    result = summarize_batch_stream(reader)
    triples = {
        (str(t), str(c), str(s)) for t, c, s in result.summary.select(SUBJECT).unique().iter_rows()
    }
    return result.summary, triples, result.batches, result.rows


def pending_recompute(home: Home) -> dict[Subject, int]:
    """Folded subjects whose states may be stale, each with the fold (batch version) that last
    touched it; hand the snapshot back to `clear_recompute` once they are recomputed."""
    try:
        rows = orjson.loads(home.objects.get(_RECOMPUTE))
    except FileNotFoundError:
        return {}
    return {(str(t), str(c), str(s)): int(v) for t, c, s, v in rows}


def clear_recompute(home: Home, done: dict[Subject, int]) -> None:
    """Forget the subjects of a `pending_recompute` snapshot, unless folded again since."""
    if not done:
        return
    with home.commit_lock():
        pending = pending_recompute(home)
        left = {k: v for k, v in pending.items() if done.get(k) != v}
        if left != pending:
            _write_recompute(home, left)


def _write_recompute(home: Home, pending: dict[Subject, int]) -> None:
    if pending:
        home.objects.put(_RECOMPUTE, orjson.dumps(sorted([*k, v] for k, v in pending.items())))
    else:
        home.objects.delete(_RECOMPUTE)
