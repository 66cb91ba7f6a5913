"""Recompute reachability states for subjects: static graph ⊔ runtime facts → states, events."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl

from runtime_facts import __version__
from runtime_facts.home import Home
from runtime_facts.pipeline.fold import clear_recompute, pending_recompute
from runtime_facts.stores.graphs import current_graph_sha, load_graph
from runtime_facts.stores.lake import STATE_SCHEMA, sql_literal
from runtime_facts.stores.outbox import EVENT_TYPE, event_id
from runtime_facts.subject import validate_tenant
from transforms.callgraph import Callgraph
from transforms.canonical import digest_rows
from transforms.reachability import compute_static_reachability
from transforms.score import ScoreParams, score_symbols

FACT_KIND = "reachability_states"
STATE_DIGEST_EXCLUDE = ("computed_at", "fact_version")


@dataclass
class RecomputeResult:
    """Subjects looked at, and which of them changed."""

    subjects: int = 0
    changed: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    states_version: int | None = None


def score_params(home: Home) -> ScoreParams:
    """Score constants from settings."""
    s = home.settings.score
    return ScoreParams(
        weight_unreachable=s.weight_unreachable,
        weight_entrypoint=s.weight_entrypoint,
        weight_runtime=s.weight_runtime,
        weight_direct=s.weight_direct,
        weight_unknown=s.weight_unknown,
        direct_max_path_length=s.direct_max_path_length,
        confidence_reachable=s.confidence_reachable,
        runtime_bonus=s.runtime_bonus,
        confidence_unreachable=s.confidence_unreachable,
        confidence_min=s.confidence_min,
        confidence_max=s.confidence_max,
        min_observation_window_seconds=int(s.min_observation_window_days * 86400),
    )


def runtime_evidence(facts: pl.DataFrame) -> pl.DataFrame:
    """One row per symbol: hits summed over code ids / loader bases, observation window."""
    return (
        facts.group_by("symbol_id")
        .agg(
            pl.col("hit_count").sum().alias("runtime_hit_count"),
            pl.col("first_observed_at").min(),
            pl.col("last_observed_at").max(),
        )
        .sort("symbol_id")
    )


def recompute_subjects(
    home: Home, subjects: list[tuple[str, str, str]], now: datetime
) -> RecomputeResult:
    """Recompute the given (tenant, callgraph_id, subject_key) triples; unchanged ones stay put.

    Args:
        home: the home.
        subjects: the touched triples (e.g. from a fold).
        now: stamped as `computed_at` and `emitted_at`.

    Returns:
        Which subjects changed, and the events emitted for them.
    """
    result = RecomputeResult(subjects=len(subjects))
    if not subjects:
        return result
    home.ensure_lake()
    params = score_params(home)
    graphs: dict[tuple[str, str], tuple[str | None, pl.DataFrame | None]] = {}
    by_tenant: dict[str, list[tuple[str, str]]] = {}
    for tenant, callgraph_id, subject_key in sorted(set(subjects)):
        by_tenant.setdefault(tenant, []).append((callgraph_id, subject_key))
    for tenant, members in by_tenant.items():
        with home.commit_lock(tenant) as fence:
            for callgraph_id, subject_key in members:
                key = (tenant, callgraph_id)
                if key not in graphs:
                    sha = current_graph_sha(home, tenant, callgraph_id)
                    graph: Callgraph | None = load_graph(home, sha) if sha else None
                    graphs[key] = (sha, compute_static_reachability(graph) if graph else None)
                _, static = graphs[key]
                fence.check()
                _recompute_one(home, tenant, callgraph_id, subject_key, static, params, now, result)
    return result


def recompute_touched(
    home: Home, touched: list[tuple[str, str, str]], now: datetime
) -> RecomputeResult:
    """Re-score what a fold touched, plus whatever an interrupted run folded but never scored.

    The fold records its subjects (`pending_recompute`) before it commits; they are cleared
    here only once re-scored, so a crash between fold and recompute loses no re-score.
    """
    pending = pending_recompute(home)
    subjects = sorted(set(touched) | set(pending))
    result = recompute_subjects(home, subjects, now) if subjects else RecomputeResult()
    clear_recompute(home, pending)
    return result


def recompute(
    home: Home, tenant: str, callgraph_id: str, subject_key: str | None, now: datetime
) -> RecomputeResult:
    """Recompute one subject, or every subject of a callgraph that has runtime facts."""
    validate_tenant(tenant)
    home.ensure_lake()
    where = pl.col("callgraph_id") == callgraph_id
    if subject_key is not None:
        where &= pl.col("subject_key") == subject_key
    subjects = (
        home.lake.scan("runtime_facts", tenant=tenant)
        .filter(where)
        .select("subject_key")
        .unique()
        .collect()
        .get_column("subject_key")
        .sort()
        .to_list()
    )
    if subject_key is not None and subject_key not in subjects:
        subjects.append(subject_key)
    return recompute_subjects(home, [(tenant, callgraph_id, s) for s in subjects], now)


def _same_states(scored: pl.DataFrame, previous: pl.DataFrame) -> bool:
    """True when the stored states hold exactly the scored rows (`computed_at` and
    `fact_version` aside): the same test as comparing their canonical digests, at a fraction
    of the cost (symbol ids are unique within a subject, so sorting by them is canonical)."""
    if scored.height != previous.height:
        return False
    columns = scored.columns
    stored = previous.select(columns).cast(scored.schema).sort("symbol_id")
    return scored.sort("symbol_id").equals(stored)


def _recompute_one(
    home: Home,
    tenant: str,
    callgraph_id: str,
    subject_key: str,
    static: pl.DataFrame | None,
    params: ScoreParams,
    now: datetime,
    result: RecomputeResult,
) -> None:
    lake = home.lake
    in_subject = (pl.col("callgraph_id") == callgraph_id) & (pl.col("subject_key") == subject_key)
    facts = lake.read("runtime_facts", tenant=tenant, where=in_subject)
    scored = score_symbols(static, runtime_evidence(facts), params)
    previous = lake.read("reachability_states", tenant=tenant, where=in_subject)
    subject_cols = {"tenant": tenant, "callgraph_id": callgraph_id, "subject_key": subject_key}
    states = scored.with_columns(pl.lit(v).alias(k) for k, v in subject_cols.items())
    if _same_states(scored, previous):
        return
    digest = digest_rows(states.drop("tenant", "callgraph_id", "subject_key"))
    outbox = home.outbox
    version = outbox.last_version(tenant, subject_key, FACT_KIND) + 1
    if not previous.is_empty():
        version = max(version, int(previous.get_column("fact_version").max() or 0) + 1)  # type: ignore[arg-type]
    event = {
        "type": EVENT_TYPE,
        "event_id": event_id(tenant, subject_key, FACT_KIND, version, digest),
        "emitted_at": now.isoformat(),
        "tenant": tenant,
        "subject_key": subject_key,
        "callgraph_id": callgraph_id,
        "fact_kind": FACT_KIND,
        "fact_version": version,
        "digest": digest,
        "producer": f"runtime-facts/{__version__}",
    }
    # Event first, then states: a crash in between re-emits the same event id (at least once).
    outbox.append([event])
    rows = states.with_columns(
        pl.lit(now).cast(STATE_SCHEMA["computed_at"]).alias("computed_at"),
        pl.lit(version, dtype=pl.Int64).alias("fact_version"),
    )
    predicate = (
        f"tenant = {sql_literal(tenant)} AND callgraph_id = {sql_literal(callgraph_id)}"
        f" AND subject_key = {sql_literal(subject_key)}"
    )
    result.states_version = lake.replace_where("reachability_states", rows, predicate)
    result.changed.append(subject_key)
    result.events.append(event)
