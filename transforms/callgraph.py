"""Parse and validate a ``runtime-facts.callgraph.v1`` document into columnar frames.

The document is already decompressed. Parsing is strict (a repeated key in any object is
`duplicate_json_key`, see `transforms/strict_json.py`); every per-element check after
that is a vectorised polars operation, so a graph with millions of edges costs little more
than its JSON decode. Diagnostics that need an element index are computed only on failure.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from operator import itemgetter, methodcaller
from typing import Any, Final

import numpy as np
import polars as pl

from transforms.errors import Reason
from transforms.strict_json import DuplicateKeyError, loads_strict

__all__ = [
    "CALLGRAPH_SCHEMA",
    "EDGE_SCHEMA",
    "Callgraph",
    "CallgraphError",
    "build_callgraph",
    "parse_callgraph",
]

CALLGRAPH_SCHEMA: Final = "runtime-facts.callgraph.v1"
_SHOWN_IDS: Final = 5

EDGE_SCHEMA: Final = pl.Schema(
    {"source_number": pl.UInt32, "target_number": pl.UInt32, "kind": pl.String}
)
_KEY_BITS: Final = 64


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

    Build one with :func:`parse_callgraph` or :func:`build_callgraph`: they establish the
    invariants below, which the reachability transform relies on.

    Attributes:
        callgraph_id: The document's ``callgraphId``.
        language: The document's ``language``.
        nodes: One Utf8 column ``symbol_id``, unique, sorted; a node's number is its row.
        edges: ``EDGE_SCHEMA``: the endpoints' node numbers ``source_number`` and
            ``target_number`` and the Utf8 ``kind`` (null when absent); distinct rows
            sorted by all three, which is also the order of the ids (see ``edge_ids``).
        entrypoints: Sorted, unique node ids.
    """

    callgraph_id: str
    language: str
    nodes: pl.DataFrame
    edges: pl.DataFrame
    entrypoints: tuple[str, ...]

    def edge_ids(self) -> pl.DataFrame:
        """The edges with their endpoints' ids: ``source_id``, ``target_id``, ``kind``."""
        ids = self.nodes.get_column("symbol_id")
        return pl.DataFrame(
            {
                "source_id": ids.gather(self.edges.get_column("source_number")),
                "target_id": ids.gather(self.edges.get_column("target_number")),
                "kind": self.edges.get_column("kind"),
            }
        )


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
            parsed = loads_strict(doc)  # a node or the graph naming a key twice is ambiguous
    except DuplicateKeyError as exc:
        raise CallgraphError(str(Reason.DUPLICATE_JSON_KEY), str(exc)) from exc
    except (ValueError, RecursionError) as exc:
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


def _node_frame(ids: pl.Series) -> pl.DataFrame:
    duplicated = ids.filter(ids.is_duplicated())
    if duplicated.len() > 0:
        count = duplicated.n_unique()
        raise CallgraphError(
            "callgraph_duplicate_node",
            f"{count} node id(s) appear more than once: {_shown(duplicated)}",
        )
    return ids.alias("symbol_id").sort().to_frame()


def _numbered_edges(raw: pl.DataFrame, nodes: pl.DataFrame) -> pl.DataFrame:
    # Node numbers follow the sorted ids, so sorting edges by them equals sorting by the
    # strings, at a fraction of the cost; a null number marks an unknown endpoint.
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
    return _distinct_sorted(coded.select(EDGE_SCHEMA.names()), nodes.height)


