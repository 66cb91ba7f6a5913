"""Retention (SPEC §7): expire old facts, delete old unreferenced CAS objects, vacuum the lake.

Rules, all evaluated against the `now` handed in (so a dry run and the real run that follows
with the same `now` decide the same thing):

* A fact expires when `last_observed_at` (or, for events without timestamps, `updated_at`) is
  older than `retention.retention_days`. Expired rows are deleted from `runtime_facts` with one
  Delta delete; `runtime_fact_batches` keeps its rows, so a re-staged old batch is still a
  duplicate, and `reachability_states` is left to the next recompute.
* A CAS object (runtime batch or callgraph) whose file is older than
  `retention.cas_retention_days` (by modification time: objects are immutable, so that is when it
  was staged) is deleted unless it is still referenced:
  - `live_fact`: a runtime batch with a row in `runtime_fact_batches` whose key is still in
    `runtime_facts` after this run's expiry, or a row not folded yet;
  - `not_ingested`: a runtime batch with no receipt yet (it would be lost unread);
  - `graph_in_use`: the current graph of a (tenant, callgraphId) that still has facts or
    reachability states (a superseded graph is not in use; deleting a current graph of an
    unused callgraph also clears it from the graph registry);
  - `graph_unidentified`: a graph whose sidecar does not say whose it is (never guessed);
  - `held_manifest`: cited by a held replay manifest. Operators hold a manifest by copying
    it to `<home>/replay/held/<name>.json`; every `casUri` in it (the `graphs` and
    `runtimeTraces` entries of its `reachability` section) is then kept until the file is
    removed. A held file that is not valid JSON stops the run: nothing is deleted.
* Before anything is deleted, a hash-chained record of exactly what will go (the digest and
  URI of every CAS object, the count and digest of the expired fact keys) is appended to
  `<home>/receipts/retention.log`, so the audit trail survives the data.
* Delta tables are vacuumed with the table's retention window (7 days by default), never less.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from runtime_facts import __version__
from runtime_facts.errors import NotFoundError, RejectedError
from runtime_facts.home import Home
from runtime_facts.pipeline.fold import unfolded_from
from runtime_facts.pipeline.score import forget_score_states
from runtime_facts.stores.cas import Kind, cas_uri
from runtime_facts.stores.graphs import (
    current_graph_sha,
    forget_compiled_graph,
    forget_current_graph,
)
from runtime_facts.stores.lake import ALL_TABLES, TABLES, recent_name
from runtime_facts.stores.receipts import ObjectReceiptLog, ReceiptLog, canonical_json
from runtime_facts.trusted_json import load_trusted
from transforms.schema import FACT_KEY

RETENTION_LOG = "receipts/retention.log"
HELD_MANIFESTS = "replay/held"


@dataclass
class RetentionReport:
    """What a retention run deletes (or, dry, would delete).

    Equality compares only the decisions, so the report of a dry run equals the report of the
    real run that follows it with the same `now`; `dry_run`, the resulting table version and
    the vacuum file counts (which depend on the wall clock inside Delta) are not compared.
    """

    now: str
    facts_cutoff: str
    cas_cutoff: str
    expired_facts: int = 0
    expired_facts_digest: str = ""
    expired_facts_by_subject: list[dict[str, Any]] = field(default_factory=list)
    cas_deleted: list[dict[str, Any]] = field(default_factory=list)
    cas_deleted_bytes: int = 0
    cas_kept: dict[str, str] = field(default_factory=dict)
    dry_run: bool = field(default=True, compare=False)
    facts_version: int | None = field(default=None, compare=False)
    vacuumed_files: dict[str, int] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return asdict(self)


def apply_retention(home: Home, *, dry_run: bool, now: datetime) -> RetentionReport:
    """Apply (or, with `dry_run`, only list) the retention rules of SPEC §7.

    Args:
        home: the home whose facts and CAS objects are aged out.
        dry_run: decide and report, delete nothing (vacuum only lists its files).
        now: the reference time the cutoffs are computed from (UTC).

    Returns:
        The decisions: expired facts (count, digest, per subject), CAS objects deleted and
        old objects kept with the reason, plus the facts table version and vacuum counts.

    Raises:
        RejectedError: a held replay manifest cannot be read (`invalid_replay_manifest`).
    """
    if dry_run:
        return _run(home, now, dry_run=True)
    with home.commit_lock():
        return _run(home, now, dry_run=False)


def _run(home: Home, now: datetime, *, dry_run: bool) -> RetentionReport:
    cfg = home.settings.retention
    now = now.astimezone(UTC)
    facts_cutoff = now - timedelta(days=cfg.retention_days)
    cas_cutoff = now - timedelta(days=cfg.cas_retention_days)
    report = RetentionReport(
        now=now.isoformat(),
        facts_cutoff=facts_cutoff.isoformat(),
        cas_cutoff=cas_cutoff.isoformat(),
        dry_run=dry_run,
    )
    held = _held_uris(home)
    has_lake = home.lake.exists()
    empty = pl.DataFrame(schema=TABLES["runtime_facts"])
    facts = home.lake.read("runtime_facts") if has_lake else empty
    expired_mask = pl.coalesce("last_observed_at", "updated_at") < facts_cutoff
    expired = facts.filter(expired_mask.fill_null(False))
    live = facts.filter(~expired_mask.fill_null(False))
    _describe_expired(report, expired)

    old = [(kind, sha) for kind, sha, mtime in _cas_objects(home) if mtime < cas_cutoff]
    kept = _referenced(home, old, live, held, has_lake=has_lake)
    for kind, sha in old:
        uri = cas_uri(kind, sha)
        if uri in kept:
            report.cas_kept[uri] = kept[uri]
            continue
        size = home.cas.size(kind, sha)
        report.cas_deleted.append({"cas_uri": uri, "sha256": sha, "size": size})
        report.cas_deleted_bytes += size
    report.cas_deleted.sort(key=lambda d: str(d["cas_uri"]))
    report.cas_kept = dict(sorted(report.cas_kept.items()))

    if not dry_run and (report.expired_facts or report.cas_deleted):
        _record(home, report)
        if report.expired_facts:
            # Their states are left to the next re-score, which must then be a full one.
            forget_score_states(
                home,
                [
                    (r["tenant"], r["callgraph_id"], r["subject_key"])
                    for r in report.expired_facts_by_subject
                ],
            )
            _delete_facts(home, facts_cutoff, report.expired_facts)
        for item in report.cas_deleted:
            if "/graphs/" in item["cas_uri"]:
                _delete_graph(home, item["sha256"])
            else:
                home.cas.delete("runtime", item["sha256"])
    if has_lake:
        report.facts_version = home.lake.version("runtime_facts")
        for name in ALL_TABLES:
            # Default retention window of the table, enforced: never vacuum below it.
            files = home.lake.table(name).vacuum(dry_run=dry_run, enforce_retention_duration=True)
            report.vacuumed_files[name] = len(files)
    return report


def _describe_expired(report: RetentionReport, expired: pl.DataFrame) -> None:
    report.expired_facts = expired.height
    keys = expired.select(FACT_KEY).sort(FACT_KEY, nulls_last=False)
    digest = hashlib.sha256()
    for row in keys.iter_rows():
        digest.update(canonical_json(list(row)) + b"\n")
    report.expired_facts_digest = "sha256:" + digest.hexdigest()
    by_subject = (
        expired.group_by("tenant", "callgraph_id", "subject_key")
        .len("facts")
        .sort("tenant", "callgraph_id", "subject_key")
    )
    report.expired_facts_by_subject = by_subject.to_dicts()


def _delete_facts(home: Home, cutoff: datetime, expected: int) -> None:
    stamp = cutoff.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    predicate = (
        f"last_observed_at < '{stamp}' OR (last_observed_at IS NULL AND updated_at < '{stamp}')"
    )
    # The delete runs on the base table: merge the recent rows into it first (the home lock is
    # held), or a recent row would bring an expired key back.
    for tenant in home.lake.tenants_of(recent_name("runtime_facts")):
        home.lake.merge_recent("runtime_facts", tenant)
    metrics = home.lake.table("runtime_facts").delete(predicate)
    deleted = int(metrics.get("num_deleted_rows", expected))
    if deleted != expected:  # the lock is held, so this means the predicate disagrees with us
        raise RuntimeError(f"retention deleted {deleted} facts, expected {expected}")


def _cas_objects(home: Home) -> Iterator[tuple[Kind, str, datetime]]:
    kinds: tuple[Kind, ...] = ("runtime", "graphs")
    for kind in kinds:
        for sha in home.cas.list(kind):
            path = home.objects.local_path(f"cas/reachability/{kind}/{sha}")
            if path is None:  # object stores without mtimes keep everything
                continue
            yield kind, sha, datetime.fromtimestamp(path.stat().st_mtime, UTC)


def _held_uris(home: Home) -> set[str]:
    uris: set[str] = set()
    for key in home.objects.list(HELD_MANIFESTS):
        if not key.endswith(".json"):
            continue
        try:
            doc = load_trusted(
                home.objects.get(key),
                f"held replay manifest {home.uri}/{key}",
                hint="fix or remove the file; retention deletes nothing while a hold is unreadable",
            )
        except ValueError as exc:
            raise RejectedError(
                "invalid_replay_manifest",
                f"held replay manifest {home.uri}/{key} is not valid JSON: {exc}",
                hint="fix or remove the file; retention deletes nothing while a hold is unreadable",
            ) from exc
        uris.update(_cas_uris_in(doc))
    return uris


def _cas_uris_in(doc: Any) -> Iterator[str]:
    if isinstance(doc, dict):
        for key, value in doc.items():
            if key == "casUri" and isinstance(value, str):
                yield value
            else:
                yield from _cas_uris_in(value)
    elif isinstance(doc, list):
        for item in doc:
            yield from _cas_uris_in(item)


def _referenced(
    home: Home,
    old: list[tuple[Kind, str]],
    live: pl.DataFrame,
    held: set[str],
    *,
    has_lake: bool,
) -> dict[str, str]:
    """The old objects that must be kept, each with the reason."""
    kept: dict[str, str] = {}
    runtime = [sha for kind, sha in old if kind == "runtime"]
    graphs = [sha for kind, sha in old if kind == "graphs"]
    for kind, sha in old:
        if cas_uri(kind, sha) in held:
            kept[cas_uri(kind, sha)] = "held_manifest"
    if runtime:
        for sha in _live_batches(home, runtime, live, has_lake=has_lake):
            kept.setdefault(cas_uri("runtime", sha), "live_fact")
        for sha in sorted(set(runtime) - _receipted(home, runtime)):
            kept.setdefault(cas_uri("runtime", sha), "not_ingested")
    if graphs:
        in_use = set(live.select("tenant", "callgraph_id").unique().iter_rows())
        if has_lake:
            states = home.lake.scan("reachability_states").select("tenant", "callgraph_id")
            in_use |= set(states.unique().collect().iter_rows())
        for sha in graphs:
            owner = _graph_owner(home, sha)
            if owner is None:
                kept.setdefault(cas_uri("graphs", sha), "graph_unidentified")
            elif owner in in_use and current_graph_sha(home, *owner) == sha:
                kept.setdefault(cas_uri("graphs", sha), "graph_in_use")
    return kept


def _live_batches(home: Home, shas: list[str], live: pl.DataFrame, *, has_lake: bool) -> set[str]:
    if not has_lake:
        return set()
    rows = (
        home.lake.scan("runtime_fact_batches")
        .filter(pl.col("batch_sha256").is_in(shas))
        .select("batch_sha256", *FACT_KEY)
        .collect()
    )
    alive = rows.join(live.select(FACT_KEY), on=FACT_KEY, how="semi", nulls_equal=True)
    found = set(alive.get_column("batch_sha256").to_list())
    start = unfolded_from(home)
    head = home.lake.version("runtime_fact_batches")
    if start <= head:
        pending = home.lake.changes("runtime_fact_batches", start, head, ["batch_sha256"])
        found |= set(pending.get_column("batch_sha256").to_list()) & set(shas)
    return found


def _receipted(home: Home, shas: list[str]) -> set[str]:
    index = home.receipt_index.refresh()
    return {sha for sha in shas if index.done(sha)}


def _graph_owner(home: Home, sha: str) -> tuple[str, str] | None:
    """(tenant, callgraphId) of a stored graph, from its sidecar; None when unreadable."""
    try:
        context = home.cas.context("graphs", sha)
    except (NotFoundError, ValueError):
        return None
    tenant, graph_id = context.get("tenant"), context.get("callgraphId")
    if isinstance(tenant, str) and isinstance(graph_id, str):
        return tenant, graph_id
    return None


def _delete_graph(home: Home, sha: str) -> None:
    """Delete a graph; if it was the current one of its callgraphId, that callgraph has none."""
    owner = _graph_owner(home, sha)
    if owner is not None and current_graph_sha(home, *owner) == sha:
        forget_current_graph(home, *owner)
    home.cas.delete("graphs", sha)
    forget_compiled_graph(home, sha)


def _record(home: Home, report: RetentionReport) -> None:
    """Append the decisions to the hash-chained retention log, before anything is deleted."""
    record = {
        "kind": "retention",
        "now": report.now,
        "facts_cutoff": report.facts_cutoff,
        "cas_cutoff": report.cas_cutoff,
        "expired_facts": report.expired_facts,
        "expired_facts_digest": report.expired_facts_digest,
        "expired_facts_by_subject": report.expired_facts_by_subject,
        "cas_deleted": report.cas_deleted,
        "cas_deleted_bytes": report.cas_deleted_bytes,
        "pipeline_version": __version__,
    }
    retention_log(home).append(record)


def retention_log(home: Home) -> ReceiptLog:
    """The hash-chained retention log (beside the receipts log, in the bucket for S3 homes)."""
    if home.remote:
        return ObjectReceiptLog(home.objects, RETENTION_LOG)
    return ReceiptLog(home.path(*RETENTION_LOG.split("/")))


__all__ = ["HELD_MANIFESTS", "RETENTION_LOG", "RetentionReport", "apply_retention", "retention_log"]


def retention_task(home: Home, params: dict[str, Any]) -> dict[str, Any]:
    """`apply_retention` for a DAG run: Params `dry_run` (default true) and `as_of`."""
    from airflow.sdk.exceptions import AirflowFailException

    from runtime_facts.pipeline.outcomes import utc_now

    now = utc_now()
    if params.get("as_of"):
        try:
            as_of = datetime.fromisoformat(str(params["as_of"]).replace("Z", "+00:00"))
        except ValueError as exc:
            raise AirflowFailException(f"as_of is not ISO-8601: {params['as_of']!r}") from exc
        if as_of.tzinfo is None or as_of > now:
            raise AirflowFailException("as_of needs a UTC offset and must not be in the future")
        now = as_of
    return apply_retention(
        home, dry_run=params.get("dry_run", True) is not False, now=now
    ).to_dict()
