"""Recompute reachability states for subjects: static graph ⊔ runtime facts → states, events."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import orjson
import polars as pl

from runtime_facts import __version__
from runtime_facts.home import Home
from runtime_facts.pipeline.fold import FoldedFacts, clear_recompute, pending_recompute
from runtime_facts.stores.graphs import current_graph_sha, load_graph
from runtime_facts.stores.lake import STATE_SCHEMA, Lake
from runtime_facts.stores.outbox import EVENT_TYPE, event_id
from runtime_facts.subject import validate_tenant
from transforms import lthash
from transforms.callgraph import Callgraph
from transforms.reachability import compute_static_reachability
from transforms.schema import SUBJECT
from transforms.score import ScoreParams, score_symbols, window_complete

FACT_KIND = "reachability_states"
STATE_DIGEST_EXCLUDE = ("computed_at", "fact_version")
SCORE_STATE = "state/score"


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
    home: Home,
    subjects: list[tuple[str, str, str]],
    now: datetime,
    *,
    full: bool = False,
    folded: dict[str, FoldedFacts] | None = None,
) -> RecomputeResult:
    """Recompute the given (tenant, callgraph_id, subject_key) triples; unchanged ones stay put.

    Args:
        home: the home.
        subjects: the touched triples (e.g. from a fold).
        now: stamped as `computed_at` and `emitted_at`.
        full: re-score every symbol, not only those whose facts changed since the last
            re-score (`ScoreState`).
        folded: per tenant, the rows a fold in this process just wrote (`FoldResult.folded`):
            taken instead of reading them back while the facts tables are as the fold left
            them, ignored otherwise.

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
            known = (folded or {}).get(tenant)
            if known is not None and home.lake.versions("runtime_facts") != known.versions:
                known = None  # committed to since the fold: read the lake
            for callgraph_id, subject_key in members:
                key = (tenant, callgraph_id)
                if key not in graphs:
                    sha = current_graph_sha(home, tenant, callgraph_id)
                    graph: Callgraph | None = load_graph(home, sha) if sha else None
                    graphs[key] = (sha, compute_static_reachability(graph) if graph else None)
                fence.check()
                _recompute_one(
                    home, tenant, callgraph_id, subject_key, graphs[key], params, now, result,
                    full=full, known=known,
                )  # fmt: skip
            fence.check()
            merge_after_rescore(home, tenant)
    return result


def merge_after_rescore(home: Home, tenant: str) -> None:
    """Merge a tenant's recent facts and states into their base tables when they are due;
    call under the tenant's lock, after its re-score. The score states then still cover every
    fact row merged (a merge before the re-score would make it a full one)."""
    for name in ("runtime_facts", "reachability_states"):
        if home.lake.merge_due(name, tenant):
            home.lake.merge_recent(name, tenant)


def recompute_touched(
    home: Home,
    touched: list[tuple[str, str, str]],
    now: datetime,
    folded: dict[str, FoldedFacts] | None = None,
) -> RecomputeResult:
    """Re-score what a fold touched, plus whatever an interrupted run folded but never scored.

    The fold records its subjects (`pending_recompute`) before it commits; they are cleared
    here only once re-scored, so a crash between fold and recompute loses no re-score.
    `folded` is that fold's `FoldResult.folded` when it ran in this process.
    """
    pending = pending_recompute(home)
    subjects = sorted(set(touched) | set(pending))
    result = (
        recompute_subjects(home, subjects, now, folded=folded) if subjects else RecomputeResult()
    )
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
    return recompute_subjects(home, [(tenant, callgraph_id, s) for s in subjects], now, full=True)