def _distinct_sorted(edges: pl.DataFrame, node_count: int) -> pl.DataFrame:
    """Distinct ``EDGE_SCHEMA`` rows sorted by all three columns (a null kind first).

    Each row packs into one 64-bit key (source, target, rank of the kind among the
    graph's few distinct kinds) whenever the bits suffice, which is always short of
    hundreds of millions of nodes: one integer sort instead of a three-column sort.
    """
    kinds = edges.get_column("kind").drop_nulls().unique().sort()
    node_bits = max(1, (node_count - 1).bit_length())
    kind_bits = max(1, kinds.len().bit_length())  # rank 0 is the null kind
    if 2 * node_bits + kind_bits > _KEY_BITS:
        ordered = edges.sort(EDGE_SCHEMA.names(), nulls_last=False)
        first_of_run = pl.any_horizontal(
            pl.col(k).ne_missing(pl.col(k).shift(1)) for k in EDGE_SCHEMA.names()
        )
        return ordered.filter(first_of_run).cast(EDGE_SCHEMA)
    packed = edges.select(
        pl.col("source_number", "target_number").cast(pl.UInt64),
        kind_rank=(pl.col("kind").cast(pl.Enum(kinds.to_list())).to_physical() + 1)
        .fill_null(0)
        .cast(pl.UInt64),
    )
    column = {name: packed.get_column(name).to_numpy() for name in packed.columns}
    keyed = (
        (column["source_number"] << np.uint64(node_bits + kind_bits))
        | (column["target_number"] << np.uint64(kind_bits))
        | column["kind_rank"]
    )
    keyed.sort()  # numpy's unique() hashes, several times slower than a sort here
    key = keyed[np.concatenate(([True], keyed[1:] != keyed[:-1]))] if keyed.size else keyed
    rank = pl.Series((key & np.uint64((1 << kind_bits) - 1)).astype(np.int64) - 1)
    return pl.DataFrame(
        {
            "source_number": key >> np.uint64(node_bits + kind_bits),
            "target_number": (key >> np.uint64(kind_bits)) & np.uint64((1 << node_bits) - 1),
            "kind": kinds.gather(pl.select(pl.when(rank >= 0).then(rank)).to_series()),
        }
    ).cast(EDGE_SCHEMA)


def _known_entrypoints(ids: pl.Series, nodes: pl.DataFrame) -> tuple[str, ...]:
    if ids.len() == 0:
        raise CallgraphError(
            "callgraph_missing_entrypoints",
            "'entrypoints' is empty: every node would be unreachable",
        )
    entrypoints = ids.unique().sort()
    unknown = entrypoints.filter(~entrypoints.is_in(nodes["symbol_id"].implode()))
    if unknown.len() > 0:
        raise CallgraphError(
            "callgraph_unknown_entrypoint",
            f"{unknown.len()} entrypoint(s) are not nodes: {_shown(unknown)}",
        )
    return tuple(entrypoints.to_list())


def build_callgraph(
    callgraph_id: str,
    language: str,
    node_ids: pl.Series,
    edges: pl.DataFrame,
    entrypoints: Sequence[str],
) -> Callgraph:
    """Validate a callgraph given as columns and number its nodes and edges.

    Args:
        callgraph_id: The graph's ``callgraphId``.
        language: The graph's ``language``.
        node_ids: Utf8 node ids, any order.
        edges: Utf8 ``source_id``, ``target_id`` and ``kind`` (nullable), any order,
            duplicates allowed (they are collapsed).
        entrypoints: Node ids, any order, duplicates allowed.

    Returns:
        The :class:`Callgraph`, sorted and numbered.

    Raises:
        CallgraphError: ``callgraph_duplicate_node``, ``callgraph_unknown_edge_node``,
            ``callgraph_missing_entrypoints`` or ``callgraph_unknown_entrypoint``.
    """
    nodes = _node_frame(node_ids.cast(pl.String))
    raw = edges.select(pl.col("source_id", "target_id", "kind").cast(pl.String))
    return Callgraph(
        callgraph_id=callgraph_id,
        language=language,
        nodes=nodes,
        edges=_numbered_edges(raw, nodes),
        entrypoints=_known_entrypoints(
            pl.Series("symbol_id", list(entrypoints), dtype=pl.String), nodes
        ),
    )


def _entrypoint_ids(doc: dict[str, Any]) -> pl.Series:
    if "entrypoints" not in doc or doc["entrypoints"] is None:
        raise CallgraphError("callgraph_missing_entrypoints", "'entrypoints' is missing")
    items = _require_list(doc, "entrypoints")
    index = _first_bad_index(items, _is_nonempty_str)
    if index >= 0:
        raise CallgraphError(
            "callgraph_invalid_schema", f"entrypoints[{index}] must be a non-empty string"
        )
    return pl.Series("symbol_id", items, dtype=pl.String)


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
    node_ids = _string_column(node_items, "id", "symbol_id", "nodes")
    nodes = _node_frame(node_ids)
    raw = pl.DataFrame(
        [
            _string_column(edge_items, "sourceId", "source_id", "edges"),
            _string_column(edge_items, "targetId", "target_id", "edges"),
            _string_column(edge_items, "kind", "kind", "edges", required=False),
        ]
    )
    edges = _numbered_edges(raw, nodes)
    entrypoints = _known_entrypoints(_entrypoint_ids(parsed), nodes)
    return Callgraph(
        callgraph_id=parsed["callgraphId"],
        language=parsed["language"],
        nodes=nodes,
        edges=edges,
        entrypoints=entrypoints,
    )
