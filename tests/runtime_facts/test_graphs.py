"""Staged callgraphs: the compiled form kept next to the CAS object."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from polars.testing import assert_frame_equal

from runtime_facts.errors import NotFoundError
from runtime_facts.home import Home
from runtime_facts.stores.graphs import (
    compiled_graph_dir,
    load_graph,
    read_compiled_graph,
    stage_graph,
    write_compiled_graph,
)
from transforms.callgraph import Callgraph, parse_callgraph

Clock = Callable[[], datetime]


def _graph_file(fixtures_dir: Path) -> Path:
    return fixtures_dir / "callgraphs" / "cg-checkout-2.4.1.json"


def _assert_same(actual: Callgraph, expected: Callgraph) -> None:
    assert (actual.callgraph_id, actual.language) == (expected.callgraph_id, expected.language)
    assert_frame_equal(actual.nodes, expected.nodes)
    assert_frame_equal(actual.edges, expected.edges)
    assert actual.entrypoints == expected.entrypoints


def test_staging_compiles_and_loading_needs_no_document(
    home: Home, fixtures_dir: Path, clock: Clock
) -> None:
    parsed = parse_callgraph(_graph_file(fixtures_dir).read_bytes())
    sha = stage_graph(home, _graph_file(fixtures_dir), "acme", clock()).sha256
    assert (compiled_graph_dir(home, sha) / "graph.json").is_file()

    home.cas.delete("graphs", sha)  # only the compiled form is left

    _assert_same(load_graph(home, sha), parsed)


def test_missing_compiled_form_is_rebuilt_from_cas(
    home: Home, fixtures_dir: Path, clock: Clock
) -> None:
    sha = stage_graph(home, _graph_file(fixtures_dir), "acme", clock()).sha256
    parsed = parse_callgraph(_graph_file(fixtures_dir).read_bytes())
    for path in compiled_graph_dir(home, sha).iterdir():
        path.unlink()
    compiled_graph_dir(home, sha).rmdir()

    _assert_same(load_graph(home, sha), parsed)
    compiled = read_compiled_graph(home, sha)
    assert compiled is not None
    _assert_same(compiled, parsed)


@pytest.mark.parametrize("damaged", ["nodes.parquet", "edges.parquet", "graph.json"])
def test_damaged_compiled_form_is_ignored_and_replaced(
    home: Home, fixtures_dir: Path, clock: Clock, damaged: str
) -> None:
    sha = stage_graph(home, _graph_file(fixtures_dir), "acme", clock()).sha256
    path = compiled_graph_dir(home, sha) / damaged
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))

    parsed = parse_callgraph(_graph_file(fixtures_dir).read_bytes())
    assert read_compiled_graph(home, sha) is None
    _assert_same(load_graph(home, sha), parsed)  # from the CAS object

    home.cas.delete("graphs", sha)  # the entry was rewritten whole by that load
    _assert_same(load_graph(home, sha), parsed)


def test_without_document_or_compiled_form_the_graph_is_missing(
    home: Home, fixtures_dir: Path, clock: Clock
) -> None:
    sha = stage_graph(home, _graph_file(fixtures_dir), "acme", clock()).sha256
    home.cas.delete("graphs", sha)
    (compiled_graph_dir(home, sha) / "edges.parquet").unlink()

    with pytest.raises(NotFoundError):
        load_graph(home, sha)


def test_writing_an_existing_entry_again_changes_nothing(
    home: Home, fixtures_dir: Path, clock: Clock
) -> None:
    sha = stage_graph(home, _graph_file(fixtures_dir), "acme", clock()).sha256
    folder = compiled_graph_dir(home, sha)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    write_compiled_graph(home, sha, parse_callgraph(_graph_file(fixtures_dir).read_bytes()))

    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no scratch left
