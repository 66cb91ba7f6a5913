"""Re-scoring only the symbols whose facts changed equals a full re-score, and its digest
equals one computed from scratch: after every batch of a random sequence, a graph change, a
merge, retention and a cut between the states commit and the score state."""

from __future__ import annotations

import dataclasses
import gzip
import json
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from runtime_facts.home import Home
from runtime_facts.ops.compact import compact
from runtime_facts.ops.replay import states_digest
from runtime_facts.ops.retention import apply_retention
from runtime_facts.pipeline import score as score_module
from runtime_facts.pipeline.fold import FoldedFacts, fold_pending
from runtime_facts.pipeline.ingest import ingest
from runtime_facts.pipeline.score import (
    load_score_state,
    recompute_touched,
    runtime_evidence,
    score_params,
)
from runtime_facts.stores import lake as lake_module
from runtime_facts.stores.graphs import current_graph_sha, load_graph, stage_graph
from runtime_facts.stores.outbox import Outbox
from runtime_facts.subject import SubjectContext
from transforms import lthash
from transforms.reachability import compute_static_reachability
from transforms.score import score_symbols

CTX = SubjectContext("acme", "cg-inc", scan_id="s-1")
NODES = [f"n{i:02d}" for i in range(30)]
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _graph(tmp_path: Path, edges: list[tuple[str, str]], name: str = "g.json") -> Path:
    doc = {
        "schema": "runtime-facts.callgraph.v1", "callgraphId": CTX.callgraph_id,
        "language": "go", "nodes": [{"id": n} for n in NODES],
        "edges": [{"sourceId": a, "targetId": b, "kind": "call"} for a, b in edges],
        "entrypoints": ["n00"],
    }  # fmt: skip
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def _batch(rng: random.Random, day: float) -> bytes:
    lines = []
    for _ in range(rng.randint(1, 8)):
        symbol = rng.choice([*NODES, "rt:a", "rt:b", "rt:c"])
        event: dict[str, Any] = {"symbolId": symbol, "hitCount": rng.randint(1, 5)}
        if rng.random() < 0.5:
            event["codeId"] = rng.choice(["c1", "c2"])
        if rng.random() < 0.8:
            event["observedAt"] = (T0 + timedelta(days=day)).isoformat()
        lines.append(json.dumps(event))
    return gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0)


def _where() -> pl.Expr:
    return (pl.col("callgraph_id") == CTX.callgraph_id) & (pl.col("subject_key") == CTX.subject_key)


def _check(home: Home) -> None:
    """The stored states are a full re-score of the facts; the digests agree."""
    facts = home.lake.read("runtime_facts", tenant=CTX.tenant, where=_where())
    sha = current_graph_sha(home, CTX.tenant, CTX.callgraph_id)
    static = compute_static_reachability(load_graph(home, sha)) if sha else None
    expected = score_symbols(static, runtime_evidence(facts), score_params(home))
    stored = home.lake.read("reachability_states", tenant=CTX.tenant, where=_where())
    got = stored.select(expected.columns).sort("symbol_id")
    assert_frame_equal(got, expected)
    from_scratch = lthash.of(expected)
    saved = load_score_state(home, CTX.tenant, CTX.callgraph_id, CTX.subject_key)
    assert saved is not None
    assert (saved.lthash == from_scratch).all()
    digest = states_digest(home, CTX.tenant, CTX.callgraph_id, CTX.subject_key)
    assert digest == lthash.digest(from_scratch)
    events = [e for e in Outbox(home.root / "outbox") if e["subject_key"] == CTX.subject_key]
    assert events[-1]["digest"] == digest


def _counting(seen: list[int]) -> Callable[..., pl.DataFrame]:
    """`score_symbols` that records how many runtime symbols each call scored."""
    real = score_symbols

    def spy(static: Any, runtime: pl.DataFrame, *args: Any, **kwargs: Any) -> pl.DataFrame:
        seen.append(runtime.height)
        return real(static, runtime, *args, **kwargs)

    return spy


