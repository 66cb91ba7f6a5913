"""Static reachability of every callgraph node from the entry points.

One breadth-first search in compiled code: node ids are numbered by their sorted position
(edges get their endpoints' numbers from a DuckDB join on 64-bit id hashes), edges become a
CSR matrix with one extra virtual node (the super-source) that calls every
entry point, and ``scipy.sparse.csgraph.breadth_first_order`` returns the BFS tree. Depths
in a BFS tree are shortest path lengths; they are read off the predecessor array by pointer
doubling (``log2(depth)`` vectorised passes), so no Python loop touches a node or an edge.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt
import polars as pl

from transforms.callgraph import Callgraph
from transforms.duck import offline_connection

__all__ = ["STATIC_REACHABILITY_SCHEMA", "compute_static_reachability"]

STATIC_REACHABILITY_SCHEMA: Final = pl.Schema(
    {
        "symbol_id": pl.String,
        "reachable": pl.Boolean,
        "is_entrypoint": pl.Boolean,
        "path_length": pl.Int32,
    }
)

_IntArray = npt.NDArray[np.int64]


def _id_hash(column: str) -> pl.Expr:
    """The 64-bit hash every join below uses for an id column (nodes and edges alike)."""
    return pl.col(column).hash(seed=0)


def _hashed(numbered: pl.DataFrame) -> pl.DataFrame | None:
    """``(_h, number)`` per node, or None when two node ids share a 64-bit hash."""
    hashes = numbered.select(_id_hash("symbol_id").alias("_h"), "number")
    return hashes if hashes.get_column("_h").n_unique() == hashes.height else None


def _number(
    ids: pl.DataFrame, column: str, numbered: pl.DataFrame, hashes: pl.DataFrame | None
) -> pl.DataFrame:
    """Attach ``<column>_number``, the row of ``ids[column]`` in ``numbered``; fail on misses.

    Joins on a 64-bit hash of the id when the node hashes are all distinct (a join on
    integers is several times faster than on strings at millions of edges), else on the ids.
    """
    target = f"{column}_number"
    if hashes is not None:
        coded = (
            ids.with_columns(_id_hash(column).alias("_h"))
            .join(hashes.rename({"number": target}), on="_h", how="left")
            .drop("_h")
        )
    else:  # a 64-bit collision between two node ids: exact string join
        key = numbered.rename({"symbol_id": column, "number": target})
        coded = ids.join(key, on=column, how="left")
    missing = coded.filter(pl.col(f"{column}_number").is_null())
    if missing.height > 0:
        raise ValueError(
            f"callgraph {column} refers to unknown node {missing[column][0]!r}; "
            "build Callgraph objects with parse_callgraph"
        )
    return coded


_EDGE_JOIN = """
SELECT s.number AS source_number, t.number AS target_number
FROM edge_hashes AS e
JOIN node_hashes AS s ON e.source_h = s._h
JOIN node_hashes AS t ON e.target_h = t._h
"""


def _hashed_edge_numbers(
    edges: pl.DataFrame, hashes: pl.DataFrame
) -> tuple[_IntArray, _IntArray] | None:
    """Both endpoints' numbers by one DuckDB hash join on 64-bit id hashes (its partitioned
    join keeps doubling the graph near 2x the time, where a plain hash join is cache-bound).
    Edge order is not kept: depths do not depend on it. None when an endpoint is unknown."""
    edge_hashes = edges.select(
        _id_hash("source_id").alias("source_h"),
        _id_hash("target_id").alias("target_h"),
    )
    con = offline_connection()
    try:
        con.register("edge_hashes", edge_hashes.to_arrow())
        con.register("node_hashes", hashes.to_arrow())
        coded = con.sql(_EDGE_JOIN).pl()
    finally:
        con.close()
    if coded.height != edges.height:
        return None
    return (
        coded["source_number"].to_numpy().astype(np.int64),
        coded["target_number"].to_numpy().astype(np.int64),
    )


def _edge_numbers(
    cg: Callgraph, numbered: pl.DataFrame, hashes: pl.DataFrame | None
) -> tuple[_IntArray, _IntArray]:
    edges = cg.edges.select("source_id", "target_id")
    if hashes is not None:
        found = _hashed_edge_numbers(edges, hashes)
        if found is not None:
            return found
    # A 64-bit collision between node ids, or an unknown endpoint (named by the error)
    coded = _number(_number(edges, "source_id", numbered, None), "target_id", numbered, None)
    return (
        coded["source_id_number"].to_numpy().astype(np.int64),
        coded["target_id_number"].to_numpy().astype(np.int64),
    )


def _bfs_depths(
    node_count: int, sources: _IntArray, targets: _IntArray, entrypoints: _IntArray
) -> _IntArray:
    """Edges counted from the super-source (``node_count``) per node; -1 when unreached."""
    # scipy costs ~1.4 s to import: only subjects that have a callgraph pay for it.
    from scipy.sparse import csr_array
    from scipy.sparse.csgraph import breadth_first_order

    super_source = node_count
    size = node_count + 1
    rows = np.concatenate([sources, np.full(entrypoints.size, super_source, np.int64)])
    cols = np.concatenate([targets, entrypoints])
    # Float data: duplicate edges are summed while building CSR and must stay non-zero.
    graph = csr_array(
        (np.ones(rows.size, dtype=np.float64), (rows.astype(np.int32), cols.astype(np.int32))),
        shape=(size, size),
    )
    _, predecessors = breadth_first_order(
        graph, super_source, directed=True, return_predecessors=True
    )
    own = np.arange(size, dtype=np.int64)
    parent = predecessors.astype(np.int64)
    roots = parent < 0  # the super-source and every unreached node
    parent[roots] = own[roots]
    depth = np.where(roots, 0, 1).astype(np.int64)
    while True:
        grandparent = parent[parent]
        if np.array_equal(grandparent, parent):
            break
        depth = depth + depth[parent]
        parent = grandparent
    reached = parent == super_source
    reached[super_source] = False
    return np.where(reached, depth, -1)[:node_count]


def compute_static_reachability(cg: Callgraph) -> pl.DataFrame:
    """Mark every callgraph node reachable or not from the entry points.

    Args:
        cg: A validated callgraph (see :func:`transforms.callgraph.parse_callgraph`).

    Returns:
        One row per node, sorted by ``symbol_id``, with ``reachable`` (Boolean),
        ``is_entrypoint`` (Boolean) and ``path_length`` (Int32): the number of nodes on
        the shortest path from any entry point, 1 for an entry point, null when
        unreachable.

    Raises:
        ValueError: An edge or entry point names an id that is not a node (only possible
            for a hand-built ``Callgraph``).
    """
    nodes = cg.nodes.select(pl.col("symbol_id").cast(pl.String)).sort("symbol_id")
    numbered = nodes.with_row_index("number")
    hashes = _hashed(numbered)
    sources, targets = _edge_numbers(cg, numbered, hashes)
    entry_frame = pl.DataFrame({"entry_id": list(cg.entrypoints)}, schema={"entry_id": pl.String})
    entry_numbers = (
        _number(entry_frame, "entry_id", numbered, hashes)["entry_id_number"]
        .to_numpy()
        .astype(np.int64)
    )
    depths = _bfs_depths(nodes.height, sources, targets, entry_numbers)
    is_entrypoint = np.zeros(nodes.height, dtype=np.bool_)
    is_entrypoint[entry_numbers] = True
    return nodes.with_columns(
        reachable=pl.Series(depths >= 0, dtype=pl.Boolean),
        is_entrypoint=pl.Series(is_entrypoint, dtype=pl.Boolean),
        path_length=pl.Series(depths, dtype=pl.Int64),
    ).with_columns(
        path_length=pl.when(pl.col("reachable")).then(pl.col("path_length")).cast(pl.Int32)
    )
