"""Ingest exactly one staged batch: the unit of work of one mapped Airflow task.

`ingest_one` is `prepare_batch` (outside the lock) followed by `commit_batch` (inside it),
so any number of them may run at once, in threads or processes, alongside a CLI `ingest`:
the commit lock and the batch-presence check make each batch count once. It does not fold;
the DAG folds once after every batch of the run is committed.

A rejected batch is a normal outcome (it is receipted and returned). A missing CAS object
or an unwritable lake is an infrastructure failure and raises, so the scheduler retries.
Every CAS miss is also appended to `metrics/cas_misses.log` before raising, because a miss
leaves no receipt and `signals_runtime_cas_miss_total` must still count it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from runtime_facts.errors import BatchRejected, NotFoundError, Reason
from runtime_facts.home import Home
from runtime_facts.pipeline.commit import commit_batch
from runtime_facts.pipeline.ingest import Clock, prepare_batch, utc_now
from runtime_facts.stores.cas import cas_uri

CAS_MISSES_LOG = ("metrics", "cas_misses.log")
OUTCOME_FIELDS = (
    "batch_sha256",
    "cas_uri",
    "source",
    "status",
    "tenant",
    "subject_key",
    "callgraph_id",
    "line_count",
    "accepted_count",
    "rejected_count",
    "key_count",
    "reason_codes",
    "detail",
    "duration_ms",
    "sequence",
    "receipt_sha256",
)


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
    """Validate, dedupe and commit one staged batch, and return its receipt in brief.

    Args:
        home: the home holding the batch and the tables.
        sha: the batch digest (hex sha256).
        source: `cas` or `offline-kit`, recorded in the receipt.
        tenant: when given, a batch of another tenant is rejected (`tenant_mismatch`).
        allow_partial: quarantine bad lines instead of rejecting the batch (default: settings).
        sealed: sealed mode (default: settings).
        clock: time source.

    Returns:
        The sealed receipt projected to `OUTCOME_FIELDS`: small and JSON-serialisable, so it
        can travel through XCom. `status` is `accepted`, `rejected` or `duplicate`.

    Raises:
        NotFoundError: the batch or its context sidecar is missing from CAS (a CAS miss).
        OSError: the lake or the receipts log cannot be written.
    """
    home.ensure_lake()
    try:
        prepared = prepare_batch(
            home, sha, source=source, allow_partial=allow_partial, sealed=sealed, clock=clock
        )
    except NotFoundError as exc:
        _record_cas_miss(home, sha, clock())
        raise NotFoundError(
            Reason.CAS_MISS,
            f"CAS miss: {cas_uri('runtime', sha)} ({exc.message})",
            hint="re-stage the batch (runtime-facts cas put) or restore the CAS; the task retries",
        ) from exc
    except FileNotFoundError as exc:
        _record_cas_miss(home, sha, clock())
        raise NotFoundError(
            Reason.CAS_MISS,
            f"CAS miss: {cas_uri('runtime', sha)} is not in the store",
            hint="re-stage the batch (runtime-facts cas put) or restore the CAS; the task retries",
        ) from exc
    ctx = prepared.context
    if tenant is not None and ctx is not None and ctx.tenant != tenant:
        prepared.error = BatchRejected(
            Reason.TENANT_MISMATCH, f"batch belongs to tenant {ctx.tenant!r}, not {tenant!r}"
        )
        prepared.rows = None
    receipt = commit_batch(home, prepared, clock)
    return project_receipt(receipt)


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
    """`ingest_one` for each batch of a chunk, in order (see `plan_chunks`).

    Args:
        home: the home holding the batches and the tables.
        shas: the chunk's batch digests.
        source: `cas` or `offline-kit`, recorded in the receipts.
        tenant: only this tenant's batches are accepted (others: `tenant_mismatch`).
        allow_partial: quarantine bad lines instead of rejecting the batch (default: settings).
        sealed: sealed mode (default: settings).
        clock: time source.

    Returns:
        One outcome per batch (see `ingest_one`). A retried chunk reports the batches its
        first try committed as `duplicate`: each batch still counts once.
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


def project_receipt(receipt: dict[str, Any]) -> dict[str, Any]:
    """The XCom-sized part of a sealed receipt (no per-line findings, no frames)."""
    out = {name: receipt.get(name) for name in OUTCOME_FIELDS}
    out["reason_codes"] = list(out["reason_codes"] or [])
    return out


def _record_cas_miss(home: Home, sha: str, now: datetime) -> None:
    line = {"at": now.isoformat(), "batch_sha256": sha, "cas_uri": cas_uri("runtime", sha)}
    with home.path(*CAS_MISSES_LOG).open("ab") as handle:
        handle.write(orjson.dumps(line) + b"\n")


def count_cas_misses(home: Home) -> int:
    """How many CAS misses `ingest_one` has met in this home (cumulative)."""
    path = home.root.joinpath(*CAS_MISSES_LOG)
    if not path.exists():
        return 0
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())
