"""Parsing and validating `runtime-facts.callgraph.v1` documents (SPEC section 9)."""

from __future__ import annotations

from typing import Any

import orjson
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from transforms.callgraph import (
    CALLGRAPH_SCHEMA,
    EDGE_SCHEMA,
    Callgraph,
    CallgraphError,
    build_callgraph,
    parse_callgraph,
)


def _doc(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema": CALLGRAPH_SCHEMA,
        "callgraphId": "cg-1",
        "language": "java",
        "nodes": [{"id": "b"}, {"id": "a", "name": "main"}, {"id": "c"}],
        "edges": [
            {"sourceId": "b", "targetId": "c", "kind": "call"},
            {"sourceId": "a", "targetId": "b", "kind": "call"},
        ],
        "entrypoints": ["a"],
    }
    doc.update(overrides)
    return doc


def _parse(doc: dict[str, Any]) -> Callgraph:
    return parse_callgraph(orjson.dumps(doc))


def _reason(doc: dict[str, Any] | bytes) -> str:
    raw = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    with pytest.raises(CallgraphError) as caught:
        parse_callgraph(raw)
    return caught.value.reason_code


def test_parse_reads_identity() -> None:
    cg = _parse(_doc())

    assert (cg.callgraph_id, cg.language) == ("cg-1", "java")


def test_parse_sorts_nodes() -> None:
    cg = _parse(_doc())

    expected = pl.DataFrame({"symbol_id": ["a", "b", "c"]}, schema={"symbol_id": pl.String})
    assert_frame_equal(cg.nodes, expected)


def test_parse_sorts_edges() -> None:
    cg = _parse(_doc())

    expected = pl.DataFrame(
        {"source_number": [0, 1], "target_number": [1, 2], "kind": ["call", "call"]},
        schema=EDGE_SCHEMA,
    )
    assert_frame_equal(cg.edges, expected)


def test_parse_collapses_duplicate_edges() -> None:
    edge = {"sourceId": "a", "targetId": "b", "kind": "call"}
    cg = _parse(_doc(edges=[edge, edge, {**edge, "kind": "virtual"}]))

    expected = pl.DataFrame(
        {"source_number": [0, 0], "target_number": [1, 1], "kind": ["call", "virtual"]},
        schema=EDGE_SCHEMA,
    )
    assert_frame_equal(cg.edges, expected)


def test_parse_keeps_missing_edge_kind_as_null() -> None:
    cg = _parse(_doc(edges=[{"sourceId": "a", "targetId": "b"}]))

    expected = pl.DataFrame(
        {"source_number": [0], "target_number": [1], "kind": [None]}, schema=EDGE_SCHEMA
    )
    assert_frame_equal(cg.edges, expected)


def test_parse_accepts_no_edges() -> None:
    cg = _parse(_doc(edges=[]))

    assert_frame_equal(cg.edges, pl.DataFrame(schema=EDGE_SCHEMA))


def test_parse_sorts_and_dedupes_entrypoints() -> None:
    cg = _parse(_doc(entrypoints=["c", "a", "c"]))

    assert cg.entrypoints == ("a", "c")


def test_parse_ignores_unknown_fields() -> None:
    cg = _parse(_doc(generator={"name": "tool", "version": "1"}))

    assert cg.nodes.height == 3


def test_error_carries_reason_and_detail() -> None:
    with pytest.raises(CallgraphError) as caught:
        _parse(_doc(nodes=[{"id": "a"}, {"id": "a"}]))

    error = caught.value
    assert isinstance(error, ValueError)
    assert error.reason_code == "callgraph_duplicate_node"
    assert "'a'" in error.detail
    assert str(error).startswith("callgraph_duplicate_node: ")


def test_invalid_json_is_rejected() -> None:
    assert _reason(b'{"schema": ') == "callgraph_invalid_json"


def test_invalid_utf8_is_rejected_as_invalid_json() -> None:
    assert _reason(b'{"schema": "\xff"}') == "callgraph_invalid_json"


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param([1, 2], id="not-an-object"),
        pytest.param(_doc(schema="runtime-facts.callgraph.v2"), id="wrong-schema"),
        pytest.param({k: v for k, v in _doc().items() if k != "schema"}, id="missing-schema"),
        pytest.param({k: v for k, v in _doc().items() if k != "callgraphId"}, id="no-graph-id"),
        pytest.param(_doc(callgraphId=""), id="empty-graph-id"),
        pytest.param(_doc(language=None), id="language-not-string"),
        pytest.param(_doc(nodes={"a": {}}), id="nodes-not-list"),
        pytest.param(_doc(edges=None), id="edges-not-list"),
        pytest.param(_doc(nodes=[{"id": "a"}, {"name": "b"}]), id="node-without-id"),
        pytest.param(_doc(nodes=[{"id": "a"}, {"id": 7}]), id="node-id-not-string"),
        pytest.param(_doc(nodes=[{"id": "a"}, {"id": ""}]), id="node-id-empty"),
        pytest.param(_doc(nodes=[{"id": "a"}, "b"]), id="node-not-object"),
        pytest.param(_doc(edges=[{"sourceId": "a"}]), id="edge-without-target"),
        pytest.param(_doc(edges=[{"sourceId": "a", "targetId": True}]), id="edge-target-bool"),
        pytest.param(
            _doc(edges=[{"sourceId": "a", "targetId": "b", "kind": 3}]), id="edge-kind-number"
        ),
        pytest.param(_doc(entrypoints="a"), id="entrypoints-not-list"),
        pytest.param(_doc(entrypoints=["a", 1]), id="entrypoint-not-string"),
    ],
)
def test_invalid_schema_is_rejected(doc: Any) -> None:
    assert _reason(doc) == "callgraph_invalid_schema"


