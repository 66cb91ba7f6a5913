"""Stage 2, outside any lock: read a staged batch, verify, decompress, validate and dedupe it.

Many batches are prepared at once (threads here, mapped tasks in Airflow); nothing is written
but the CAS-miss counter. What comes out is a `Prepared` batch: rows ready to commit, or the
reason it is rejected. A batch whose bytes are staged but whose context sidecar is missing or
damaged is a rejected batch (its own receipt, `context_missing` / `invalid_context`), never a
reason to stop the other batches; a batch whose bytes are missing is a CAS miss (raised: the
store is broken, the task retries).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime

import orjson
import polars as pl

from runtime_facts.errors import (
    BatchRejected,
    NotFoundError,
    Reason,
    RejectedError,
    RuntimeFactsError,
    UsageError,
)
from runtime_facts.home import Home
from runtime_facts.pipeline.outcomes import Clock, IngestOptions, Prepared, rejected_lines, utc_now
from runtime_facts.stores.cas import cas_uri, parse_cas_uri
from runtime_facts.subject import SubjectContext
from runtime_facts.tracing import batch_span
from transforms.decompress import gunzip_scratch
from transforms.dedupe import build_batch_rows

CAS_MISSES_LOG = ("metrics", "cas_misses.log")
_MISS_HINT = "re-stage the batch (runtime-facts cas put) or restore the CAS; the task retries"


def prepare_batch(
    home: Home, sha: str, options: IngestOptions | None = None, *, clock: Clock = utc_now
) -> Prepared:
    """Prepare one staged batch inside a trace span (a no-op unless OTLP is configured).

    Args:
        home: the home holding the batch.
        sha: the batch digest.
        options: the run's options (source, tenant, policy); default: the settings'.
        clock: time source for `started_at` / `ingested_at`.

    Returns:
        A Prepared batch; `error` is set when the batch is to be rejected.

    Raises:
        NotFoundError: the batch's bytes are not in CAS (a CAS miss, also counted).
    """
    opts = options or IngestOptions()
    with batch_span(sha, {"casUri": cas_uri("runtime", sha)}) as span:
        try:
            prepared = _prepare(home, sha, opts, clock)
        except (NotFoundError, FileNotFoundError) as exc:
            record_cas_miss(home, sha, clock())
            detail = exc.message if isinstance(exc, NotFoundError) else "not in the store"
            raise NotFoundError(
                Reason.CAS_MISS, f"CAS miss: {cas_uri('runtime', sha)} ({detail})", hint=_MISS_HINT
            ) from exc
        if span.is_recording() and prepared.context is not None:
            span.set_attribute("callgraphId", prepared.context.callgraph_id)
            span.set_attribute("subjectKey", prepared.context.subject_key)
            span.set_attribute("eventCount", prepared.line_count)
        return prepared


def _prepare(home: Home, sha: str, opts: IngestOptions, clock: Clock) -> Prepared:
    # numpy, pyarrow and the kernel load with the first batch: a run with none goes without.
    from transforms.validate import Limits, validate_deduped

    cfg = home.settings.ingest
    sealed_mode = opts.sealed_mode(cfg)
    prepared = Prepared(sha=sha, source=opts.source, started_at=clock())
    t0 = time.perf_counter()
    parse_cas_uri(cas_uri("runtime", sha))  # a malformed digest is the caller's mistake
    prepared.compressed_bytes = home.cas.size("runtime", sha)  # missing bytes: a CAS miss
    try:
        prepared.context = _read_context(home, sha)
        if opts.tenant is not None and prepared.context.tenant != opts.tenant:
            raise BatchRejected(
                Reason.TENANT_MISMATCH,
                f"batch belongs to tenant {prepared.context.tenant!r}, not {opts.tenant!r}",
            )
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
        limits = Limits(cfg.max_line_bytes, cfg.max_nesting_depth, cfg.max_number_digits)
        with gunzip_scratch(
            data, max_output=cfg.max_decompressed_bytes, max_ratio=cfg.max_compression_ratio
        ) as text:
            prepared.decompressed_bytes = len(text)
            del data
            result = validate_deduped(text, limits)  # nothing in it points into `text`
        prepared.line_count = result.line_count
        prepared.unknown_fields = result.unknown_fields
        prepared.rejections = result.rejections
        if result.rejections.height and not opts.partial(cfg):
            raise BatchRejected(
                Reason.INVALID_LINES,
                f"{result.rejections.height} of {result.line_count} lines are invalid",
                lines=rejected_lines(result.rejections),
                hint="fix the probe output, or ingest with --allow-partial to quarantine bad lines",
            )
        if result.valid_count == 0:
            raise BatchRejected(
                Reason.NO_VALID_LINES,
                "no valid line to ingest",
                lines=rejected_lines(result.rejections),
            )
        deduped = result.keys()
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
        prepared.reject(exc)
    except RejectedError as exc:  # a malformed sidecar and the like
        prepared.reject(BatchRejected(exc.reason, exc.message, hint=exc.hint))
    prepared.prepare_seconds = time.perf_counter() - t0
    return prepared


def _read_context(home: Home, sha: str) -> SubjectContext:
    """The batch's subject context; a missing or invalid sidecar rejects this batch only."""
    uri = cas_uri("runtime", sha)
    try:
        return home.cas.subject_context(sha)
    except NotFoundError as exc:
        raise BatchRejected(
            Reason.CONTEXT_MISSING,
            f"{uri} has no subject-context sidecar",
            hint="restore the sidecar (or re-stage with runtime-facts cas put), then "
            "runtime-facts ingest --retry " + sha,
        ) from exc
    except UsageError as exc:  # the sidecar names an invalid tenant or id: bad data
        raise BatchRejected(
            Reason.INVALID_CONTEXT,
            f"the context sidecar of {uri} is invalid: {exc.message}",
            hint="the sidecar was altered; restore it or re-stage the batch, then "
            "runtime-facts ingest --retry " + sha,
        ) from exc