def _changed_states(
    scored: pl.DataFrame, previous: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The scored rows that differ from (or are missing in) the stored states, and the stored
    symbols that are no longer scored (`computed_at` and `fact_version` aside). Symbol ids
    are unique within a subject, so a row-for-row comparison is the same test as comparing
    the subjects' canonical digests, at a fraction of the cost."""
    columns = scored.columns
    stored = previous.select(columns).cast(scored.schema)
    if stored.is_empty():  # a first score: every row is new
        return scored, stored
    changed = scored.join(stored, on=columns, how="anti", nulls_equal=True)
    removed = stored.join(scored.select("symbol_id"), on="symbol_id", how="anti")
    return changed, removed


@dataclass(frozen=True)
class ScoreState:
    """What a subject's stored states were scored from, and their digest state: enough to
    re-score only the symbols whose facts changed since (`_recompute_one`).

    Kept per subject at `state/score/<tenant>/<sha256 of callgraph and subject>.json`,
    written after the states commit. It is trusted only while it matches the lake: the
    subject's largest `fact_version`, the current graph and score settings (`basis`), the
    observation window when there is a graph. A missing, stale or unreadable
    one means a full re-score, which writes a fresh one.
    """

    fact_version: int
    facts_seq: int
    basis: str
    window: bool
    lthash: np.ndarray


def _same_score_state(a: ScoreState, b: ScoreState) -> bool:
    return (a.fact_version, a.facts_seq, a.basis, a.window) == (
        b.fact_version, b.facts_seq, b.basis, b.window
    ) and bool(np.array_equal(a.lthash, b.lthash))  # fmt: skip


def _score_key(tenant: str, callgraph_id: str, subject_key: str) -> str:
    name = hashlib.sha256(f"{callgraph_id}\0{subject_key}".encode()).hexdigest()
    return f"{SCORE_STATE}/{tenant}/{name}.json"


def load_score_state(
    home: Home, tenant: str, callgraph_id: str, subject_key: str
) -> ScoreState | None:
    """A subject's stored `ScoreState` (None: none, or not readable)."""
    try:
        doc = orjson.loads(home.objects.get(_score_key(tenant, callgraph_id, subject_key)))
        if (doc["callgraph_id"], doc["subject_key"]) != (callgraph_id, subject_key):
            return None
        return ScoreState(
            fact_version=int(doc["fact_version"]),
            facts_seq=int(doc["facts_seq"]),
            basis=str(doc["basis"]),
            window=bool(doc["window"]),
            lthash=lthash.decode(str(doc["lthash"])),
        )
    except (FileNotFoundError, KeyError, TypeError, ValueError, orjson.JSONDecodeError):
        return None


def _save_score_state(
    home: Home, tenant: str, callgraph_id: str, subject_key: str, state: ScoreState
) -> None:
    doc = {
        "callgraph_id": callgraph_id,
        "subject_key": subject_key,
        "fact_version": state.fact_version,
        "facts_seq": state.facts_seq,
        "basis": state.basis,
        "window": state.window,
        "lthash": lthash.encode(state.lthash),
    }
    home.objects.put(_score_key(tenant, callgraph_id, subject_key), orjson.dumps(doc))


def forget_score_states(home: Home, subjects: list[tuple[str, str, str]]) -> None:
    """Drop the `ScoreState` of these subjects: their next re-score is a full one (after a
    change of their facts that the recent rows do not show, e.g. retention's deletes)."""
    for tenant, callgraph_id, subject_key in subjects:
        home.objects.delete(_score_key(tenant, callgraph_id, subject_key))


def states_lthash(states: pl.DataFrame) -> np.ndarray:
    """The LtHash state of a subject's states rows, from scratch (the subject columns,
    `computed_at` and `fact_version` left out): what the event `digest` is the digest of."""
    exclude = (*SUBJECT, *STATE_DIGEST_EXCLUDE)
    return lthash.of(states, exclude=tuple(c for c in exclude if c in states.columns))


def _facts_and_states(
    lake: Lake, tenant: str, where: pl.Expr, facts: pl.DataFrame | None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The facts (unless the fold's rows are given) and stored states matching `where`; the
    two reads filter the whole subject's base files, so they run side by side."""
    if facts is not None:
        return facts, lake.read("reachability_states", tenant=tenant, where=where)
    read = lake.read_all([("runtime_facts", where), ("reachability_states", where)], tenant=tenant)
    return read[0], read[1]


def _recompute_one(
    home: Home,
    tenant: str,
    callgraph_id: str,
    subject_key: str,
    graph: tuple[str | None, pl.DataFrame | None],
    params: ScoreParams,
    now: datetime,
    result: RecomputeResult,
    *,
    full: bool = False,
    known: FoldedFacts | None = None,
) -> None:
    """Re-score one subject: only the symbols whose facts changed since its `ScoreState`
    when that state is current, else every symbol (also when `full`). The facts rows come
    from `known` (checked current by the caller) where it holds all those needed."""
    lake = home.lake
    graph_sha, static = graph
    basis = hashlib.sha256(orjson.dumps([graph_sha, asdict(params)])).hexdigest()
    in_subject = (pl.col("callgraph_id") == callgraph_id) & (pl.col("subject_key") == subject_key)
    base_times, recent_facts = lake.unmerged(
        "runtime_facts", tenant, in_subject, ["symbol_id", "first_observed_at", "last_observed_at"],
        with_base=static is not None,
    )  # fmt: skip
    window = False  # decides only graph nodes without hits: without a graph it does not matter
    if static is not None:
        # Per key, first_observed_at only falls and last_observed_at only rises, so the base
        # and recent rows together span the same window as the merged rows.
        span = pl.concat([base_times, recent_facts.drop("_seq")])
        window = window_complete(span["first_observed_at"], span["last_observed_at"], params)
    # Every fact row up to here is in the states once they are scored: the recent rows, and
    # whatever a merge moved into the base.
    merged = lake.merged_through("runtime_facts", tenant)
    facts_seq = max(int(recent_facts["_seq"].max() or -1), merged)  # type: ignore[arg-type]
    # The event of a change is published before its states commit and the score state is
    # saved after it, so a score state at the last published version describes the states.
    published = home.outbox.last_version(tenant, subject_key, FACT_KIND)
    saved = None if full else load_score_state(home, tenant, callgraph_id, subject_key)
    incremental = (
        saved is not None
        and saved.fact_version == published
        and saved.basis == basis
        and saved.window == window
        and merged <= saved.facts_seq
    )
    if incremental:
        assert saved is not None
        touched = recent_facts.filter(pl.col("_seq") > saved.facts_seq)["symbol_id"].unique()
        only = in_subject & pl.col("symbol_id").is_in(touched.implode())
        held = known.rows.get((callgraph_id, subject_key)) if known is not None else None
        if held is not None and touched.is_in(held.get_column("symbol_id").implode()).all():
            held = held.filter(pl.col("symbol_id").is_in(touched.implode()))
        else:
            held = None
        facts, previous = _facts_and_states(lake, tenant, only, held)
        part = (
            None if static is None else static.filter(pl.col("symbol_id").is_in(touched.implode()))
        )
        scored = score_symbols(part, runtime_evidence(facts), params, window=window)
        changed, removed = _changed_states(scored, previous)
        old = previous.join(changed.select("symbol_id"), on="symbol_id", how="semi")
        state = lthash.update(
            saved.lthash,
            added=changed,
            removed=pl.concat([old.select(changed.columns), removed.select(changed.columns)]),
        )
    else:
        whole = known.rows.get((callgraph_id, subject_key)) if known and known.whole else None
        facts, previous = _facts_and_states(lake, tenant, in_subject, whole)
        scored = score_symbols(
            static, runtime_evidence(facts), params, window=window if static is not None else None
        )
        changed, removed = _changed_states(scored, previous)
        state = lthash.of(scored)
    # The version the stored states are at: a version may also be published by a crashed run
    # whose states never landed, or by a change that only removed rows, so take the larger.
    stored_version = published
    if not incremental:
        stored_max = previous.get_column("fact_version").max()
        stored_version = max(published, int(stored_max or 0))  # type: ignore[arg-type]
    keep = ScoreState(stored_version, facts_seq, basis, window, state)
    if changed.is_empty() and removed.is_empty():
        if saved is None or not _same_score_state(saved, keep):
            _save_score_state(home, tenant, callgraph_id, subject_key, keep)
        return
    digest = lthash.digest(state)
    outbox = home.outbox
    version = stored_version + 1
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
    subject_cols = {"tenant": tenant, "callgraph_id": callgraph_id, "subject_key": subject_key}
    rows = changed.with_columns(
        *(pl.lit(v).alias(k) for k, v in subject_cols.items()),
        pl.lit(now).cast(STATE_SCHEMA["computed_at"]).alias("computed_at"),
        pl.lit(version, dtype=pl.Int64).alias("fact_version"),
    )
    gone = removed.select("symbol_id").with_columns(
        pl.lit(v).alias(k) for k, v in subject_cols.items()
    )
    result.states_version = lake.upsert("reachability_states", rows, version, removed=gone)
    # After the states commit: a crash before this line leaves a stale state, so a full
    # re-score next time (the stored fact_version no longer matches).
    _save_score_state(
        home,
        tenant,
        callgraph_id,
        subject_key,
        ScoreState(version, facts_seq, basis, window, state),
    )
    result.changed.append(subject_key)
    result.events.append(event)
