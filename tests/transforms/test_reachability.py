"""Static reachability from the entry points."""

from __future__ import annotations

import dataclasses
from collections import deque

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from transforms.callgraph import Callgraph
from transforms.reachability import STATIC_REACHABILITY_SCHEMA, compute_static_reachability


def _graph(nodes: list[str], edges: list[tuple[str, str]], entrypoints: list[str]) -> Callgraph:
    return Callgraph(
        callgraph_id="cg",
        language="java",
        nodes=pl.DataFrame({"symbol_id": sorted(nodes)}, schema={"symbol_id": pl.String}),
        edges=pl.DataFrame(
            [(s, t, "call") for s, t in sorted(edges)],
            schema={"source_id": pl.String, "target_id": pl.String, "kind": pl.String},
            orient="row",
        ),
        entrypoints=tuple(sorted(set(entrypoints))),
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


def test_unsorted_nodes_give_sorted_output() -> None:
    cg = _graph(["b", "a"], [("a", "b")], ["a"])
    shuffled = Callgraph(
        cg.callgraph_id,
        cg.language,
        cg.nodes.reverse(),
        cg.edges,
        cg.entrypoints,
    )

    expected = _expected([("a", True, True, 1), ("b", True, False, 2)])
    assert_frame_equal(compute_static_reachability(shuffled), expected)


def test_input_is_not_mutated() -> None:
    cg = _graph(["a", "b"], [("a", "b")], ["a"])
    nodes_before, edges_before = cg.nodes.clone(), cg.edges.clone()

    compute_static_reachability(cg)

    assert_frame_equal(cg.nodes, nodes_before)
    assert_frame_equal(cg.edges, edges_before)


def test_hand_built_graph_with_unknown_edge_node_is_refused() -> None:
    cg = _graph(["a"], [("a", "ghost")], ["a"])

    with pytest.raises(ValueError, match="ghost"):
        compute_static_reachability(cg)


def test_hand_built_graph_with_unknown_entrypoint_is_refused() -> None:
    cg = _graph(["a"], [], ["ghost"])

    with pytest.raises(ValueError, match="ghost"):
        compute_static_reachability(cg)


@st.composite
def random_graphs(draw: st.DrawFn) -> tuple[list[str], list[tuple[str, str]], list[str]]:
    count = draw(st.integers(min_value=1, max_value=40))
    nodes = [f"n{i:02d}" for i in range(count)]
    node = st.sampled_from(nodes)
    edges = draw(st.lists(st.tuples(node, node), max_size=120))
    entrypoints = draw(st.lists(node, min_size=1, max_size=4))
    return nodes, edges, entrypoints


@settings(max_examples=200, deadline=None)
@given(random_graphs())
def test_matches_python_bfs_on_random_graphs(
    graph: tuple[list[str], list[tuple[str, str]], list[str]],
) -> None:
    nodes, edges, entrypoints = graph
    lengths = _python_bfs(nodes, edges, entrypoints)

    result = compute_static_reachability(_graph(nodes, edges, entrypoints))

    expected = _expected(
        [
            (node, node in lengths, node in set(entrypoints), lengths.get(node))
            for node in sorted(nodes)
        ]
    )
    assert_frame_equal(result, expected)


def test_exact_string_join_fallback_numbers_like_the_hash_join() -> None:
    from transforms.reachability import _hashed, _number

    numbered = pl.DataFrame({"symbol_id": ["a", "b", "c"]}).with_row_index("number")
    ids = pl.DataFrame({"x": ["c", "a", "c"]})
    by_hash = _number(ids, "x", numbered, _hashed(numbered))
    by_string = _number(ids, "x", numbered, None)
    assert by_hash.get_column("x_number").to_list() == [2, 0, 2]
    assert by_string.get_column("x_number").to_list() == [2, 0, 2]


def test_hashed_edge_join_numbers_like_the_exact_join() -> None:
    """The DuckDB join does not keep edge order: compare the numbered edges as a multiset."""
    from transforms.reachability import _edge_numbers, _hashed

    nodes = [f"n{i:03d}" for i in range(50)]
    pairs = [(nodes[(7 * i) % 50], nodes[(3 * i + 1) % 50]) for i in range(200)]
    cg = _graph(nodes, pairs, [nodes[0]])
    numbered = cg.nodes.select("symbol_id").sort("symbol_id").with_row_index("number")
    hashed = _edge_numbers(cg, numbered, _hashed(numbered))
    exact = _edge_numbers(cg, numbered, None)
    assert sorted(zip(*hashed, strict=True)) == sorted(zip(*exact, strict=True))
    assert sorted(zip(*exact, strict=True)) == sorted(
        (nodes.index(s), nodes.index(t)) for s, t in pairs
    )


def test_an_edge_to_an_unknown_node_is_named() -> None:
    from transforms.reachability import _edge_numbers, _hashed

    cg = _graph(["a", "b"], [("a", "b")], ["a"])
    cg = dataclasses.replace(
        cg, edges=pl.DataFrame({"source_id": ["a"], "target_id": ["zz"], "kind": ["call"]})
    )
    numbered = cg.nodes.select("symbol_id").sort("symbol_id").with_row_index("number")
    with pytest.raises(ValueError, match="zz"):
        _edge_numbers(cg, numbered, _hashed(numbered))
