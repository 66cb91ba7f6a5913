"""Recompute: graph + runtime facts → reachability_states, events only on change."""

from __future__ import annotations

import gzip
import json
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
from deltalake import DeltaTable

from runtime_facts.home import Home
from runtime_facts.ops.compact import compact
from runtime_facts.pipeline.ingest import ingest
from runtime_facts.pipeline.score import recompute
from runtime_facts.stores.graphs import stage_graph
from runtime_facts.stores.outbox import Outbox
from runtime_facts.subject import SubjectContext

Clock = Callable[[], datetime]
CTX = SubjectContext("acme", "cg-checkout-2.4.1", scan_id="s-9")
API = "sym:java:com.acme.checkout.Api::handle"
CART = "sym:java:com.acme.checkout.Cart::total"
TAX = "sym:java:com.acme.checkout.Tax::rate"
REFUND = "sym:java:com.acme.checkout.Refund::issue"
LEGACY = "sym:java:com.acme.checkout.Legacy::export"
AUDIT = "sym:java:com.acme.checkout.Audit::log"


def _events(*symbols: str, start: str = "2026-11-01T00:00:00Z", span_days: int = 0) -> bytes:
    t0 = datetime.fromisoformat(start)
    lines = []
    for i, s in enumerate(symbols):
        ts = t0 + timedelta(days=span_days) * (i / max(1, len(symbols) - 1))
        lines.append(json.dumps({"symbolId": s, "hitCount": 1, "observedAt": ts.isoformat()}))
    return gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0)


def _states(home: Home) -> dict[str, tuple[str, str, float]]:
    rows = home.lake.read("reachability_states").select("symbol_id", "state", "bucket", "score")
    return {r[0]: (r[1], r[2], r[3]) for r in rows.iter_rows()}


def _graph(fixtures_dir: Path) -> Path:
    return fixtures_dir / "callgraphs" / "cg-checkout-2.4.1.json"


def test_runtime_only_subject_is_runtime_observed(home: Home, clock: Clock) -> None:
    home.cas.put("runtime", _events(API, CART), CTX)
    ingest(home, clock=clock)
    assert _states(home) == {API: ("RO", "runtime", 0.405), CART: ("RO", "runtime", 0.405)}


def test_graph_arrival_rescores_and_covers_the_states(
    home: Home, fixtures_dir: Path, clock: Clock
) -> None:
    home.cas.put(
        "runtime", _events(API, CART, REFUND, start="2026-11-01T00:00:00+00:00", span_days=8), CTX
    )
    ingest(home, clock=clock)
    stage_graph(home, _graph(fixtures_dir), "acme", clock())
    result = recompute(home, "acme", CTX.callgraph_id, None, clock())
    assert result.changed == [CTX.subject_key]
    states = _states(home)
    assert states[API] == ("CR", "entrypoint", 0.9)  # 0.75 + 0.15 bonus, weight 1.0
    assert states[CART] == ("CR", "direct", 0.765)  # path length 2 <= 2, weight 0.85
    assert states[TAX][:2] == ("X", "unknown")  # reachable, unobserved over a full window: SR ⊔ RU
    assert states[REFUND][:2] == ("X", "runtime")  # unreachable but observed: SU ⊔ RO
    assert states[LEGACY] == ("CU", "unreachable", 0.0)
    assert states[AUDIT] == ("CU", "unreachable", 0.0)


def test_short_window_keeps_unobserved_nodes_static(
    home: Home, fixtures_dir: Path, clock: Clock
) -> None:
    stage_graph(home, _graph(fixtures_dir), "acme", clock())
    home.cas.put("runtime", _events(API, span_days=1), CTX)
    ingest(home, clock=clock)
    states = _states(home)
    assert states[TAX][0] == "SR"
    assert states[LEGACY][0] == "SU"