def discover_pending(
    home: Home, tenant: str | None = None, *, retry_rejected: bool = False
) -> list[str]:
    """Staged runtime batches not yet in the lake and with no final receipt, sorted.

    The lake decides what is in (`runtime_fact_batches`); a rejected receipt makes a batch
    final for scheduled runs (`ingest --retry` re-attempts it).
    """
    from runtime_facts.pipeline.ledger import batches_in_lake

    opts = IngestOptions(tenant=tenant)
    index = home.receipt_index.refresh()
    staged = [
        s for s in home.cas.list("runtime") if not index.done(s, retry_rejected=retry_rejected)
    ]
    if opts.tenant is not None:
        staged = [sha for sha in staged if _tenant_of(home, sha) == opts.tenant]
    if not staged or not home.lake.exists():
        return staged
    by_tenant: dict[str | None, list[str]] = {}
    for sha in staged:
        by_tenant.setdefault(_tenant_of(home, sha), []).append(sha)
    pending: list[str] = []
    for name, shas in by_tenant.items():
        present = batches_in_lake(home, name, shas) if name is not None else set()
        pending.extend(s for s in shas if s not in present)
    return sorted(pending)


def _tenant_of(home: Home, sha: str) -> str | None:
    try:
        return str(home.cas.subject_context(sha).tenant)
    except (RuntimeFactsError, ValueError):  # no or unreadable sidecar: no tenant
        return None


WORKER_NAME = "prepare"  # the workers' thread names begin with it


def iter_prepared(
    home: Home,
    shas: Iterable[str],
    options: IngestOptions,
    *,
    workers: int,
    clock: Clock,
    ahead: int = 0,
) -> Iterator[Prepared]:
    """Prepare batches on a thread pool, yielded in input order.

    At most `workers` batches are being prepared at a time, and at most 2 x workers + `ahead`
    are submitted but not yet taken. A consumer that holds `ahead` batches before it commits
    them (a commit group) gives `ahead`: the workers then go on preparing while it commits,
    instead of idling once the window is full. A prepared batch waiting to be taken is only
    its deduped rows (`dedupe.owned`), so the larger window costs little memory. Once
    the last batch is submitted, the workers end as the queue empties: a thread's memory
    (its scratch mapping, its grouper) goes with it, before the consumer's last commits.
    """
    window_size = 2 * max(1, workers) + max(0, ahead)
    todo = list(shas)
    if todo:
        import transforms.validate  # noqa: F401  (loaded here once, not by two workers at once)
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix=WORKER_NAME) as pool:
        window: list[Future[Prepared]] = []
        for n, sha in enumerate(todo, 1):
            window.append(pool.submit(prepare_batch, home, sha, options, clock=clock))
            if n == len(todo):
                # Nothing more to submit: each worker ends once the queue is empty, and with
                # it its thread's memory (scratch mapping, grouper), before the last commits.
                pool.shutdown(wait=False)
            if len(window) >= window_size:
                yield window.pop(0).result()
        for future in window:
            yield future.result()


def record_cas_miss(home: Home, sha: str, now: datetime) -> None:
    """Count a CAS miss (a miss leaves no receipt; `signals_runtime_cas_miss_total` reads this)."""
    line = {"at": now.isoformat(), "batch_sha256": sha, "cas_uri": cas_uri("runtime", sha)}
    with home.path(*CAS_MISSES_LOG).open("ab") as handle:
        handle.write(orjson.dumps(line) + b"\n")


def count_cas_misses(home: Home) -> int:
    """How many CAS misses ingest has met in this home (cumulative)."""
    path = home.root.joinpath(*CAS_MISSES_LOG)
    if not path.exists():
        return 0
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())
