"""Stage 4: fold committed batch rows into the cumulative `runtime_facts`, per tenant.

A tenant's fold reads exactly the batch rows committed since its last fold (the change data
feed of `runtime_fact_batches`, pruned to the tenant's partition and streamed through a
DuckDB aggregation; versions this process committed itself just before, as `ingest` does,
are summarised at commit and not read back: `remember_commit`), joins the per-key sums to
the current rows of those keys and appends the new cumulative rows of exactly those keys
(`Lake.upsert`: the cost follows the batch, not the subject) in one commit stamped with a
Delta app transaction (`runtime-facts.fold/<tenant>` = the batch-table version folded
through): a fold is never applied twice, and two tenants fold at the same time. The
subjects it touched are recorded (`state/recompute-pending/<tenant>.json`) before the fold
commits, so a crash between fold and re-score loses no re-score.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from datetime import datetime

import orjson
import polars as pl

from runtime_facts.home import Home
from runtime_facts.pipeline.ledger import repair, sync_receipts
from runtime_facts.stores.lake import sql_literal
from runtime_facts.stores.s3 import Fence
from transforms.dedupe import owned
from transforms.fold import (
    SUMMARY_COLUMNS,
    StreamSummary,
    add_rows,
    combine_summaries,
    fold_touched,
    summarize_batch_stream,
)
from transforms.schema import FACT_KEY, SUBJECT

FOLD_APP = "runtime-facts.fold"
"""Per tenant: `runtime-facts.fold/<tenant>`. The bare id is the whole-home fold of homes
written before folds were per tenant; it still counts as every tenant's starting point."""
_PENDING = "state/recompute-pending"
BACKSTOP = 4
"""A fold merges the recent facts itself only past this many times the merge threshold: the
re-score merges them (so that its score states stay current), and this bounds the recent rows
when re-scores do not follow folds."""
Subject = tuple[str, str, str]


@dataclass(frozen=True)
class FoldedFacts:
    """What one tenant's fold left in `runtime_facts` for the symbols it touched, handed to
    the re-score that follows in the same process (`ingest`) so that it does not read those
    rows back. The re-score takes them only while both facts tables are still at `versions`
    (nothing committed since); otherwise it reads the lake as always.

    `rows[(callgraph_id, subject_key)]` holds every fact row of that subject whose symbol the
    fold touched, as the lake has them after the fold. With `whole`, the tenant had no fact
    rows before the fold, so they are all of the subject's rows.
    """

    versions: tuple[int, int | None]
    rows: dict[tuple[str, str], pl.DataFrame]
    whole: bool


@dataclass
class FoldResult:
    """What a fold did."""

    folded_batches: int = 0
    folded_rows: int = 0
    facts_version: int | None = None
    subjects: list[Subject] = field(default_factory=list)
    folded: dict[str, FoldedFacts] = field(default_factory=dict)
    """Per tenant, the rows it folded (in memory only: not part of a task's result)."""

    def merge(self, other: FoldResult) -> None:
        """Add another tenant's fold."""
        self.folded_batches += other.folded_batches
        self.folded_rows += other.folded_rows
        if other.facts_version is not None:
            self.facts_version = max(self.facts_version or 0, other.facts_version)
        self.subjects = sorted({*self.subjects, *other.subjects})
        self.folded.update(other.folded)


def fold_app(tenant: str) -> str:
    """The app-transaction id of a tenant's fold."""
    return f"{FOLD_APP}/{tenant}"


def fold_pending(home: Home, now: datetime, tenants: list[str] | None = None) -> FoldResult:
    """Fold every committed batch row not yet in `runtime_facts` (idempotent, crash-safe).

    Args:
        home: the home.
        now: stamped as `updated_at` of the changed facts.
        tenants: the tenants to fold (default: every tenant in the lake).

    Returns:
        The folded totals and the touched (tenant, callgraph_id, subject_key) triples.
    """
    home.ensure_lake()
    result = FoldResult(facts_version=home.lake.version("runtime_facts"))
    for tenant in sorted(set(tenants if tenants is not None else home.tenants())):
        with home.commit_lock(tenant) as fence:
            repair(home, tenant, now, fence)
            result.merge(fold_tenant(home, tenant, now, fence))
            sync_receipts(home, tenant)
    return result


