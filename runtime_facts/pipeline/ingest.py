"""Ingest staged batches: validate and dedupe outside the lock, commit inside it, then fold.

Commit protocol (all under the home's commit lock, so it is safe across processes):
an intent marker is written, the batch's rows go to `runtime_fact_batches` in one Delta
commit, the receipt is appended to the log and mirrored to `ingest_receipts`, the marker is
removed. `reconcile` finishes whatever a crash interrupted; `fold_pending` moves every batch
row not yet folded into `runtime_facts` in one commit stamped with the batch table version
it folded through (a Delta app transaction), so a fold is never applied twice.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import polars as pl

from runtime_facts import __version__
from runtime_facts.errors import (
    BatchRejected,
    Reason,
    RejectedError,
    RuntimeFactsError,
    UsageError,
)
from runtime_facts.home import Home
from runtime_facts.pipeline.commit import (
    commit_batches,
    fold_pending,
    reconcile,
    sync_receipts,
)
from runtime_facts.stores.cas import cas_uri, parse_cas_uri
from runtime_facts.stores.receipts import canonical_json
from runtime_facts.subject import SubjectContext, validate_tenant
from runtime_facts.tracing import batch_span
from transforms.decompress import gunzip_bounded
from transforms.dedupe import build_batch_rows, dedupe_events
from transforms.validate import Limits, validate_events

Clock = Callable[[], datetime]
MAX_LINES_IN_RECEIPT = 1000
COMMIT_GROUP = 8  # ready batches committed together: one Delta commit, one receipt each


def utc_now() -> datetime:
    """The wall clock, UTC (jobs read it; transforms are handed `now`)."""
    return datetime.now(UTC)


@dataclass
class Prepared:
    """A batch validated and deduped, ready to commit (or already known to be rejected)."""

    sha: str
    source: str
    started_at: datetime
    context: SubjectContext | None = None
    compressed_bytes: int = 0
    decompressed_bytes: int = 0
    line_count: int = 0
    rows: pl.DataFrame | None = None
    rejections: pl.DataFrame | None = None
    unknown_fields: dict[str, int] = field(default_factory=dict)
    error: BatchRejected | None = None
    prepare_seconds: float = 0.0
    hit_total: int = 0

    def receipt(self, status: str, finished_at: datetime, **extra: Any) -> dict[str, Any]:
        """The receipt draft for this attempt (sealed later onto the chain)."""
        rej = self.rejections if self.rejections is not None else pl.DataFrame()
        lines = self.error.lines if self.error and self.error.lines else _lines(rej)
        reasons = sorted({r for _, r, _ in lines} | ({self.error.reason} if self.error else set()))
        accepted = 0 if status == "rejected" else self.line_count - len(lines)
        ctx = self.context
        receipt: dict[str, Any] = {
            "batch_sha256": self.sha,
            "cas_uri": cas_uri("runtime", self.sha),
            "source": self.source,
            "tenant": ctx.tenant if ctx else None,
            "subject_key": ctx.subject_key if ctx else None,
            "callgraph_id": ctx.callgraph_id if ctx else None,
            "context_sha256": (
                hashlib.sha256(canonical_json(ctx.to_json())).hexdigest() if ctx else None
            ),
            "status": status,
            "line_count": self.line_count,
            "accepted_count": accepted if status == "accepted" else 0,
            "rejected_count": len(lines),
            "key_count": self.rows.height if self.rows is not None and status == "accepted" else 0,
            "reason_codes": reasons,
            "detail": self.error.message if self.error else None,
            "rejected_lines": [
                {"line": n, "reason": r, "detail": d} for n, r, d in lines[:MAX_LINES_IN_RECEIPT]
            ],
            "unknown_fields": self.unknown_fields,
            "compressed_bytes": self.compressed_bytes,
            "decompressed_bytes": self.decompressed_bytes,
            "started_at": self.started_at.isoformat(),
            "finished_at": finished_at.isoformat(),
            "duration_ms": round((finished_at - self.started_at).total_seconds() * 1000, 3),
            "table_versions": {},
            "hit_count_total": str(self.hit_total) if status == "accepted" else "0",
            "pipeline_version": __version__,
        }
        receipt.update(extra)
        return receipt


@dataclass
class BatchOutcome:
    """What happened to one batch attempt."""

    batch_sha256: str
    status: str
    tenant: str | None
    subject_key: str | None
    callgraph_id: str | None
    line_count: int
    accepted_count: int
    rejected_count: int
    key_count: int
    reason_codes: list[str]
    detail: str | None
    receipt_sha256: str

    @classmethod
    def from_receipt(cls, receipt: dict[str, Any]) -> BatchOutcome:
        """Project a sealed receipt."""
        names = cls.__dataclass_fields__
        return cls(**{k: receipt.get(k) for k in names})  # type: ignore[arg-type]


@dataclass
class IngestSummary:
    """Totals of one ingest run."""

    batches: int = 0
    accepted: int = 0
    rejected: int = 0
    duplicate: int = 0
    events: int = 0
    keys: int = 0
    rejected_lines: int = 0
    facts_version: int | None = None
    states_changed: int = 0
    touched_subjects: list[tuple[str, str, str]] = field(default_factory=list)
    outcomes: list[BatchOutcome] = field(default_factory=list)

    def add(self, outcome: BatchOutcome) -> None:
        """Count one batch outcome."""
        self.batches += 1
        self.outcomes.append(outcome)
        if outcome.status == "accepted":
            self.accepted += 1
            self.events += outcome.accepted_count
            self.keys += outcome.key_count
        elif outcome.status == "duplicate":
            self.duplicate += 1
        else:
            self.rejected += 1
        self.rejected_lines += outcome.rejected_count

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return asdict(self)


def prepare_batch(
    home: Home,
    sha: str,
    *,
    source: str = "cas",
    allow_partial: bool | None = None,
    sealed: bool | None = None,
    clock: Clock = utc_now,
) -> Prepared:
    """`_prepare_batch` inside a trace span (a no-op unless an OTLP endpoint is configured)."""
    with batch_span(sha, {"casUri": cas_uri("runtime", sha)}) as span:
        prepared = _prepare_batch(
            home, sha, source=source, allow_partial=allow_partial, sealed=sealed, clock=clock
        )
        if span.is_recording() and prepared.context is not None:
            span.set_attribute("callgraphId", prepared.context.callgraph_id)
            span.set_attribute("subjectKey", prepared.context.subject_key)
            span.set_attribute("eventCount", prepared.line_count)
        return prepared


def _prepare_batch(
    home: Home,
    sha: str,
    *,
    source: str = "cas",
    allow_partial: bool | None = None,
    sealed: bool | None = None,
    clock: Clock = utc_now,
) -> Prepared:
    """Read a staged batch from CAS, verify, decompress, validate and dedupe it.

    Args:
        home: the home holding the batch.
        sha: the batch digest.
        source: `cas` or `offline-kit`, recorded in the receipt.
        allow_partial: quarantine bad lines instead of rejecting the batch (default: settings).
        sealed: sealed mode (default: settings).
        clock: time source for `started_at` / `ingested_at`.

    Returns:
        A Prepared batch; `error` is set when the batch is to be rejected.

    Raises:
        NotFoundError: the object is missing (a CAS miss is an infrastructure failure).
    """
    cfg = home.settings.ingest
    partial = cfg.allow_partial if allow_partial is None else allow_partial
    sealed_mode = cfg.sealed if sealed is None else sealed
    prepared = Prepared(sha=sha, source=source, started_at=clock())
    t0 = time.perf_counter()
    parse_cas_uri(cas_uri("runtime", sha))  # a malformed digest is the caller's mistake
    try:
        try:
            prepared.context = home.cas.subject_context(sha)
        except UsageError as exc:  # the sidecar names an invalid tenant or id: bad data
            raise BatchRejected(
                Reason.INVALID_CONTEXT,
                f"the context sidecar of {cas_uri('runtime', sha)} is invalid: {exc.message}",
                hint="the sidecar was altered; restore it or re-stage the batch",
            ) from exc
        prepared.compressed_bytes = home.cas.size("runtime", sha)
        if prepared.compressed_bytes > cfg.max_batch_bytes:
            raise BatchRejected(
                Reason.BATCH_TOO_LARGE,
                f"{prepared.compressed_bytes} bytes compressed > {cfg.max_batch_bytes}",
                hint="split the batch into chunks of at most 10 MiB",
            )
        try:
            data = home.cas.get("runtime", sha)
        except RejectedError as exc:
            reason = Reason.SEALED_MODE_EVIDENCE_INVALID if sealed_mode else exc.reason
            raise BatchRejected(reason, exc.message) from exc
        text = gunzip_bounded(
            data, max_output=cfg.max_decompressed_bytes, max_ratio=cfg.max_compression_ratio
        )
        prepared.decompressed_bytes = len(text)
        del data
        limits = Limits(cfg.max_line_bytes, cfg.max_nesting_depth, cfg.max_number_digits)
        result = validate_events(text, limits)
        del text
        prepared.line_count = result.line_count
        prepared.unknown_fields = result.unknown_fields
        prepared.rejections = result.rejections
        if result.rejections.height and not partial:
            raise BatchRejected(
                Reason.INVALID_LINES,
                f"{result.rejections.height} of {result.line_count} lines are invalid",
                lines=_lines(result.rejections),
                hint="fix the probe output, or ingest with --allow-partial to quarantine bad lines",
            )
        if result.events.is_empty():
            raise BatchRejected(
                Reason.NO_VALID_LINES, "no valid line to ingest", lines=_lines(result.rejections)
            )
        deduped = dedupe_events(result.events)
        prepared.hit_total = int(deduped.get_column("hit_count").cast(pl.Int128).sum())
        ctx = prepared.context
        prepared.rows = build_batch_rows(
            deduped,
            batch_sha256=sha,
            cas_uri=cas_uri("runtime", sha),
            tenant=ctx.tenant,
            callgraph_id=ctx.callgraph_id,
            subject_key=ctx.subject_key,
            ingested_at=prepared.started_at,
        )
    except BatchRejected as exc:
        prepared.error = exc
        prepared.rows = None
    except RejectedError as exc:  # malformed sidecar and the like
        prepared.error = BatchRejected(exc.reason, exc.message)
    prepared.prepare_seconds = time.perf_counter() - t0
    return prepared


def discover_pending(
    home: Home, tenant: str | None = None, *, retry_rejected: bool = False
) -> list[str]:
    """Staged runtime batches with no final receipt yet (optionally one tenant's), sorted."""
    if tenant is not None:
        validate_tenant(tenant)
    index = home.receipt_index.refresh()
    pending = [
        s for s in home.cas.list("runtime") if not index.done(s, retry_rejected=retry_rejected)
    ]
    if tenant is not None:
        pending = [sha for sha in pending if _tenant_of(home, sha) == tenant]
    return pending


def _tenant_of(home: Home, sha: str) -> str | None:
    try:
        return str(home.cas.context("runtime", sha).get("tenant"))
    except (RuntimeFactsError, ValueError):  # no or unreadable sidecar: not this tenant's
        return None


def iter_prepared(
    home: Home, shas: Iterable[str], *, workers: int, **kwargs: Any
) -> Iterator[Prepared]:
    """Prepare batches on a thread pool, in input order, at most 2 x workers in flight."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        window: list[Future[Prepared]] = []
        for sha in shas:
            window.append(pool.submit(prepare_batch, home, sha, **kwargs))
            if len(window) >= 2 * max(1, workers):
                yield window.pop(0).result()
        for future in window:
            yield future.result()


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
    """Ingest the given batches, or every staged batch not yet ingested.

    Args:
        home: where the batches are staged and the tables live.
        shas: batch digests to ingest; None discovers every pending batch.
        tenant: only batches of this tenant (others given explicitly are refused).
        source: recorded in receipts (`cas` or `offline-kit`).
        allow_partial: quarantine bad lines instead of rejecting whole batches.
        sealed: sealed mode.
        fold: fold into `runtime_facts` at the end of the run.
        recompute: recompute reachability states of the subjects the fold touched.
        clock: time source.
        on_batch: called after each batch commit (progress display).

    Returns:
        The run's totals and per-batch outcomes.
    """
    if tenant is not None:
        validate_tenant(tenant)
    home.ensure_lake()
    with home.commit_lock():
        reconcile(home, clock())
    todo = discover_pending(home, tenant) if shas is None else sorted(set(shas))
    summary = IngestSummary()
    group: list[Prepared] = []
    kwargs = {"source": source, "allow_partial": allow_partial, "sealed": sealed, "clock": clock}
    for prepared in iter_prepared(home, todo, workers=home.settings.ingest.workers, **kwargs):
        if tenant is not None and prepared.context and prepared.context.tenant != tenant:
            prepared.error = BatchRejected(
                Reason.TENANT_MISMATCH,
                f"batch belongs to tenant {prepared.context.tenant!r}, not {tenant!r}",
            )
            prepared.rows = None
        group.append(prepared)
        if len(group) >= COMMIT_GROUP:
            _commit(home, group, clock, summary, on_batch)
            group = []
    if group:
        _commit(home, group, clock, summary, on_batch)
    if summary.batches:
        home.receipts.checkpoint(clock())  # with a signing key, every run ends signed
    if fold:
        result = fold_pending(home, clock())
        summary.facts_version = result.facts_version
        summary.touched_subjects = result.subjects
        if recompute:
            from runtime_facts.pipeline.score import recompute_touched

            changed = recompute_touched(home, result.subjects, clock())
            summary.states_changed = len(changed.changed)
    else:
        with home.commit_lock():
            sync_receipts(home)
    return summary


def _commit(
    home: Home,
    group: list[Prepared],
    clock: Clock,
    summary: IngestSummary,
    on_batch: Callable[[BatchOutcome], None] | None,
) -> None:
    for receipt in commit_batches(home, group, clock):
        outcome = BatchOutcome.from_receipt(receipt)
        summary.add(outcome)
        if on_batch is not None:
            on_batch(outcome)


def _lines(rejections: pl.DataFrame) -> list[tuple[int, str, str]]:
    if rejections.is_empty():
        return []
    return [
        (int(n), str(r), str(d or ""))
        for n, r, d in rejections.select("line_number", "reason_code", "detail").iter_rows()
    ]


def receipt_json(receipt: dict[str, Any]) -> str:
    """Pretty JSON of a receipt for people."""
    return orjson.dumps(receipt, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