def test_recompute_without_change_emits_nothing(
    home: Home, fixtures_dir: Path, clock: Clock
) -> None:
    home.cas.put("runtime", _events(API), CTX)
    ingest(home, clock=clock)
    version = home.lake.version("reachability_states")
    again = recompute(home, "acme", CTX.callgraph_id, CTX.subject_key, clock())
    assert again.changed == []
    assert home.lake.version("reachability_states") == version
    assert len(list(Outbox(home.root / "outbox"))) == 1


def test_fact_version_increases_per_change(home: Home, fixtures_dir: Path, clock: Clock) -> None:
    home.cas.put("runtime", _events(API), CTX)
    ingest(home, clock=clock)
    home.cas.put("runtime", _events(CART, start="2026-11-02T00:00:00Z"), CTX)
    ingest(home, clock=clock)
    events = list(Outbox(home.root / "outbox"))
    assert [e["fact_version"] for e in events] == [1, 2]
    assert len({e["event_id"] for e in events}) == 2
    # A row carries the version at which it last changed: the second batch's symbols 2,
    # the symbols it left alone still 1.
    states = home.lake.read("reachability_states")
    assert set(states.get_column("fact_version")) == {1, 2}
    changed = states.filter(pl.col("fact_version") == 2).get_column("symbol_id").to_list()
    assert CART in changed


def test_states_match_an_independent_bfs(home: Home, tmp_path: Path, clock: Clock) -> None:
    nodes = [f"n{i}" for i in range(40)]
    edges = [(f"n{i}", f"n{(i * 7 + 3) % 40}") for i in range(0, 40, 2)] + [("n1", "n2")]
    doc = {
        "schema": "runtime-facts.callgraph.v1", "callgraphId": "cg-rand", "language": "go",
        "nodes": [{"id": n} for n in nodes],
        "edges": [{"sourceId": a, "targetId": b, "kind": "call"} for a, b in edges],
        "entrypoints": ["n0", "n1"],
    }  # fmt: skip
    path = tmp_path / "g.json"
    path.write_text(json.dumps(doc))
    stage_graph(home, path, "acme", clock())
    ctx = SubjectContext("acme", "cg-rand", scan_id="r")
    home.cas.put("runtime", _events("n3", "n5", "zz", span_days=10), ctx)
    ingest(home, clock=clock)

    adj: dict[str, list[str]] = {}
    for a, b in edges:
        adj.setdefault(a, []).append(b)
    seen = {"n0", "n1"}
    queue = deque(seen)
    while queue:
        for nxt in adj.get(queue.popleft(), []):
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    observed = {"n3", "n5", "zz"}
    compact(home, vacuum=False)  # the Delta folder alone, as another engine reads it
    table = pl.DataFrame(
        DeltaTable(str(home.root / "lake" / "reachability_states")).to_pyarrow_table()
    )
    got = dict(table.select("symbol_id", "state").iter_rows())
    for n in nodes:
        static = "R" if n in seen else "U"
        expected = {("R", True): "CR", ("R", False): "X", ("U", True): "X", ("U", False): "CU"}
        assert got[n] == expected[(static, n in observed)], n
    assert got["zz"] == "RO"


def test_fact_version_counts_per_tenant_for_the_same_subject_key(home: Home, clock: Clock) -> None:
    other = SubjectContext("globex", CTX.callgraph_id, scan_id=CTX.scan_id)
    assert other.subject_key == CTX.subject_key
    home.cas.put("runtime", _events(API), CTX)
    ingest(home, clock=clock)
    home.cas.put("runtime", _events(CART), other)
    ingest(home, clock=clock)
    home.cas.put("runtime", _events(TAX), CTX)
    ingest(home, clock=clock)
    versions = [(e["tenant"], e["fact_version"]) for e in home.outbox]
    assert versions == [("acme", 1), ("globex", 1), ("acme", 2)]
    assert home.outbox.last_version("globex", CTX.subject_key, "reachability_states") == 1
