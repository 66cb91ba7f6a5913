"""Benchmark static reachability + scoring on a random callgraph.

Run: ``.venv/bin/python -m benchmarks.bench_lattice``. The graph is generated with a seeded
numpy Generator, so every run scores exactly the same data; only the timings vary. The
Callgraph is built from columns (no JSON): ``build_s`` is the validation and numbering that
parsing a document also does (once per graph and process), ``total_s`` what scoring a
subject against the graph costs (static reachability + score).
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime

import numpy as np
import polars as pl

from transforms.callgraph import Callgraph, build_callgraph
from transforms.reachability import compute_static_reachability
from transforms.score import ScoreParams, score_symbols

_NODES_PER_ENTRYPOINT = 1_000
_OUTSIDE_SHARE = 10  # one runtime symbol in this many is not a graph node
_WINDOW_SECONDS = 14 * 86_400  # longer than the default 7-day minimum, so RU applies
_START = datetime(2025, 1, 1, tzinfo=UTC)


def _ids(prefix: str, count: int) -> pl.Series:
    # Zero-padded, so numeric order is string order and the nodes come out sorted.
    number = pl.int_range(count, dtype=pl.Int64).cast(pl.String).str.zfill(10)
    return pl.select(pl.lit(prefix) + number).to_series().alias("symbol_id")


def make_graph_columns(
    rng: np.random.Generator, nodes: int, edges: int
) -> tuple[pl.Series, pl.DataFrame, list[str]]:
    """A uniform random directed graph with one entry point per 1,000 nodes, as the node
    ids, the edges (exact duplicates possible) and the entry points."""
    symbol = _ids("sym:bench:", nodes)
    edge_frame = pl.DataFrame(
        {
            "source_id": symbol.gather(rng.integers(0, nodes, edges)),
            "target_id": symbol.gather(rng.integers(0, nodes, edges)),
        }
    ).with_columns(kind=pl.lit("call"))
    entry_count = max(1, nodes // _NODES_PER_ENTRYPOINT)
    entries = np.sort(rng.choice(nodes, size=entry_count, replace=False))
    return symbol, edge_frame, symbol.gather(entries).to_list()


def make_runtime(rng: np.random.Generator, cg: Callgraph, observed: int) -> pl.DataFrame:
    """``observed`` symbols with hits: 90% graph nodes, 10% symbols the graph lacks."""
    outside = observed // _OUTSIDE_SHARE
    inside = rng.choice(cg.nodes.height, size=observed - outside, replace=False)
    symbols = pl.concat([cg.nodes["symbol_id"].gather(inside), _ids("sym:extra:", outside)])
    first_us = rng.integers(0, _WINDOW_SECONDS * 1_000_000, observed)
    last_us = first_us + rng.integers(0, 3_600 * 1_000_000, observed)
    start = pl.lit(_START, dtype=pl.Datetime("us", "UTC"))
    return pl.DataFrame(
        {
            "symbol_id": symbols,
            "runtime_hit_count": rng.integers(1, 10_000, observed, dtype=np.int64),
            "first_us": first_us,
            "last_us": last_us,
        }
    ).select(
        "symbol_id",
        "runtime_hit_count",
        first_observed_at=start + pl.duration(microseconds=pl.col("first_us")),
        last_observed_at=start + pl.duration(microseconds=pl.col("last_us")),
    )


def run_lattice_sizes(
    sizes: list[tuple[int, int, int]], seed: int, repeats: int = 1
) -> list[dict[str, float]]:
    """Time compute_static_reachability and score_symbols on generated subjects.

    The timed runs alternate between the sizes (small, large, small, large, ...) so a slow
    spell of a shared machine weighs on every size alike.

    Args:
        sizes: (callgraph nodes, random edges drawn, runtime symbols with hits) per subject;
            exact duplicate edges are dropped before timing.
        seed: Seed of the numpy Generator; same seed, same data.
        repeats: Timed runs per size; the medians are reported.

    Returns:
        Per size: seconds for ``generate_s`` (including ``build_s``, the callgraph's
        validation and numbering), ``reachability_s``, ``score_s`` and ``total_s``
        (reachability + score, median of the repeats), plus counts ``nodes``, ``edges``,
        ``rows`` and ``reachable`` as floats.
    """
    subjects = []
    for nodes, edges, observed in sizes:
        rng = np.random.default_rng(seed)
        started = time.perf_counter()
        columns = make_graph_columns(rng, nodes, edges)
        building = time.perf_counter()
        cg = build_callgraph("bench", "java", *columns)
        built = time.perf_counter()
        runtime = make_runtime(rng, cg, observed)
        del columns
        subjects.append((cg, runtime, time.perf_counter() - started, built - building))
    timings: list[list[tuple[float, float]]] = [[] for _ in sizes]
    results: list[tuple[pl.DataFrame, pl.DataFrame]] = []
    for _ in range(max(1, repeats)):
        results = []
        for i, (cg, runtime, _, _) in enumerate(subjects):
            begin = time.perf_counter()
            static = compute_static_reachability(cg)
            reached = time.perf_counter()
            scored = score_symbols(static, runtime, ScoreParams())
            finished = time.perf_counter()
            timings[i].append((reached - begin, finished - reached))
            results.append((static, scored))
    out = []
    for (cg, _, generate_s, build_s), runs, (static, scored) in zip(
        subjects, timings, results, strict=True
    ):
        out.append(
            {
                "generate_s": generate_s,
                "build_s": build_s,
                "reachability_s": statistics.median(r for r, _ in runs),
                "score_s": statistics.median(s for _, s in runs),
                "total_s": statistics.median(r + s for r, s in runs),
                "nodes": float(cg.nodes.height),
                "edges": float(cg.edges.height),
                "rows": float(scored.height),
                "reachable": float(static["reachable"].sum()),
            }
        )
    return out


def _report(label: str, result: dict[str, float]) -> None:
    print(
        f"{label}: reachability {result['reachability_s']:.2f}s, "
        f"score {result['score_s']:.2f}s, total {result['total_s']:.2f}s "
        f"({int(result['edges'])} distinct edges, {int(result['reachable'])} reachable, "
        f"{int(result['rows'])} scored rows; generation {result['generate_s']:.2f}s, "
        f"of which graph build {result['build_s']:.2f}s)"
    )


if __name__ == "__main__":
    small, large = run_lattice_sizes(
        [(1_000_000, 5_000_000, 200_000), (2_000_000, 10_000_000, 400_000)], seed=7, repeats=5
    )
    _report("1M nodes / 5M edges / 200k observed", small)
    _report("2M nodes / 10M edges / 400k observed", large)
    print(f"time ratio 2x/1x: {large['total_s'] / small['total_s']:.2f}")
