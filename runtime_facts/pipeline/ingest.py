"""The ingest run, written once: the CLI, the staging endpoint and every DAG go through here.

`ingest` is the whole run for one process (discover → prepare → commit → fold → score →
publish). A DAG runs the same stages as separate tasks: `discover_chunks`, then
`ingest_chunk` per mapped task, then `fold_pending`, `score_touched` and `publish_run`
(`runtime_facts.airflow.tasks` wires them), so the two paths cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from runtime_facts.home import Home
from runtime_facts.pipeline.commit import commit_batches
from runtime_facts.pipeline.fold import fold_pending, pending_recompute
from runtime_facts.pipeline.ledger import sync_receipts
from runtime_facts.pipeline.outcomes import (
    BatchOutcome,
    Clock,
    IngestOptions,
    IngestSummary,
    Prepared,
    project_receipt,
    utc_now,
)
from runtime_facts.pipeline.prepare import discover_pending, iter_prepared, prepare_batch

COMMIT_GROUP = 8  # ready batches committed together: one Delta commit per tenant, one receipt each


def ingest(
    home: Home,
    shas: list[str] | None = None,
    *,
    tenant: str | None = None,
    source: str = "cas",
    allow_partial: bool | None = None,
    sealed: bool | None = None,
    fold: bool = True,
    recompute: bool = True,
    clock: Clock = utc_now,
    on_batch: Callable[[BatchOutcome], None] | None = None,
) -> IngestSummary:
    """Ingest the given batches, or every staged batch not yet in the lake.

    Args:
        home: where the batches are staged and the tables live.
        shas: batch digests to attempt (a rejected one is re-attempted: `ingest --retry`);
            None discovers every pending batch.
        tenant: only batches of this tenant (others given explicitly are rejected).
        source: recorded in receipts (`cas` or `offline-kit`).
        allow_partial: quarantine bad lines instead of rejecting whole batches.
        sealed: turn sealed mode on for this run (it cannot turn the settings' off).
        fold: fold into `runtime_facts` at the end of the run.
        recompute: recompute reachability states of the subjects the fold touched.
        clock: time source.
        on_batch: called after each batch commit (progress display).

    Returns:
        The run's totals and per-batch outcomes.
    """
    options = IngestOptions(
        source=source, tenant=tenant, allow_partial=allow_partial, sealed=sealed
    )
    home.ensure_lake()
    todo = discover_pending(home, tenant) if shas is None else sorted(set(shas))
    summary = IngestSummary()
    group: list[Prepared] = []
    sizes = iter(commit_groups(len(todo)))
    size = next(sizes, COMMIT_GROUP)
    workers = home.settings.ingest.workers
    for prepared in iter_prepared(
        home, todo, options, workers=workers, clock=clock, ahead=COMMIT_GROUP
    ):
        group.append(prepared)
        if len(group) >= size:
            _commit(home, group, clock, summary, on_batch, remember=fold)
            group = []
            size = next(sizes, COMMIT_GROUP)
    if group:
        _commit(home, group, clock, summary, on_batch, remember=fold)
    if summary.batches:
        home.receipts.checkpoint(clock())  # with a signing key, every run ends signed
    touched = sorted({o.tenant for o in summary.outcomes if o.tenant is not None})
    if fold:
        # Every tenant, not only this run's: a crash elsewhere may have left rows unfolded.
        result = fold_pending(home, clock())
        summary.facts_version = result.facts_version
        summary.touched_subjects = result.subjects
        # Nothing folded now or left unscored by an interrupted run: the scorer (numpy, the
        # lattice) is not even loaded.
        if recompute and (result.subjects or pending_recompute(home)):
            from runtime_facts.pipeline.score import recompute_touched

            changed = recompute_touched(home, result.subjects, clock(), result.folded)
            summary.states_changed = len(changed.changed)
    else:
        for name in touched:
            with home.commit_lock(name):
                sync_receipts(home, name)
    return summary


def commit_groups(count: int, most: int = COMMIT_GROUP) -> list[int]:
    """The sizes of the commit groups for `count` batches: as few groups as `most` allows,
    of equal size (the larger first).

    The run waits for the last group's commit after the last batch is prepared. With full
    groups and a remainder (17 = 8 + 8 + 1), the last full group is still committing when the
    last batch is ready, and the remainder's commit follows it; with 6 + 6 + 5 the commit
    before the last ends while the last batches are being prepared.
    """
    groups = -(-count // most)
    if groups == 0:
        return []
    small, larger = divmod(count, groups)
    return [small + 1] * larger + [small] * (groups - larger)


def _commit(
    home: Home,
    group: list[Prepared],
    clock: Clock,
    summary: IngestSummary,
    on_batch: Callable[[BatchOutcome], None] | None,
    *,
    remember: bool,
) -> None:
    for receipt in commit_batches(home, group, clock, remember=remember):
        outcome = BatchOutcome.from_receipt(receipt)
        summary.add(outcome)
        if on_batch is not None:
            on_batch(outcome)


def ingest_one(
    home: Home,
    sha: str,
    *,
    source: str = "cas",
    tenant: str | None = None,
    allow_partial: bool | None = None,
    sealed: bool | None = None,
    clock: Clock = utc_now,
) -> dict[str, Any]:
    """Prepare (outside any lock) and commit (inside the tenant's) one staged batch.

    Any number of these may run at once, in threads or processes, beside a CLI `ingest`: the
    lake decides under the tenant's lock whether the batch is already in. It does not fold.

    Returns:
        The sealed receipt projected to `OUTCOME_FIELDS` (small enough for XCom).

    Raises:
        NotFoundError: the batch's bytes are missing from CAS (a CAS miss; the task retries).
        OSError: the lake or the receipts log cannot be written.
    """
    home.ensure_lake()
    options = IngestOptions(
        source=source, tenant=tenant, allow_partial=allow_partial, sealed=sealed
    )
    prepared = prepare_batch(home, sha, options, clock=clock)
    return project_receipt(commit_batches(home, [prepared], clock)[0])


def ingest_chunk(
    home: Home,
    shas: list[str],
    *,
    source: str = "cas",
    tenant: str | None = None,
    allow_partial: bool | None = None,
    sealed: bool | None = None,
    clock: Clock = utc_now,
) -> list[dict[str, Any]]:
    """`ingest_one` for each batch of a chunk, in order (one mapped task's work).

    Returns:
        One outcome per batch. A retried chunk reports the batches its first try committed as
        `duplicate`: each batch still counts once.
    """
    return [
        ingest_one(
            home,
            sha,
            source=source,
            tenant=tenant,
            allow_partial=allow_partial,
            sealed=sealed,
            clock=clock,
        )
        for sha in shas
    ]


def discover_chunks(home: Home, tenant: str | None, max_chunks: int) -> list[list[str]]:
    """Pending batches split for mapping (see `plan_chunks`)."""
    return plan_chunks(discover_pending(home, tenant), max_chunks)


def plan_chunks(shas: list[str], max_chunks: int) -> list[list[str]]:
    """Split batches into at most `max_chunks` chunks of equal size, in order.

    One chunk per batch while there are at most `max_chunks` of them (so each batch is its
    own mapped task), fewer, larger chunks beyond that (so a mapped list never exceeds
    Airflow's `[core] max_map_length`).
    """
    if max_chunks < 1:
        raise ValueError("max_chunks must be at least 1")
    size = max(1, -(-len(shas) // max_chunks))
    return [shas[i : i + size] for i in range(0, len(shas), size)]