def fold_tenant(home: Home, tenant: str, now: datetime, fence: Fence) -> FoldResult:
    """One tenant's fold; call under the tenant's commit lock."""
    lake = home.lake
    done = folded_through(home, tenant)
    head = lake.version("runtime_fact_batches")
    result = FoldResult(facts_version=lake.version("runtime_facts"))
    if done is not None and done >= head:
        return result
    start = 0 if done is None else done + 1
    table_id = str(lake.table("runtime_fact_batches").metadata().id)
    parts, unknown = _own_commits(lake.root, table_id, tenant, start, head)
    for first, last in unknown:
        reader = lake.change_reader(
            "runtime_fact_batches",
            first,
            last,
            list(SUMMARY_COLUMNS),
            predicate=f"tenant = {sql_literal(tenant)}",
        )
        parts.append(summarize_batch_stream(reader))
    stream = combine_summaries(parts)
    if not stream.rows:
        return result
    summary = stream.summary
    triples = sorted(
        (str(t), str(c), str(s)) for t, c, s in summary.select(SUBJECT).unique().iter_rows()
    )
    keys = sorted({s for _, _, s in triples})
    symbols = summary.get_column("symbol_id").unique().implode()
    where = pl.col("subject_key").is_in(keys) & pl.col("symbol_id").is_in(symbols)
    whole = not lake.has_files("runtime_facts", tenant)  # the tenant's first fold
    current = lake.read("runtime_facts", tenant=tenant, where=where)  # the touched symbols' rows
    folded = fold_touched(current, summary, now)
    write_pending(home, tenant, {**pending_recompute(home, tenant), **dict.fromkeys(triples, head)})
    fence.check()
    result.facts_version = lake.upsert("runtime_facts", folded, head, txn=(fold_app(tenant), head))
    if lake.merge_due("runtime_facts", tenant, factor=BACKSTOP):
        fence.check()  # normally merged after the re-score (`merge_after_rescore`)
        lake.merge_recent("runtime_facts", tenant)  # the merged rows stay what they were
    result.folded[tenant] = _folded_facts(
        lake.versions("runtime_facts"), [(c, s) for _, c, s in triples], current, folded, whole
    )
    result.subjects = triples
    result.folded_batches = stream.batches
    result.folded_rows = stream.rows
    _forget_commits(lake.root, table_id, tenant, head)
    return result


def _folded_facts(
    versions: tuple[int, int | None],
    subjects: list[tuple[str, str]],
    current: pl.DataFrame,
    folded: pl.DataFrame,
    whole: bool,
) -> FoldedFacts:
    """Per subject (`subjects`: those of `folded`), its rows of the symbols `folded` touched:
    the current rows of those symbols (`current` holds them all) with the folded keys' rows
    replaced."""
    subject = ["callgraph_id", "subject_key"]
    if len(subjects) == 1:
        parts = {subjects[0]: folded}
    else:
        parts = {
            (str(c), str(s)): rows
            for (c, s), rows in folded.partition_by(
                subject, as_dict=True, maintain_order=True
            ).items()
        }
    if current.is_empty():  # no earlier rows of these symbols: the folded rows are all
        return FoldedFacts(versions, parts, whole)
    kept = current.join(folded.select(FACT_KEY), on=FACT_KEY, how="anti", nulls_equal=True)
    rows: dict[tuple[str, str], pl.DataFrame] = {}
    for key, new in parts.items():
        old = kept.filter(
            (pl.col("callgraph_id") == key[0])
            & (pl.col("subject_key") == key[1])
            & pl.col("symbol_id").is_in(new.get_column("symbol_id").implode())
        )
        rows[key] = pl.concat([old, new.select(old.columns)])
    return FoldedFacts(versions, rows, whole)


# What this process committed to the batch table and will fold (`remember_commit`): per
# (lake root, table id, tenant), the versions and one summary of all their rows, kept in
# buffers of its own (memory follows the distinct keys, not the batches). A fold takes it
# instead of reading those versions back; every other version is read from the change feed.
@dataclass
class _Committed:
    versions: set[int]
    summary: StreamSummary


_OWN: dict[tuple[str, str, str], _Committed] = {}
_OWN_LOCK = threading.Lock()


