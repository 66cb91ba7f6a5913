"""Stage 3: commit prepared batches, one tenant's commit domain at a time.

Under the tenant's lock (other tenants commit at the same time): the receipts are repaired
from the lake (`ledger.repair`), the lake says which batches are already in
(`runtime_fact_batches`, not the log), and the new ones go to `runtime_fact_batches` in one
Delta commit that also carries their receipt drafts; then one receipt per batch is sealed onto
the tenant's chain. A crash after the Delta commit loses nothing: the next commit of the
tenant finds the batch in the lake without a receipt and seals it from the commit's metadata.
Batches whose context could not be read (no tenant) are receipted under the home lock.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import polars as pl

from runtime_facts.errors import BatchRejected
from runtime_facts.home import Home
from runtime_facts.logs import log_batch
from runtime_facts.pipeline.fold import fold_tenant, remember_commit
from runtime_facts.pipeline.ledger import (
    batches_in_lake,
    commit_metadata,
    record_commit,
    repair,
    tenant_hits,
)
from runtime_facts.pipeline.outcomes import Clock, Prepared
from runtime_facts.stores.s3 import Fence
from transforms.fold import fold_facts
from transforms.schema import INT64_MAX


def commit_batches(
    home: Home, group: list[Prepared], clock: Clock, *, remember: bool = False
) -> list[dict[str, Any]]:
    """Commit prepared batches; returns one sealed receipt per batch, in input order.

    Args:
        home: the home.
        group: prepared batches (any mix of tenants, accepted or rejected).
        clock: time source for receipts.
        remember: keep a summary of each commit for this process's next fold (when one
            follows: `ingest` with `fold`), so that it does not read the rows back.

    Returns:
        The sealed receipts; `status` is accepted, rejected or duplicate.
    """
    sealed: dict[int, dict[str, Any]] = {}
    domains: dict[str | None, list[int]] = {}
    for i, prepared in enumerate(group):
        domains.setdefault(prepared.tenant, []).append(i)
    for tenant in sorted(domains, key=lambda t: (t is None, t or "")):
        members = domains[tenant]
        with home.commit_lock(tenant) as fence:
            if tenant is not None:
                repair(home, tenant, clock(), fence)
            receipts = _commit_domain(
                home, tenant, [group[i] for i in members], clock, fence, remember=remember
            )
        sealed.update(zip(members, receipts, strict=True))
    out = [sealed[i] for i in range(len(group))]
    for receipt in out:
        log_batch(receipt)
    return out


def _commit_domain(
    home: Home,
    tenant: str | None,
    group: list[Prepared],
    clock: Clock,
    fence: Fence,
    *,
    remember: bool = False,
) -> list[dict[str, Any]]:
    # The lake's verdict comes first: a batch already in is a duplicate, whatever this
    # attempt's validation said (e.g. a retry under a stricter policy than the one it went in).
    known = [p.sha for p in group if p.context is not None]
    present = batches_in_lake(home, tenant, known) if tenant is not None and known else set()
    drafts: dict[int, dict[str, Any]] = {}
    accepted: list[tuple[int, Prepared]] = []
    seen: set[str] = set()
    for i, prepared in enumerate(group):
        if prepared.context is not None and prepared.sha in present:
            prepared.error, prepared.rejections = None, None
            drafts[i] = prepared.receipt("duplicate", clock())
            continue
        if prepared.error is not None or prepared.context is None or prepared.rows is None:
            continue
        if prepared.sha in seen:
            drafts[i] = prepared.receipt("duplicate", clock())
            continue
        try:
            _check_overflow(home, prepared, [p for _, p in accepted], clock(), fence)
        except BatchRejected as exc:
            prepared.reject(exc)
            continue
        seen.add(prepared.sha)
        accepted.append((i, prepared))
    versions: dict[str, int] = {}
    quarantined = [p for _, p in accepted if p.rejections is not None and p.rejections.height]
    refused = [
        p
        for p in group
        if p.error is not None and p.context and p.rejections is not None and p.rejections.height
    ]
    if quarantined or refused:
        fence.check()
        versions["rejections"] = _append_rejections(home, [*quarantined, *refused], clock())
    if accepted:
        for i, prepared in accepted:
            drafts[i] = prepared.receipt("accepted", clock())
        rows = pl.concat([p.rows for _, p in accepted if p.rows is not None])
        fence.check()
        versions["runtime_fact_batches"] = home.lake.append(
            "runtime_fact_batches",
            rows,
            metadata=commit_metadata([drafts[i] for i, _ in accepted]),
        )
        assert tenant is not None  # accepted batches have a context, hence a tenant
        record_commit(home, tenant, versions["runtime_fact_batches"], rows)
        if remember:
            remember_commit(home, tenant, versions["runtime_fact_batches"], rows)
    sealed = []
    for i, prepared in enumerate(group):
        draft = drafts.get(i) or prepared.receipt("rejected", clock())
        if draft["status"] != "duplicate":
            draft["table_versions"] = dict(versions)
        fence.check()
        sealed.append(home.receipts.append(draft))
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


def _check_overflow(
    home: Home, prepared: Prepared, same_commit: list[Prepared], now: datetime, fence: Fence
) -> None:
    """Refuse a batch whose hits would push a cumulative counter past 2^63-1.

    Every key's cumulative count is bounded by its tenant's total hits in the lake; only past
    that bound are pending batches folded and the keys summed exactly.
    """
    assert prepared.context is not None
    assert prepared.rows is not None
    tenant = prepared.context.tenant
    bound = tenant_hits(home, tenant) + sum(p.hit_total for p in same_commit)
    if bound + prepared.hit_total <= INT64_MAX:
        return
    fold_tenant(home, tenant, now, fence)
    keys = prepared.rows.select("subject_key").unique().get_column("subject_key").to_list()
    current = home.lake.read(
        "runtime_facts", tenant=tenant, where=pl.col("subject_key").is_in(keys)
    )
    rows = pl.concat([p.rows for p in [*same_commit, prepared] if p.rows is not None])
    fold_facts(current, rows, now)  # raises hit_count_overflow
