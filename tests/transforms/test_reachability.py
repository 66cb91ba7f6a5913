"""Static reachability from the entry points."""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from transforms.callgraph import Callgraph, build_callgraph
from transforms.reachability import STATIC_REACHABILITY_SCHEMA, compute_static_reachability


def _graph(nodes: list[str], edges: list[tuple[str, str]], entrypoints: list[str]) -> Callgraph:
    return build_callgraph(
        "cg",
        "java",
        pl.Series(nodes, dtype=pl.String),
        pl.DataFrame(
            [(s, t, "call") for s, t in edges],
            schema={"source_id": pl.String, "target_id": pl.String, "kind": pl.String},
            orient="row",
        ),
        entrypoints,
    )


def _expected(rows: list[tuple[str, bool, bool, int | None]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=STATIC_REACHABILITY_SCHEMA, orient="row")


def _python_bfs(
    nodes: list[str], edges: list[tuple[str, str]], entrypoints: list[str]
) -> dict[str, int]:
    """Shortest path length in nodes from any entry point, the textbook way."""
    callees: dict[str, list[str]] = {node: [] for node in nodes}
    for source, target in edges:
        callees[source].append(target)
    length = dict.fromkeys(entrypoints, 1)
    queue = deque(entrypoints)
    while queue:
        node = queue.popleft()
        for callee in callees[node]:
            if callee not in length:
                length[callee] = length[node] + 1
                queue.append(callee)
    return length


def test_chain_counts_nodes_on_the_path() -> None:
    cg = _graph(["a", "b", "c"], [("a", "b"), ("b", "c")], ["a"])

    expected = _expected([("a", True, True, 1), ("b", True, False, 2), ("c", True, False, 3)])
    assert_frame_equal(compute_static_reachability(cg), expected)


def test_node_without_path_is_unreachable() -> None:
    cg = _graph(["a", "b", "z"], [("a", "b"), ("z", "b")], ["a"])

    expected = _expected([("a", True, True, 1), ("b", True, False, 2), ("z", False, False, None)])
    assert_frame_equal(compute_static_reachability(cg), expected)


def test_shortest_path_wins_over_longer_one() -> None:
    cg = _graph(["a", "b", "c", "d"], [("a", "b"), ("b", "c"), ("c", "d"), ("a", "d")], ["a"])

    result = compute_static_reachability(cg)

    assert result.filter(pl.col("symbol_id") == "d")["path_length"].item() == 2


def test_nearest_entrypoint_counts() -> None:
    cg = _graph(["a", "b", "c", "e"], [("a", "b"), ("b", "c"), ("e", "c")], ["a", "e"])

    result = compute_static_reachability(cg)

    assert result.filter(pl.col("symbol_id") == "c")["path_length"].item() == 2


def test_entrypoint_reached_from_another_keeps_length_one() -> None:
    cg = _graph(["a", "b"], [("a", "b")], ["a", "b"])

    expected = _expected([("a", True, True, 1), ("b", True, True, 1)])
    assert_frame_equal(compute_static_reachability(cg), expected)


def test_cycles_and_self_loops_terminate() -> None:
    cg = _graph(["a", "b", "c"], [("a", "a"), ("a", "b"), ("b", "a"), ("c", "c")], ["a"])

    expected = _expected([("a", True, True, 1), ("b", True, False, 2), ("c", False, False, None)])
    assert_frame_equal(compute_static_reachability(cg), expected)


def test_edges_are_directed() -> None:
    cg = _graph(["a", "b"], [("b", "a")], ["a"])

    expected = _expected([("a", True, True, 1), ("b", False, False, None)])
    assert_frame_equal(compute_static_reachability(cg), expected)


def test_nodes_in_any_order_give_sorted_output() -> None:
    cg = _graph(["b", "a"], [("a", "b")], ["a"])

    expected = _expected([("a", True, True, 1), ("b", True, False, 2)])
    assert_frame_equal(compute_static_reachability(cg), expected)


def test_input_is_not_mutated() -> None:
    cg = _graph(["a", "b"], [("a", "b")], ["a"])
    nodes_before, edges_before = cg.nodes.clone(), cg.edges.clone()

    compute_static_reachability(cg)

    assert_frame_equal(cg.nodes, nodes_before)
    assert_frame_equal(cg.edges, edges_before)


def test_chain_deeper_than_the_frontier_search_goes() -> None:
    from transforms.reachability import _FRONTIER_LEVEL_LIMIT

    length = _FRONTIER_LEVEL_LIMIT + 100
    nodes = [f"n{i:05d}" for i in range(length)] + ["orphan"]
    edges = [(nodes[i], nodes[i + 1]) for i in range(length - 1)]

    result = compute_static_reachability(_graph(nodes, edges, [nodes[0]]))

    lengths = dict(zip(result["symbol_id"], result["path_length"], strict=True))
    assert [lengths[n] for n in nodes] == [*range(1, length + 1), None]


def _unnumbered(cg: Callgraph) -> Callgraph:
    return dataclasses.replace(cg, edges=cg.edge_ids())


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        (_unnumbered, "carry no node numbers"),
        (lambda cg: dataclasses.replace(cg, nodes=cg.nodes.reverse()), "not sorted"),
        (
            lambda cg: dataclasses.replace(
                cg, edges=cg.edges.with_columns(target_number=pl.lit(7, dtype=pl.UInt32))
            ),
            "unknown nodes",
        ),
        (lambda cg: dataclasses.replace(cg, edges=cg.edges.reverse()), "not sorted by source"),
        (lambda cg: dataclasses.replace(cg, entrypoints=("ghost",)), "'ghost' is not a node"),
    ],
)
def test_hand_made_graph_breaking_the_invariants_is_refused(
    broken: Callable[[Callgraph], Callgraph], message: str
) -> None:
    cg = _graph(["a", "b", "c"], [("a", "b"), ("b", "c")], ["a"])

    with pytest.raises(ValueError, match=message):
        compute_static_reachability(broken(cg))


@st.composite
def random_graphs(draw: st.DrawFn) -> tuple[list[str], list[tuple[str, str]], list[str]]:
    count = draw(st.integers(min_value=1, max_value=40))
    nodes = [f"n{i:02d}" for i in range(count)]
    node = st.sampled_from(nodes)
    edges = draw(st.lists(st.tuples(node, node), max_size=120))
    entrypoints = draw(st.lists(node, min_size=1, max_size=4))
    return nodes, edges, entrypoints


@settings(max_examples=200, deadline=None)
@given(random_graphs(), st.sampled_from([None, 1, 2]))
def test_matches_python_bfs_on_random_graphs(
    graph: tuple[list[str], list[tuple[str, str]], list[str]], level_limit: int | None
) -> None:
    """``level_limit`` hands the search over to scipy's after that many levels (None: the
    default limit, which these small graphs never reach)."""
    from transforms import reachability

    nodes, edges, entrypoints = graph
    lengths = _python_bfs(nodes, edges, entrypoints)

    with pytest.MonkeyPatch.context() as patch:
        if level_limit is not None:
            patch.setattr(reachability, "_FRONTIER_LEVEL_LIMIT", level_limit)
        result = compute_static_reachability(_graph(nodes, edges, entrypoints))

    expected = _expected(
        [
            (node, node in lengths, node in set(entrypoints), lengths.get(node))
            for node in sorted(nodes)
        ]
    )
    assert_frame_equal(result, expected)