@pytest.fixture
def scored_rows(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many runtime symbols each re-score scored (to see the incremental path taken)."""
    seen: list[int] = []
    monkeypatch.setattr(score_module, "score_symbols", _counting(seen))
    return seen


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_random_sequence_scores_as_a_full_rescore_would(
    home: Home, tmp_path: Path, seed: int, scored_rows: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(seed)
    monkeypatch.setattr(lake_module, "RECENT_MERGE_ROWS", 12)  # merges along the way
    edges = [(f"n{i:02d}", f"n{(i * 7 + 3) % 30:02d}") for i in range(0, 30, 2)]
    stage_graph(home, _graph(tmp_path, edges), CTX.tenant, T0)
    clock = iter(T0 + timedelta(hours=h) for h in range(1000))
    for step in range(14):
        home.cas.put("runtime", _batch(rng, day=step * 0.7), CTX)  # the window completes
        ingest(home, clock=lambda: next(clock))
        _check(home)
        if step == 8:  # a new graph: every node must be scored against it
            stage_graph(home, _graph(tmp_path, edges[:3], "g2.json"), CTX.tenant, T0)
    # Some re-scores took only the changed symbols (fewer than the subject's symbols).
    symbols = home.lake.read("runtime_facts").get_column("symbol_id").n_unique()
    assert min(scored_rows) < symbols


def test_only_the_changed_symbols_are_scored_and_stored(home: Home, scored_rows: list[int]) -> None:
    lines = "".join(f'{{"symbolId":"s{i}","hitCount":1}}\n' for i in range(40))
    home.cas.put("runtime", gzip.compress(lines.encode(), mtime=0), CTX)
    ingest(home, clock=lambda: T0)
    home.cas.put("runtime", gzip.compress(b'{"symbolId":"s3","hitCount":2}\n', mtime=0), CTX)
    ingest(home, clock=lambda: T0)
    assert scored_rows == [40, 1]
    recent = home.lake.read(lake_module.recent_name("reachability_states"))
    assert recent.filter(pl.col("fact_version") == 2).get_column("symbol_id").to_list() == ["s3"]
    _check(home)


def test_a_cut_before_the_score_state_is_saved_means_a_full_rescore(
    home: Home, scored_rows: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = "".join(f'{{"symbolId":"s{i}","hitCount":1}}\n' for i in range(10))
    home.cas.put("runtime", gzip.compress(lines.encode(), mtime=0), CTX)
    ingest(home, clock=lambda: T0)

    class Cut(Exception):
        pass

    def cut(*_: object, **__: object) -> None:
        raise Cut

    monkeypatch.setattr(score_module, "_save_score_state", cut)
    home.cas.put("runtime", gzip.compress(b'{"symbolId":"s3","hitCount":2}\n', mtime=0), CTX)
    with pytest.raises(Cut):
        ingest(home, clock=lambda: T0)
    monkeypatch.undo()
    monkeypatch.setattr(score_module, "score_symbols", _counting(scored_rows))
    home.cas.put("runtime", gzip.compress(b'{"symbolId":"s4","hitCount":2}\n', mtime=0), CTX)
    ingest(home, clock=lambda: T0)
    assert scored_rows[-1] == 10  # the stale score state was not trusted
    _check(home)


def test_retention_makes_the_next_rescore_a_full_one(home: Home, scored_rows: list[int]) -> None:
    old = '{"symbolId":"old","hitCount":1,"observedAt":"2026-09-01T00:00:00Z"}\n'
    new = '{"symbolId":"new","hitCount":1,"observedAt":"2026-11-01T00:00:00Z"}\n'
    home.cas.put("runtime", gzip.compress((old + new).encode(), mtime=0), CTX)
    ingest(home, clock=lambda: T0)
    report = apply_retention(home, dry_run=False, now=T0 + timedelta(days=2))
    assert report.expired_facts == 1
    assert load_score_state(home, CTX.tenant, CTX.callgraph_id, CTX.subject_key) is None
    later = '{"symbolId":"new","hitCount":3,"observedAt":"2026-11-02T00:00:00Z"}\n'
    home.cas.put("runtime", gzip.compress(later.encode(), mtime=0), CTX)
    ingest(home, clock=lambda: T0 + timedelta(days=2))
    states = home.lake.read("reachability_states").get_column("symbol_id").to_list()
    assert states == ["new"]  # the expired symbol's state went with the full re-score
    _check(home)


def test_a_merge_between_two_batches_keeps_the_rescore_exact(home: Home) -> None:
    lines = "".join(f'{{"symbolId":"s{i}","hitCount":1}}\n' for i in range(10))
    home.cas.put("runtime", gzip.compress(lines.encode(), mtime=0), CTX)
    ingest(home, clock=lambda: T0)
    home.cas.put("runtime", gzip.compress(b'{"symbolId":"s1","hitCount":2}\n', mtime=0), CTX)
    ingest(home, clock=lambda: T0)
    compact(home, vacuum=False)
    home.cas.put("runtime", gzip.compress(b'{"symbolId":"s2","hitCount":2}\n', mtime=0), CTX)
    ingest(home, clock=lambda: T0)
    _check(home)


def test_a_new_graph_rescores_every_symbol(
    home: Home, tmp_path: Path, scored_rows: list[int]
) -> None:
    chain = [(f"n{i:02d}", f"n{i + 1:02d}") for i in range(29)]
    stage_graph(home, _graph(tmp_path, chain), CTX.tenant, T0)
    home.cas.put("runtime", gzip.compress(b'{"symbolId":"n05","hitCount":1}\n', mtime=0), CTX)
    ingest(home, clock=lambda: T0)
    home.cas.put("runtime", gzip.compress(b'{"symbolId":"n06","hitCount":1}\n', mtime=0), CTX)
    ingest(home, clock=lambda: T0)
    assert scored_rows == [1, 1]  # the second re-score took the one changed symbol only
    stage_graph(home, _graph(tmp_path, chain[:3], "short.json"), CTX.tenant, T0)
    home.cas.put("runtime", gzip.compress(b'{"symbolId":"n07","hitCount":1}\n', mtime=0), CTX)
    ingest(home, clock=lambda: T0)
    assert scored_rows[-1] == 3  # every runtime symbol again: the graph changed
    _check(home)


def _tampered(folded: dict[str, FoldedFacts]) -> dict[str, FoldedFacts]:
    """The fold's hand-over with every hit count raised by 1000: a re-score that takes it
    stores states the lake's facts do not give."""
    return {
        tenant: dataclasses.replace(
            facts,
            rows={
                key: rows.with_columns(pl.col("hit_count") + 1000)
                for key, rows in facts.rows.items()
            },
        )
        for tenant, facts in folded.items()
    }


def _stored_hits(home: Home) -> dict[str, int]:
    states = home.lake.read("reachability_states", tenant=CTX.tenant, where=_where())
    return dict(states.select("symbol_id", "runtime_hit_count").iter_rows())


@pytest.mark.parametrize("first", [True, False])
def test_the_rescore_takes_the_folds_rows_while_the_lake_is_as_the_fold_left_it(
    home: Home, first: bool
) -> None:
    if not first:  # an incremental re-score, not the first (full) one
        home.cas.put("runtime", gzip.compress(b'{"symbolId":"s1","hitCount":1}\n', mtime=0), CTX)
        ingest(home, clock=lambda: T0)
    home.cas.put("runtime", gzip.compress(b'{"symbolId":"s2","hitCount":2}\n', mtime=0), CTX)
    ingest(home, fold=False, clock=lambda: T0)
    result = fold_pending(home, T0)
    assert set(result.folded) == {CTX.tenant}
    recompute_touched(home, result.subjects, T0, _tampered(result.folded))
    assert _stored_hits(home)["s2"] == 1002  # the hand-over was taken, not read back


def test_a_commit_after_the_fold_makes_the_rescore_read_the_lake(home: Home) -> None:
    home.cas.put("runtime", gzip.compress(b'{"symbolId":"s1","hitCount":1}\n', mtime=0), CTX)
    ingest(home, fold=False, clock=lambda: T0)
    result = fold_pending(home, T0)
    home.cas.put("runtime", gzip.compress(b'{"symbolId":"s1","hitCount":5}\n', mtime=0), CTX)
    ingest(home, fold=False, clock=lambda: T0)
    fold_pending(home, T0)  # the facts tables move on
    recompute_touched(home, result.subjects, T0, _tampered(result.folded))
    assert _stored_hits(home) == {"s1": 6}
    _check(home)


def test_symbols_folded_by_an_earlier_unscored_fold_are_read_from_the_lake(
    home: Home, scored_rows: list[int]
) -> None:
    lines = "".join(f'{{"symbolId":"s{i}","hitCount":1}}\n' for i in range(10))
    home.cas.put("runtime", gzip.compress(lines.encode(), mtime=0), CTX)
    ingest(home, clock=lambda: T0)
    home.cas.put("runtime", gzip.compress(b'{"symbolId":"s3","hitCount":2}\n', mtime=0), CTX)
    ingest(home, recompute=False, clock=lambda: T0)  # folded, never re-scored
    home.cas.put("runtime", gzip.compress(b'{"symbolId":"s4","hitCount":2}\n', mtime=0), CTX)
    ingest(home, fold=False, clock=lambda: T0)
    result = fold_pending(home, T0)  # hands over s4's rows only
    recompute_touched(home, result.subjects, T0, _tampered(result.folded))
    assert scored_rows[-1] == 2  # incremental: s3 and s4
    hits = _stored_hits(home)
    assert (hits["s3"], hits["s4"]) == (3, 3)
    _check(home)
