"""Parse and validate a ``runtime-facts.callgraph.v1`` document into columnar frames.

The document is already decompressed. Parsing is orjson; every per-element check after
that is a vectorised polars operation, so a graph with millions of edges costs little more
than its JSON decode. Diagnostics that need an element index are computed only on failure.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from operator import itemgetter, methodcaller
from typing import Any, Final

import orjson
import polars as pl

__all__ = ["CALLGRAPH_SCHEMA", "Callgraph", "CallgraphError", "parse_callgraph"]

CALLGRAPH_SCHEMA: Final = "runtime-facts.callgraph.v1"
_SHOWN_IDS: Final = 5


class CallgraphError(ValueError):
    """A callgraph document breaks the contract; ``reason_code`` is stable for scripts."""

    def __init__(self, reason_code: str, detail: str) -> None:
        super().__init__(f"{reason_code}: {detail}")
        self.reason_code = reason_code
        self.detail = detail


@dataclass(frozen=True, eq=False)
class Callgraph:
    """A validated callgraph.

    ``eq=False`` because frames do not compare with ``==``; use ``assert_frame_equal``.

    Attributes:
        callgraph_id: The document's ``callgraphId``.
        language: The document's ``language``.
        nodes: One Utf8 column ``symbol_id``, unique, sorted.
        edges: Utf8 ``source_id``, ``target_id``, ``kind`` (null when absent), distinct
            rows sorted by all three columns; every endpoint is a node.
        entrypoints: Sorted, unique node ids.
    """

    callgraph_id: str
    language: str
    nodes: pl.DataFrame
    edges: pl.DataFrame
    entrypoints: tuple[str, ...]


@contextmanager
def _gc_paused() -> Iterator[None]:
    # Decoding millions of small dicts triggers repeated full collections that find
    # nothing to free; pausing the collector cuts decode time by about a third.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _first_bad_index(items: list[Any], ok: Callable[[Any], bool]) -> int:
    return next((i for i, item in enumerate(items) if not ok(item)), -1)


def _is_nonempty_str(value: object) -> bool:
    return isinstance(value, str) and value != ""


def _string_column(
    items: list[Any], key: str, name: str, where: str, *, required: bool = True
) -> pl.Series:
    """Pull ``item[key]`` out of every element as a Utf8 Series, or explain the first bad one."""
    getter = itemgetter(key) if required else methodcaller("get", key)
    try:
        values = list(map(getter, items))
        column = pl.Series(name, values, dtype=pl.String, strict=True)
        valid = not required or (
            column.null_count() == 0 and not (column.str.len_bytes() == 0).any()
        )
    except (KeyError, TypeError, AttributeError):
        valid = False
    if valid:
        return column

    def ok(item: Any) -> bool:
        if not isinstance(item, dict):
            return False
        if required:
            return _is_nonempty_str(item.get(key))
        return item.get(key) is None or isinstance(item[key], str)

    index = _first_bad_index(items, ok)
    rule = "a non-empty string" if required else "a string when present"
    raise CallgraphError(
        "callgraph_invalid_schema",
        f"{where}[{index}] must be an object whose {key!r} is {rule}",
    )


def _shown(ids: pl.Series) -> str:
    first = ids.unique().sort().head(_SHOWN_IDS).to_list()
    return ", ".join(repr(x) for x in first)


def _require_list(doc: dict[str, Any], key: str) -> list[Any]:
    value = doc.get(key)
    if not isinstance(value, list):
        raise CallgraphError("callgraph_invalid_schema", f"{key!r} must be a list")
    return value


def _decode(doc: bytes) -> dict[str, Any]:
    try:
        with _gc_paused():
            parsed = orjson.loads(doc)
    except orjson.JSONDecodeError as exc:
        raise CallgraphError("callgraph_invalid_json", str(exc)) from exc
    if not isinstance(parsed, dict):
        raise CallgraphError("callgraph_invalid_schema", "the document must be a JSON object")
    schema = parsed.get("schema")
    if schema != CALLGRAPH_SCHEMA:
        raise CallgraphError(
            "callgraph_invalid_schema",
            f"'schema' must be {CALLGRAPH_SCHEMA!r}, got {schema!r}",
        )
    for key in ("callgraphId", "language"):
        if not isinstance(parsed.get(key), str) or (key == "callgraphId" and not parsed[key]):
            raise CallgraphError("callgraph_invalid_schema", f"{key!r} must be a string")
    return parsed


def _build_nodes(items: list[Any]) -> pl.DataFrame:
    ids = _string_column(items, "id", "symbol_id", "nodes")
    duplicated = ids.filter(ids.is_duplicated())
    if duplicated.len() > 0:
        count = duplicated.n_unique()
        raise CallgraphError(
            "callgraph_duplicate_node",
            f"{count} node id(s) appear more than once: {_shown(duplicated)}",
        )
    return ids.sort().to_frame()


def _build_edges(items: list[Any], nodes: pl.DataFrame) -> pl.DataFrame:
    raw = pl.DataFrame(
        [
            _string_column(items, "sourceId", "source_id", "edges"),
            _string_column(items, "targetId", "target_id", "edges"),
            _string_column(items, "kind", "kind", "edges", required=False),
        ]
    )
    # Node row numbers follow the sorted ids, so sorting edges by them equals sorting by
    # the strings, at a fraction of the cost; a null number marks an unknown endpoint.
    numbered = nodes.with_row_index("number")
    coded = raw.join(
        numbered.rename({"symbol_id": "source_id", "number": "source_number"}),
        on="source_id",
        how="left",
    ).join(
        numbered.rename({"symbol_id": "target_id", "number": "target_number"}),
        on="target_id",
        how="left",
    )
    unknown = pl.concat(
        [
            coded.filter(pl.col("source_number").is_null())["source_id"],
            coded.filter(pl.col("target_number").is_null())["target_id"],
        ]
    )
    if unknown.len() > 0:
        raise CallgraphError(
            "callgraph_unknown_edge_node",
            f"edges refer to {unknown.n_unique()} id(s) that are not nodes: {_shown(unknown)}",
        )
    ordered = coded.sort("source_number", "target_number", "kind", nulls_last=False)
    keys = ("source_number", "target_number", "kind")
    first_of_run = pl.any_horizontal(pl.col(k).ne_missing(pl.col(k).shift(1)) for k in keys)
    return ordered.filter(first_of_run).select("source_id", "target_id", "kind")


def _build_entrypoints(doc: dict[str, Any], nodes: pl.DataFrame) -> tuple[str, ...]:
    if "entrypoints" not in doc or doc["entrypoints"] is None:
        raise CallgraphError("callgraph_missing_entrypoints", "'entrypoints' is missing")
    items = _require_list(doc, "entrypoints")
    if not items:
        raise CallgraphError(
            "callgraph_missing_entrypoints",
            "'entrypoints' is empty: every node would be unreachable",
        )
    index = _first_bad_index(items, _is_nonempty_str)
    if index >= 0:
        raise CallgraphError(
            "callgraph_invalid_schema", f"entrypoints[{index}] must be a non-empty string"
        )
    entrypoints = pl.Series("symbol_id", items, dtype=pl.String).unique().sort()
    unknown = entrypoints.filter(~entrypoints.is_in(nodes["symbol_id"].implode()))
    if unknown.len() > 0:
        raise CallgraphError(
            "callgraph_unknown_entrypoint",
            f"{unknown.len()} entrypoint(s) are not nodes: {_shown(unknown)}",
        )
    return tuple(entrypoints.to_list())


def parse_callgraph(doc: bytes) -> Callgraph:
    """Parse and validate a decompressed ``runtime-facts.callgraph.v1`` JSON document.

    Extra fields on the document, on nodes and on edges are ignored. Exact duplicate edges
    are collapsed; duplicate entrypoints too.

    Args:
        doc: UTF-8 JSON bytes (already gunzipped).

    Returns:
        The validated :class:`Callgraph`, with sorted frames and entrypoints.

    Raises:
        CallgraphError: ``callgraph_invalid_json``, ``callgraph_invalid_schema``,
            ``callgraph_duplicate_node``, ``callgraph_unknown_edge_node``,
            ``callgraph_missing_entrypoints`` or ``callgraph_unknown_entrypoint``.
    """
    parsed = _decode(doc)
    node_items = _require_list(parsed, "nodes")
    edge_items = _require_list(parsed, "edges")
    nodes = _build_nodes(node_items)
    edges = _build_edges(edge_items, nodes)
    entrypoints = _build_entrypoints(parsed, nodes)
    return Callgraph(
        callgraph_id=parsed["callgraphId"],
        language=parsed["language"],
        nodes=nodes,
        edges=edges,
        entrypoints=entrypoints,
    )