def remember_commit(home: Home, tenant: str, version: int, rows: pl.DataFrame) -> None:
    """Add `rows`, just committed by this process as `version` of `runtime_fact_batches`
    (a version holds one tenant's rows), to what the next fold takes from memory.
    Call under the tenant's commit lock, right after the commit."""
    table = home.lake.table("runtime_fact_batches")
    if table.version() != version:
        return  # the handle moved past the commit: nothing to vouch for
    key = (home.lake.root, str(table.metadata().id), tenant)
    with _OWN_LOCK:
        held = _OWN.get(key)
        summary = add_rows(held.summary if held is not None else None, rows)
        versions = {version} | (held.versions if held is not None else set())
        _OWN[key] = _Committed(
            versions, dataclasses.replace(summary, summary=owned(summary.summary))
        )


def _own_commits(
    root: str, table_id: str, tenant: str, start: int, head: int
) -> tuple[list[StreamSummary], list[tuple[int, int]]]:
    """The remembered summary if all its versions are in start..head (else none: a version
    folded elsewhere meanwhile must not count twice), and the ranges of the other versions
    (the whole range when they are scattered over more than `_MAX_RANGES` ranges: one read
    of the change feed then costs less than many)."""
    with _OWN_LOCK:
        held = _OWN.get((root, table_id, tenant))
    if held is None or not all(start <= v <= head for v in held.versions):
        return [], [(start, head)]
    unknown: list[tuple[int, int]] = []
    for version in range(start, head + 1):
        if version in held.versions:
            continue
        if unknown and unknown[-1][1] == version - 1:
            unknown[-1] = (unknown[-1][0], version)
        else:
            unknown.append((version, version))
    if len(unknown) > _MAX_RANGES:
        return [], [(start, head)]
    return [held.summary], unknown


_MAX_RANGES = 8


def _forget_commits(root: str, table_id: str, tenant: str, through: int) -> None:
    """Drop what is folded now (a fold folds every version up to `through`)."""
    with _OWN_LOCK:
        held = _OWN.get((root, table_id, tenant))
        if held is not None and max(held.versions) <= through:
            del _OWN[(root, table_id, tenant)]


def folded_through(home: Home, tenant: str) -> int | None:
    """The batch-table version a tenant's facts are folded through (None: never folded).

    A fold commits to the recent facts table; homes written before it folded into
    `runtime_facts` itself, whose app transactions still count."""
    base, recent = home.lake.merged_tables("runtime_facts")
    done = [
        v
        for table in (base, recent)
        if table is not None
        for v in (table.transaction_version(fold_app(tenant)), table.transaction_version(FOLD_APP))
        if v is not None
    ]
    return max(done, default=None)


def unfolded_from(home: Home) -> int:
    """The first batch-table version some tenant has not folded yet."""
    starts = [(v + 1 if (v := folded_through(home, t)) is not None else 0) for t in home.tenants()]
    return min(starts, default=home.lake.version("runtime_fact_batches") + 1)


def pending_recompute(home: Home, tenant: str | None = None) -> dict[Subject, int]:
    """Folded subjects whose states may be stale (one tenant's, or every tenant's), each with
    the fold (batch version) that last touched it; hand the snapshot back to `clear_recompute`
    once they are recomputed."""
    names = [tenant] if tenant is not None else _pending_tenants(home)
    out: dict[Subject, int] = {}
    for name in names:
        try:
            rows = orjson.loads(home.objects.get(f"{_PENDING}/{name}.json"))
        except FileNotFoundError:
            continue
        out.update({(str(t), str(c), str(s)): int(v) for t, c, s, v in rows})
    return out


def _pending_tenants(home: Home) -> list[str]:
    return sorted(k.rsplit("/", 1)[-1].removesuffix(".json") for k in home.objects.list(_PENDING))


def clear_recompute(home: Home, done: dict[Subject, int]) -> None:
    """Forget the subjects of a `pending_recompute` snapshot, unless folded again since."""
    for tenant in sorted({t for t, _, _ in done}):
        with home.commit_lock(tenant):
            pending = pending_recompute(home, tenant)
            left = {k: v for k, v in pending.items() if done.get(k) != v}
            if left != pending:
                write_pending(home, tenant, left)


def write_pending(home: Home, tenant: str, pending: dict[Subject, int]) -> None:
    """Record (or clear) a tenant's subjects awaiting a re-score."""
    key = f"{_PENDING}/{tenant}.json"
    if pending:
        home.objects.put(key, orjson.dumps(sorted([*k, v] for k, v in pending.items())))
    else:
        home.objects.delete(key)
