"""Static reachability of every callgraph node from the entry points.

A :class:`~transforms.callgraph.Callgraph` arrives numbered (a node's number is its row in
the sorted node ids) with its edges sorted by source number, so its edges already are a CSR
adjacency: row offsets come from one ``bincount``, column indices are the target numbers.

The search is level-synchronous and vectorised: each level gathers the out-edges of the
whole frontier at once (the frontier is sorted, so the adjacency is read front to back) and
keeps the targets not seen yet; a node's level is its shortest path length. The random
accesses hit only a one-byte-per-node "seen" array, which keeps the cost close to linear
as graphs outgrow the CPU caches. Call chains deeper than ``_FRONTIER_LEVEL_LIMIT`` levels
(a cost per level in numpy calls) go to ``scipy.sparse.csgraph.breadth_first_order`` from a
virtual super-source that calls every entry point, with depths read off its BFS tree by
pointer doubling. No Python loop touches a node or an edge.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt
import polars as pl

from transforms.callgraph import Callgraph

__all__ = ["STATIC_REACHABILITY_SCHEMA", "compute_static_reachability"]

STATIC_REACHABILITY_SCHEMA: Final = pl.Schema(
    {
        "symbol_id": pl.String,
        "reachable": pl.Boolean,
        "is_entrypoint": pl.Boolean,
        "path_length": pl.Int32,
    }
)

# Past this many BFS levels (long call chains) the vectorised search hands over to scipy's.
_FRONTIER_LEVEL_LIMIT: Final = 256
# A frontier this many times smaller than the graph is deduplicated by sorting, not by a
# pass over a node-sized flag array.
_SMALL_FRONTIER: Final = 16

_IntArray = npt.NDArray[np.int64]
_Int32Array = npt.NDArray[np.int32]


def _invalid(detail: str) -> ValueError:
    return ValueError(f"{detail}; build Callgraph objects with build_callgraph or parse_callgraph")


def _edge_arrays(cg: Callgraph, node_count: int) -> tuple[_Int32Array, _Int32Array]:
    """Source and target numbers as int32 arrays; checks the invariants they rely on."""
    if not {"source_number", "target_number"} <= set(cg.edges.columns):
        raise _invalid("callgraph edges carry no node numbers")
    numbers = cg.edges.select(pl.col("source_number", "target_number").cast(pl.Int32))
    if numbers.null_count().sum_horizontal().item() > 0:
        raise _invalid("callgraph edges refer to unknown nodes")
    sources = numbers.get_column("source_number").to_numpy()
    targets = numbers.get_column("target_number").to_numpy()
    if sources.size and (
        min(sources.min(), targets.min()) < 0 or max(sources.max(), targets.max()) >= node_count
    ):
        raise _invalid("callgraph edges refer to unknown nodes")
    if np.any(sources[1:] < sources[:-1]):
        raise _invalid("callgraph edges are not sorted by source")
    return sources, targets


def _entry_numbers(nodes: pl.Series, entrypoints: tuple[str, ...]) -> _IntArray:
    wanted = pl.Series("entry_id", entrypoints, dtype=pl.String)
    found = nodes.search_sorted(wanted).to_numpy().astype(np.int64)
    at = np.minimum(found, max(nodes.len() - 1, 0))
    known = (found < nodes.len()) & (nodes.gather(at).to_numpy() == wanted.to_numpy())
    if not known.all():
        raise _invalid(f"callgraph entrypoint {wanted.filter(~known)[0]!r} is not a node")
    return found


def _depths_by_frontier(
    node_count: int, indptr: _IntArray, targets: _Int32Array, entrypoints: _IntArray
) -> _IntArray | None:
    """Path lengths (1 for an entry point, -1 when unreached) by a vectorised BFS; None when
    the graph is deeper than ``_FRONTIER_LEVEL_LIMIT`` levels."""
    depth = np.full(node_count, -1, dtype=np.int64)
    seen = np.zeros(node_count, dtype=np.bool_)
    frontier = np.unique(entrypoints)
    seen[frontier] = True
    depth[frontier] = 1
    level = 1
    while frontier.size:
        starts = indptr[frontier]
        degrees = indptr[frontier + 1] - starts
        total = int(degrees.sum())
        if total == 0:
            break
        if level >= _FRONTIER_LEVEL_LIMIT:
            return None
        # positions of every out-edge of the frontier, in frontier order
        positions = np.repeat(starts - (np.cumsum(degrees) - degrees), degrees)
        positions += np.arange(total, dtype=np.int64)
        reached = targets[positions]
        reached = reached[~seen[reached]]
        seen[reached] = True
        if reached.size * _SMALL_FRONTIER < node_count:
            frontier = np.unique(reached).astype(np.int64)
        else:
            flags = np.zeros(node_count, dtype=np.bool_)
            flags[reached] = True
            frontier = np.flatnonzero(flags)
        level += 1
        depth[frontier] = level
    return depth


def _depths_by_scipy(
    node_count: int, indptr: _IntArray, targets: _Int32Array, entrypoints: _IntArray
) -> _IntArray:
    """Path lengths as in :func:`_depths_by_frontier`, for any depth."""
    # scipy costs ~1.4 s to import: only deep graphs pay for it.
    from scipy.sparse import csr_array
    from scipy.sparse.csgraph import breadth_first_order

    super_source = node_count
    size = node_count + 1
    if indptr[-1] + entrypoints.size >= np.iinfo(np.int32).max:
        raise ValueError("callgraph has too many edges for 32-bit CSR offsets")
    # The super-source's row comes last: its out-edges are the entry points.
    full_indptr = np.append(indptr, indptr[-1] + entrypoints.size).astype(np.int32)
    indices = np.concatenate([targets, entrypoints.astype(np.int32)])
    # Float data: csgraph works on float64 weights; BFS ignores their values.
    graph = csr_array((np.ones(indices.size), indices, full_indptr), shape=(size, size))
    _, predecessors = breadth_first_order(
        graph, super_source, directed=True, return_predecessors=True
    )
    own = np.arange(size, dtype=np.int64)
    parent = predecessors.astype(np.int64)
    roots = parent < 0  # the super-source and every unreached node
    parent[roots] = own[roots]
    depth = np.where(roots, 0, 1).astype(np.int64)
    while True:  # pointer doubling: log2(depth) passes
        grandparent = parent[parent]
        if np.array_equal(grandparent, parent):
            break
        depth = depth + depth[parent]
        parent = grandparent
    return np.where(parent == super_source, depth, -1)[:node_count]


def _bfs_depths(
    node_count: int, sources: _Int32Array, targets: _Int32Array, entrypoints: _IntArray
) -> _IntArray:
    """Path lengths per node (1 for an entry point), -1 when unreached.

    ``sources`` must be sorted: the edges are then the CSR adjacency as they stand.
    """
    indptr = np.zeros(node_count + 1, dtype=np.int64)
    np.cumsum(np.bincount(sources, minlength=node_count), out=indptr[1:])
    depth = _depths_by_frontier(node_count, indptr, targets, entrypoints)
    if depth is None:
        depth = _depths_by_scipy(node_count, indptr, targets, entrypoints)
    return depth


def compute_static_reachability(cg: Callgraph) -> pl.DataFrame:
    """Mark every callgraph node reachable or not from the entry points.

    Args:
        cg: A callgraph from :func:`transforms.callgraph.parse_callgraph` or
            :func:`transforms.callgraph.build_callgraph` (nodes sorted, edges numbered).

    Returns:
        One row per node, sorted by ``symbol_id``, with ``reachable`` (Boolean),
        ``is_entrypoint`` (Boolean) and ``path_length`` (Int32): the number of nodes on
        the shortest path from any entry point, 1 for an entry point, null when
        unreachable.

    Raises:
        ValueError: The callgraph does not hold the invariants its builders establish
            (only possible for a hand-made ``Callgraph``).
    """
    nodes = cg.nodes.select(pl.col("symbol_id").cast(pl.String))
    ids = nodes.get_column("symbol_id")
    if not ids.is_sorted():
        raise _invalid("callgraph nodes are not sorted")
    sources, targets = _edge_arrays(cg, nodes.height)
    entry_numbers = _entry_numbers(ids, cg.entrypoints)
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
