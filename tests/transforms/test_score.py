"""Lattice state, bucket and score per symbol (SPEC section 5)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import orjson
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from transforms.callgraph import parse_callgraph
from transforms.reachability import STATIC_REACHABILITY_SCHEMA, compute_static_reachability
from transforms.score import SCORE_SCHEMA, ScoreParams, score_symbols

T0 = datetime(2026, 11, 1, tzinfo=UTC)
WEEK = timedelta(days=7)
PARAMS = ScoreParams()
RUNTIME_SCHEMA = pl.Schema(
    {
        "symbol_id": pl.String(),
        "runtime_hit_count": pl.Int64(),
        "first_observed_at": pl.Datetime("us", "UTC"),
        "last_observed_at": pl.Datetime("us", "UTC"),
    }
)

# ep -> near -> deep, plus `island` that no entry point reaches.
STATIC = pl.DataFrame(
    [
        ("deep", True, False, 3),
        ("ep", True, True, 1),
        ("island", False, False, None),
        ("near", True, False, 2),
    ],
    schema=STATIC_REACHABILITY_SCHEMA,
    orient="row",
)


def _runtime(*rows: tuple[str, int, datetime | None, datetime | None]) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=RUNTIME_SCHEMA, orient="row")


def _scores(*rows: tuple[str, str, str, float, float, float, int]) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=SCORE_SCHEMA, orient="row")


def _row(result: pl.DataFrame, symbol: str) -> dict[str, object]:
    return result.filter(pl.col("symbol_id") == symbol).row(0, named=True)


def test_short_window_covers_sr_su_cr_ro_x_u_and_every_bucket() -> None:
    runtime = _runtime(
        ("near", 5, T0, T0 + timedelta(hours=1)),
        ("island", 2, T0, T0),
        ("lib", 7, T0, T0),
        ("stale", 0, T0, T0),
    )

    result = score_symbols(STATIC, runtime, PARAMS)

    expected = _scores(
        ("deep", "SR", "unknown", 0.75, 0.5, 0.375, 0),
        ("ep", "SR", "entrypoint", 0.75, 1.0, 0.75, 0),
        ("island", "X", "runtime", 0.9, 0.45, 0.405, 2),
        ("lib", "RO", "runtime", 0.9, 0.45, 0.405, 7),
        ("near", "CR", "direct", 0.9, 0.85, 0.765, 5),
        ("stale", "U", "unknown", 0.5, 0.5, 0.25, 0),
    )
    assert_frame_equal(result, expected)


def test_complete_window_covers_cu_x_and_unreachable_bucket() -> None:
    runtime = _runtime(("deep", 3, T0, T0 + WEEK))

    result = score_symbols(STATIC, runtime, PARAMS)

    expected = _scores(
        ("deep", "CR", "runtime", 0.9, 0.45, 0.405, 3),
        ("ep", "X", "entrypoint", 0.75, 1.0, 0.75, 0),
        ("island", "CU", "unreachable", 0.25, 0.0, 0.0, 0),
        ("near", "X", "direct", 0.75, 0.85, 0.6375, 0),
    )
    assert_frame_equal(result, expected)


def test_without_callgraph_hits_move_unknown_to_runtime_observed() -> None:
    runtime = _runtime(("b", 1, T0, T0 + 2 * WEEK), ("a", 4, None, None))

    result = score_symbols(None, runtime, PARAMS)

    expected = _scores(
        ("a", "RO", "runtime", 0.9, 0.45, 0.405, 4),
        ("b", "RO", "runtime", 0.9, 0.45, 0.405, 1),
    )
    assert_frame_equal(result, expected)


def test_no_evidence_at_all_gives_an_empty_frame() -> None:
    result = score_symbols(None, _runtime(), PARAMS)

    assert_frame_equal(result, pl.DataFrame(schema=SCORE_SCHEMA))


def test_graph_without_runtime_rows_is_static_only() -> None:
    result = score_symbols(STATIC, _runtime(), PARAMS)

    assert result["state"].to_list() == ["SR", "SR", "SU", "SR"]


def test_window_of_exactly_the_minimum_is_complete() -> None:
    runtime = _runtime(("near", 1, T0, T0 + WEEK))

    assert _row(score_symbols(STATIC, runtime, PARAMS), "island")["state"] == "CU"


def test_window_one_microsecond_short_is_incomplete() -> None:
    runtime = _runtime(("near", 1, T0, T0 + WEEK - timedelta(microseconds=1)))

    assert _row(score_symbols(STATIC, runtime, PARAMS), "island")["state"] == "SU"


def test_window_spans_all_runtime_rows() -> None:
    runtime = _runtime(("near", 1, T0, T0), ("lib", 1, T0 + WEEK, T0 + WEEK))

    assert _row(score_symbols(STATIC, runtime, PARAMS), "island")["state"] == "CU"


def test_window_ignores_null_timestamps() -> None:
    runtime = _runtime(("near", 1, T0, None), ("lib", 1, None, T0 + WEEK))

    assert _row(score_symbols(STATIC, runtime, PARAMS), "island")["state"] == "CU"


def test_window_without_timestamps_is_incomplete() -> None:
    runtime = _runtime(("near", 1, None, None))

    assert _row(score_symbols(STATIC, runtime, PARAMS), "island")["state"] == "SU"


def test_window_minimum_is_configurable() -> None:
    runtime = _runtime(("near", 1, T0, T0 + timedelta(hours=1)))
    params = replace(PARAMS, min_observation_window_seconds=3600)

    assert _row(score_symbols(STATIC, runtime, params), "island")["state"] == "CU"


def test_direct_depth_is_configurable() -> None:
    params = replace(PARAMS, direct_max_path_length=3)

    assert _row(score_symbols(STATIC, _runtime(), params), "deep")["bucket"] == "direct"


def test_confidence_is_clamped_to_max() -> None:
    params = replace(PARAMS, confidence_max=0.8)
    runtime = _runtime(("near", 1, T0, T0))

    assert _row(score_symbols(STATIC, runtime, params), "near")["confidence"] == 0.8


def test_confidence_is_clamped_to_min() -> None:
    params = replace(PARAMS, confidence_unreachable=0.0)

    assert _row(score_symbols(STATIC, _runtime(), params), "island")["confidence"] == 0.05


def test_scores_are_rounded_to_six_decimals() -> None:
    params = replace(PARAMS, weight_entrypoint=1 / 3)

    assert _row(score_symbols(STATIC, _runtime(), params), "ep")["score"] == 0.25


def test_inputs_are_not_mutated() -> None:
    runtime = _runtime(("near", 1, T0, T0))
    static_before, runtime_before = STATIC.clone(), runtime.clone()

    score_symbols(STATIC, runtime, PARAMS)

    assert_frame_equal(STATIC, static_before)
    assert_frame_equal(runtime, runtime_before)


def test_duplicate_runtime_symbol_is_refused() -> None:
    runtime = _runtime(("near", 1, T0, T0), ("near", 2, T0, T0))

    with pytest.raises(ValueError, match="one row per symbol_id"):
        score_symbols(STATIC, runtime, PARAMS)


def test_params_refuse_inverted_clamp() -> None:
    with pytest.raises(ValueError, match="confidence_min"):
        ScoreParams(confidence_min=0.9, confidence_max=0.1)


def test_params_defaults_follow_spec() -> None:
    assert (PARAMS.weight_direct, PARAMS.runtime_bonus, PARAMS.confidence_max) == (
        0.85,
        0.15,
        0.99,
    )
    assert PARAMS.min_observation_window_seconds == 604_800


def test_parsed_graph_scores_end_to_end() -> None:
    doc = {
        "schema": "runtime-facts.callgraph.v1",
        "callgraphId": "cg",
        "language": "java",
        "nodes": [{"id": "main"}, {"id": "helper"}, {"id": "dead"}],
        "edges": [{"sourceId": "main", "targetId": "helper", "kind": "call"}],
        "entrypoints": ["main"],
    }
    static = compute_static_reachability(parse_callgraph(orjson.dumps(doc)))
    runtime = _runtime(("helper", 9, T0, T0 + WEEK))

    result = score_symbols(static, runtime, PARAMS)

    expected = _scores(
        ("dead", "CU", "unreachable", 0.25, 0.0, 0.0, 0),
        ("helper", "CR", "direct", 0.9, 0.85, 0.765, 9),
        ("main", "X", "entrypoint", 0.75, 1.0, 0.75, 0),
    )
    assert_frame_equal(result, expected)


_IDS = st.sampled_from([f"s{i}" for i in range(12)])


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(_IDS, st.tuples(st.booleans(), st.booleans(), st.integers(1, 9))),
    st.dictionaries(_IDS, st.integers(0, 50)),
    st.booleans(),
)
def test_combined_rows_equal_a_full_join(
    graph: dict[str, tuple[bool, bool, int]], hits: dict[str, int], shuffled: bool
) -> None:
    """The merge of the two sorted sides gives the rows a full outer join would."""
    from transforms.score import _combined

    static = pl.DataFrame(
        [
            (k, reach, entry, length if reach else None)
            for k, (reach, entry, length) in graph.items()
        ],
        schema=STATIC_REACHABILITY_SCHEMA,
        orient="row",
    )
    runtime = pl.DataFrame(
        {"symbol_id": list(hits), "runtime_hit_count": list(hits.values())},
        schema={"symbol_id": pl.String, "runtime_hit_count": pl.Int64},
    )
    if not shuffled:
        static, runtime = static.sort("symbol_id"), runtime.sort("symbol_id")

    expected = static.join(runtime, on="symbol_id", how="full", coalesce=True).sort("symbol_id")
    assert_frame_equal(_combined(static, runtime), expected)
