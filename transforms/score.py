"""Lattice state, bucket, confidence and score per symbol (SPEC section 5).

Everything is one vectorised polars query; the only scalar computed up front is whether the
subject's runtime observation window is long enough to count missing hits as evidence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import polars as pl

from transforms.lattice import REACHABLE_STATES, UNREACHABLE_STATES, State, join_expr
from transforms.reachability import STATIC_REACHABILITY_SCHEMA

__all__ = ["SCORE_SCHEMA", "ScoreParams", "score_symbols", "window_complete"]

SCORE_SCHEMA: Final = pl.Schema(
    {
        "symbol_id": pl.String,
        "state": pl.String,
        "bucket": pl.String,
        "confidence": pl.Float64,
        "weight": pl.Float64,
        "score": pl.Float64,
        "runtime_hit_count": pl.Int64,
    }
)

_DECIMALS: Final = 6
_MICROSECONDS: Final = 1_000_000


@dataclass(frozen=True)
class ScoreParams:
    """Scoring knobs; defaults are SPEC section 5.

    Attributes:
        weight_unreachable: Bucket weight for states SU, RU, CU.
        weight_entrypoint: Bucket weight for entry points.
        weight_runtime: Bucket weight for symbols known only from runtime hits.
        weight_direct: Bucket weight for symbols within ``direct_max_path_length`` nodes.
        weight_unknown: Bucket weight for everything else.
        direct_max_path_length: Largest path length (in nodes) that counts as direct.
        confidence_reachable: Base confidence for SR, RO, CR and X.
        runtime_bonus: Added to the confidence when the symbol has runtime hits.
        confidence_unreachable: Base confidence for SU, RU, CU.
        confidence_min: Lower clamp of the confidence.
        confidence_max: Upper clamp of the confidence.
        min_observation_window_seconds: Shortest runtime window after which a graph node
            without hits counts as RuntimeUnobserved (RU).
    """

    weight_unreachable: float = 0.0
    weight_entrypoint: float = 1.0
    weight_runtime: float = 0.45
    weight_direct: float = 0.85
    weight_unknown: float = 0.5
    direct_max_path_length: int = 2
    confidence_reachable: float = 0.75
    runtime_bonus: float = 0.15
    confidence_unreachable: float = 0.25
    confidence_min: float = 0.05
    confidence_max: float = 0.99
    min_observation_window_seconds: int = 7 * 86400

    def __post_init__(self) -> None:
        if not self.confidence_min <= self.confidence_max:
            raise ValueError("confidence_min must not exceed confidence_max")
        if self.min_observation_window_seconds < 0:
            raise ValueError("min_observation_window_seconds must be >= 0")


_CONFIDENCE_UNKNOWN: Final = 0.5


def _window_complete(runtime: pl.DataFrame, params: ScoreParams) -> bool:
    """True when max(last_observed_at) - min(first_observed_at) reaches the minimum."""
    span = runtime.select(
        (pl.col("last_observed_at").max() - pl.col("first_observed_at").min())
        .dt.total_microseconds()
        .alias("span")
    ).item()
    if span is None:
        return False
    return int(span) >= params.min_observation_window_seconds * _MICROSECONDS


def _sorted_by_symbol(frame: pl.DataFrame) -> pl.DataFrame:
    ids = frame.get_column("symbol_id")
    return frame if ids.is_sorted() else frame.sort("symbol_id")


def _combined(static: pl.DataFrame | None, runtime: pl.DataFrame) -> pl.DataFrame:
    """Union of graph nodes and runtime symbols, one row each, sorted by ``symbol_id``.

    A merge of the two id-sorted sides, then each graph node followed by its runtime row
    (same id) becomes one row: sequential passes only, where a hash join over millions of
    string ids and the sort after it slow down more than linearly with the graph's size.
    """
    hits = _sorted_by_symbol(
        runtime.select(
            pl.col("symbol_id").cast(pl.String), pl.col("runtime_hit_count").cast(pl.Int64)
        )
    )
    symbol = pl.col("symbol_id")
    if hits.select((symbol == symbol.shift(1)).any()).item():
        raise ValueError("runtime must hold one row per symbol_id (sum over code ids first)")
    graph = (
        pl.DataFrame(schema=STATIC_REACHABILITY_SCHEMA)
        if static is None
        else _sorted_by_symbol(
            static.select(STATIC_REACHABILITY_SCHEMA.names()).cast(STATIC_REACHABILITY_SCHEMA)
        )
    )
    runtime_only = hits.select(
        "symbol_id",
        *(
            pl.lit(None, dtype=dtype).alias(name)
            for name, dtype in graph.schema.items()
            if name != "symbol_id"
        ),
        "runtime_hit_count",
    )
    merged = graph.with_columns(runtime_hit_count=pl.lit(None, dtype=pl.Int64)).merge_sorted(
        runtime_only, key="symbol_id"
    )
    # Of a node and its runtime row, the node's row carries the static columns and the
    # runtime row the hit count, the other side null: coalescing with the next row fills
    # the first of the pair, and the second is dropped.
    values = [name for name in merged.columns if name != "symbol_id"]
    ids = merged.get_column("symbol_id")
    # one pass of string comparisons: row i equals row i + 1
    equal_next = ids.slice(0, max(ids.len() - 1, 0)) == ids.slice(1)
    no = pl.Series([False])
    pair_with_next = pl.concat([equal_next, no])
    second_of_pair = pl.concat([no, equal_next])
    collapsed = merged.with_columns(
        pl.when(pair_with_next)
        .then(pl.coalesce(pl.col(name), pl.col(name).shift(-1)))
        .otherwise(pl.col(name))
        .alias(name)
        for name in values
    )
    return collapsed.filter(~second_of_pair)


def window_complete(
    first_observed_at: pl.Series, last_observed_at: pl.Series, params: ScoreParams
) -> bool:
    """Whether a subject's runtime observations span the minimum window (from the subject's
    first and last observation times, e.g. of all its fact rows)."""
    runtime = pl.DataFrame({"first_observed_at": first_observed_at,
                            "last_observed_at": last_observed_at})  # fmt: skip
    return _window_complete(runtime, params)


def score_symbols(
    static: pl.DataFrame | None,
    runtime: pl.DataFrame,
    params: ScoreParams,
    *,
    window: bool | None = None,
) -> pl.DataFrame:
    """Join static and runtime evidence into a lattice state and a score per symbol.

    Args:
        static: Output of ``compute_static_reachability``; None when the subject has no
            callgraph (then every state comes from runtime evidence alone).
        runtime: One row per symbol: ``symbol_id``, ``runtime_hit_count`` (Int64),
            ``first_observed_at`` and ``last_observed_at`` (Datetime UTC, nullable).
        params: Weights, confidences and the observation window rule.
        window: whether the subject's observation window is complete, when ``runtime``
            holds only some of its symbols (default: decided from ``runtime``).

    Returns:
        Columns ``symbol_id, state, bucket, confidence, weight, score,
        runtime_hit_count`` (see ``SCORE_SCHEMA``), one row per graph node or runtime
        symbol, sorted by ``symbol_id``; floats rounded to 6 decimals.

    Raises:
        ValueError: ``runtime`` holds a ``symbol_id`` more than once.
    """
    complete = _window_complete(runtime, params) if window is None else window
    in_graph = pl.col("reachable").is_not_null()
    hit_count = pl.col("runtime_hit_count").fill_null(0)
    observed = hit_count > 0

    static_state = (
        pl.when(pl.col("reachable"))
        .then(pl.lit(State.SR.value))
        .when(in_graph)
        .then(pl.lit(State.SU.value))
        .otherwise(pl.lit(State.U.value))
    )
    runtime_state = (
        pl.when(observed)
        .then(pl.lit(State.RO.value))
        .when(in_graph & pl.lit(complete))
        .then(pl.lit(State.RU.value))
        .otherwise(pl.lit(State.U.value))
    )
    state = pl.col("state")
    unreachable = state.is_in([s.value for s in sorted(UNREACHABLE_STATES)])
    reachable = state.is_in([s.value for s in sorted(REACHABLE_STATES | {State.X})])

    bucket = (
        pl.when(unreachable)
        .then(pl.lit("unreachable"))
        .when(pl.col("is_entrypoint").fill_null(value=False))
        .then(pl.lit("entrypoint"))
        .when(pl.col("path_length") <= params.direct_max_path_length)
        .then(pl.lit("direct"))
        .when(observed)
        .then(pl.lit("runtime"))
        .otherwise(pl.lit("unknown"))
    )
    weights = {
        "unreachable": params.weight_unreachable,
        "entrypoint": params.weight_entrypoint,
        "direct": params.weight_direct,
        "runtime": params.weight_runtime,
        "unknown": params.weight_unknown,
    }
    base = (
        pl.when(reachable)
        .then(pl.lit(params.confidence_reachable))
        .when(unreachable)
        .then(pl.lit(params.confidence_unreachable))
        .otherwise(pl.lit(_CONFIDENCE_UNKNOWN))
    )
    bonus = pl.when(observed).then(pl.lit(params.runtime_bonus)).otherwise(pl.lit(0.0))
    confidence = (base + bonus).clip(params.confidence_min, params.confidence_max)

    return (
        _combined(static, runtime)
        .lazy()
        .with_columns(state=join_expr(static_state, runtime_state))
        .with_columns(bucket=bucket)
        .with_columns(
            confidence=confidence.cast(pl.Float64).round(_DECIMALS),
            weight=pl.col("bucket").replace_strict(weights, return_dtype=pl.Float64),
            runtime_hit_count=hit_count,
        )
        .with_columns(score=(pl.col("confidence") * pl.col("weight")).round(_DECIMALS))
        .with_columns(pl.col("weight").round(_DECIMALS))
        .select(SCORE_SCHEMA.names())  # _combined's rows are sorted by symbol_id already
        .collect()
        .cast(SCORE_SCHEMA)
    )
