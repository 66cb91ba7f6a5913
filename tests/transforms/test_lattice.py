"""The reachability lattice join (SPEC section 5)."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st
from polars.testing import assert_series_equal

from transforms.lattice import (
    JOIN_TABLE,
    REACHABLE_STATES,
    UNREACHABLE_STATES,
    State,
    join,
    join_expr,
)

states = st.sampled_from(list(State))

# The SPEC rules restated independently of the module's table, one rule per line.
_REACHABLE = {"SR", "RO", "CR"}
_UNREACHABLE = {"SU", "RU", "CU"}
_NAMED = {
    frozenset({"SR", "RO"}): "CR",
    frozenset({"SU", "RU"}): "CU",
    frozenset({"SR", "CR"}): "CR",
    frozenset({"RO", "CR"}): "CR",
    frozenset({"SU", "CU"}): "CU",
    frozenset({"RU", "CU"}): "CU",
}


def _spec_join(a: str, b: str) -> str:
    if a == "U":
        return b
    if b == "U" or a == b:
        return a
    if "X" in (a, b):
        return "X"
    pair = frozenset({a, b})
    if pair in _NAMED:
        return _NAMED[pair]
    mixed = (a in _REACHABLE and b in _UNREACHABLE) or (a in _UNREACHABLE and b in _REACHABLE)
    assert mixed, f"SPEC leaves {a} ⊔ {b} undefined"
    return "X"


def test_state_values_are_short_codes() -> None:
    assert [s.value for s in State] == ["U", "SR", "SU", "RO", "RU", "CR", "CU", "X"]


def test_join_table_covers_all_64_pairs() -> None:
    assert len(JOIN_TABLE) == 64


def test_reachable_and_unreachable_claims_are_disjoint() -> None:
    assert REACHABLE_STATES.isdisjoint(UNREACHABLE_STATES)
    assert {State.U, State.X}.isdisjoint(REACHABLE_STATES | UNREACHABLE_STATES)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [(a.value, b.value, _spec_join(a.value, b.value)) for a in State for b in State],
)
def test_join_matches_spec_cell(a: str, b: str, expected: str) -> None:
    assert join(State(a), State(b)) is State(expected)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (State.SR, State.RO, State.CR),
        (State.SU, State.RU, State.CU),
        (State.SU, State.RO, State.X),
        (State.SR, State.RU, State.X),
        (State.CR, State.CU, State.X),
    ],
)
def test_join_named_examples_from_spec(a: State, b: State, expected: State) -> None:
    assert join(a, b) is expected


@given(states, states)
def test_join_is_commutative(a: State, b: State) -> None:
    assert join(a, b) is join(b, a)


@given(states, states, states)
def test_join_is_associative(a: State, b: State, c: State) -> None:
    assert join(join(a, b), c) is join(a, join(b, c))


@given(states)
def test_join_is_idempotent(a: State) -> None:
    assert join(a, a) is a


@given(states)
def test_unknown_is_identity(a: State) -> None:
    assert join(State.U, a) is a


@given(states)
def test_contested_absorbs(a: State) -> None:
    assert join(State.X, a) is State.X


@given(states, states)
def test_join_is_an_upper_bound(a: State, b: State) -> None:
    top = join(a, b)
    assert join(a, top) is top
    assert join(b, top) is top


@given(states, states)
def test_join_matches_spec_rules(a: State, b: State) -> None:
    assert join(a, b).value == _spec_join(a.value, b.value)


def test_join_expr_matches_join_for_every_pair() -> None:
    pairs = [(a.value, b.value) for a in State for b in State]
    frame = pl.DataFrame(pairs, schema={"s": pl.String, "r": pl.String}, orient="row")

    result = frame.select(state=join_expr(pl.col("s"), pl.col("r")))["state"]

    expected = pl.Series("state", [join(State(a), State(b)).value for a, b in pairs])
    assert_series_equal(result, expected)


def test_join_expr_reads_null_as_unknown() -> None:
    frame = pl.DataFrame(
        {"s": [None, "SR", None], "r": ["RO", None, None]},
        schema={"s": pl.String, "r": pl.String},
    )

    result = frame.select(state=join_expr(pl.col("s"), pl.col("r")))["state"]

    assert_series_equal(result, pl.Series("state", ["RO", "SR", "U"]))


def test_join_expr_rejects_unknown_codes() -> None:
    frame = pl.DataFrame({"s": ["SR"], "r": ["maybe"]})

    with pytest.raises(pl.exceptions.InvalidOperationError):
        frame.select(join_expr(pl.col("s"), pl.col("r")))