def test_invalid_schema_detail_names_the_element() -> None:
    with pytest.raises(CallgraphError) as caught:
        _parse(_doc(nodes=[{"id": "a"}, {"id": "b"}, {"id": 3}]))

    assert "nodes[2]" in caught.value.detail


def test_duplicate_node_is_rejected() -> None:
    assert _reason(_doc(nodes=[{"id": "a"}, {"id": "b"}, {"id": "a"}])) == (
        "callgraph_duplicate_node"
    )


def test_edge_to_unknown_node_is_rejected() -> None:
    doc = _doc(edges=[{"sourceId": "a", "targetId": "zz", "kind": "call"}])

    assert _reason(doc) == "callgraph_unknown_edge_node"


def test_edge_from_unknown_node_is_rejected() -> None:
    doc = _doc(edges=[{"sourceId": "zz", "targetId": "a", "kind": "call"}])

    assert _reason(doc) == "callgraph_unknown_edge_node"


def test_missing_entrypoints_is_rejected() -> None:
    doc = {k: v for k, v in _doc().items() if k != "entrypoints"}

    assert _reason(doc) == "callgraph_missing_entrypoints"


def test_empty_entrypoints_is_rejected() -> None:
    assert _reason(_doc(entrypoints=[])) == "callgraph_missing_entrypoints"


def test_unknown_entrypoint_is_rejected() -> None:
    assert _reason(_doc(entrypoints=["a", "nope"])) == "callgraph_unknown_entrypoint"


def test_build_numbers_edges_like_parse() -> None:
    doc = _doc()
    built = build_callgraph(
        "cg-1",
        "java",
        pl.Series([n["id"] for n in doc["nodes"]]),
        pl.DataFrame(
            {
                "source_id": [e["sourceId"] for e in doc["edges"]],
                "target_id": [e["targetId"] for e in doc["edges"]],
                "kind": [e["kind"] for e in doc["edges"]],
            }
        ),
        ["a", "a"],
    )
    parsed = _parse(doc)

    assert_frame_equal(built.nodes, parsed.nodes)
    assert_frame_equal(built.edges, parsed.edges)
    assert built.entrypoints == parsed.entrypoints


@pytest.mark.parametrize(
    ("nodes", "edges", "entrypoints", "reason"),
    [
        (["a", "a"], [], ["a"], "callgraph_duplicate_node"),
        (["a"], [("a", "ghost")], ["a"], "callgraph_unknown_edge_node"),
        (["a"], [], [], "callgraph_missing_entrypoints"),
        (["a"], [], ["ghost"], "callgraph_unknown_entrypoint"),
    ],
)
def test_build_rejects_what_parse_rejects(
    nodes: list[str], edges: list[tuple[str, str]], entrypoints: list[str], reason: str
) -> None:
    frame = pl.DataFrame(
        [(s, t, "call") for s, t in edges],
        schema={"source_id": pl.String, "target_id": pl.String, "kind": pl.String},
        orient="row",
    )
    with pytest.raises(CallgraphError) as caught:
        build_callgraph("cg", "java", pl.Series(nodes, dtype=pl.String), frame, entrypoints)
    assert caught.value.reason_code == reason


def test_edge_ids_name_the_endpoints() -> None:
    cg = _parse(_doc())

    expected = pl.DataFrame(
        {"source_id": ["a", "b"], "target_id": ["b", "c"], "kind": ["call", "call"]}
    )
    assert_frame_equal(cg.edge_ids(), expected)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 9), st.integers(0, 9), st.sampled_from([None, "call", "a", "virtual"])
        ),
        max_size=60,
    ),
    st.booleans(),
)
def test_distinct_sorted_matches_a_plain_sort(
    rows: list[tuple[int, int, str | None]], packed: bool
) -> None:
    from transforms import callgraph

    edges = pl.DataFrame(rows, schema=EDGE_SCHEMA, orient="row")
    expected = edges.unique().sort(EDGE_SCHEMA.names(), nulls_last=False)
    key_bits = callgraph._KEY_BITS if packed else 4  # 4 bits: too few, the plain path runs
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(callgraph, "_KEY_BITS", key_bits)
        result = callgraph._distinct_sorted(edges, node_count=10)
    assert_frame_equal(result, expected)
