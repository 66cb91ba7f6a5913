"""The canonical form behind every digest: vectorised rendering equals the row-by-row reference."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.canonical import canonical_rows, canonical_rows_reference, digest_rows

TEXT = st.one_of(st.none(), st.text(max_size=12))
NUMBER = st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False, width=64))
INT = st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1))
TS = st.one_of(st.none(), st.datetimes(timezones=st.just(UTC)))


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(TEXT, NUMBER, INT, TS), max_size=25))
def test_vectorised_rendering_equals_the_reference(rows: list[tuple[object, ...]]) -> None:
    frame = pl.DataFrame(
        rows,
        schema={"s": pl.String, "f": pl.Float64, "i": pl.Int64, "t": pl.Datetime("us", "UTC")},
        orient="row",
    )
    assert canonical_rows(frame) == canonical_rows_reference(frame)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["RO", "SR", None]),
            st.sampled_from([0.0, -0.0, 0.5, None]),
            st.sampled_from([1, 2, None]),
            st.sampled_from(["a", "b", "c", "d", "e", "f", "g"]),
        ),
        max_size=20,
    ),
    st.booleans(),
)
def test_shortened_sort_orders_rows_like_the_full_sort(
    rows: list[tuple[object, ...]], unique_ids: bool
) -> None:
    """Few distinct values, constant columns and a unique id column: the sort key is cut."""
    frame = pl.DataFrame(
        rows,
        schema={"b": pl.String, "c": pl.Float64, "h": pl.Int64, "s": pl.String},
        orient="row",
    )
    if unique_ids:
        frame = frame.with_columns(pl.format("{}-{}", "s", pl.int_range(pl.len())).alias("s"))
    expected = canonical_rows_reference(frame)
    assert canonical_rows(frame) == expected
    assert digest_rows(frame) == "sha256:" + hashlib.sha256(expected).hexdigest()


def test_row_order_and_column_order_do_not_change_the_digest() -> None:
    a = pl.DataFrame({"x": [2, 1], "y": ["b", "a"], "when": [datetime(2026, 1, 1, tzinfo=UTC)] * 2})
    b = a.reverse().select("when", "y", "x")
    assert digest_rows(a) == digest_rows(b)
    assert canonical_rows(a).startswith(b'{"when":"2026-01-01T00:00:00.000000Z","x":1,"y":"a"}\n')


def test_excluded_columns_are_left_out() -> None:
    a = pl.DataFrame({"x": [1], "updated_at": [datetime(2026, 1, 1, tzinfo=UTC)]})
    b = pl.DataFrame({"x": [1], "updated_at": [datetime(2027, 1, 1, tzinfo=UTC)]})
    assert digest_rows(a, exclude=("updated_at",)) == digest_rows(b, exclude=("updated_at",))
    assert digest_rows(a) != digest_rows(b)


def test_empty_table_is_the_empty_document() -> None:
    assert canonical_rows(pl.DataFrame({"x": []}, schema={"x": pl.Int64})) == b""
