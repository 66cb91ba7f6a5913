"""transforms.lthash: order-independent, updatable, and the construction it documents."""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime

import blake3
import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms import kernel, lthash
from transforms.canonical import canonical_lines

ROWS = st.lists(
    st.tuples(
        st.text(min_size=1, max_size=12),
        st.sampled_from(["RO", "SR", "X"]),
        st.floats(allow_nan=False, allow_infinity=False, width=64),
        st.integers(min_value=0, max_value=2**63 - 1),
    ),
    max_size=40,
    unique_by=lambda r: r[0],
)


def _frame(rows: list[tuple[str, str, float, int]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={
            "symbol_id": pl.String,
            "state": pl.String,
            "score": pl.Float64,
            "runtime_hit_count": pl.Int64,
        },
        orient="row",
    )


@settings(max_examples=60, deadline=None)
@given(ROWS, st.randoms(use_true_random=False))
def test_order_does_not_matter_and_updates_equal_a_fresh_computation(
    rows: list[tuple[str, str, float, int]], rng: random.Random
) -> None:
    frame = _frame(rows)
    shuffled = frame.sample(fraction=1.0, shuffle=True, seed=rng.randrange(2**32))
    assert np.array_equal(lthash.of(frame), lthash.of(shuffled))
    cut = rng.randint(0, frame.height)
    grown = lthash.update(lthash.of(frame.head(cut)), added=frame.slice(cut))
    assert np.array_equal(grown, lthash.of(frame))
    shrunk = lthash.update(lthash.of(frame), removed=frame.slice(cut))
    assert np.array_equal(shrunk, lthash.of(frame.head(cut)))


def test_the_state_is_the_documented_sum_of_blake3_expansions() -> None:
    frame = _frame([("a", "RO", 0.405, 3), ("b", "X", 0.5, 0)])
    lanes = [
        np.frombuffer(
            blake3.blake3(line, derive_key_context=lthash.CONTEXT).digest(2048), dtype="<u2"
        ).astype(np.uint64)
        for line in canonical_lines(frame)
    ]
    expected = (sum(lanes) % 65536).astype(np.uint16)  # type: ignore[union-attr]
    state = lthash.of(frame)
    assert np.array_equal(state, expected)
    assert lthash.digest(state) == "lthash16:" + hashlib.sha256(expected.tobytes()).hexdigest()
    assert (
        canonical_lines(frame)[0]
        == b'{"runtime_hit_count":3,"score":0.405,"state":"RO","symbol_id":"a"}'
    )


def test_every_change_of_a_row_changes_the_digest_and_rows_count_as_a_multiset() -> None:
    frame = _frame([("a", "RO", 0.405, 3), ("b", "X", 0.5, 0)])
    base = lthash.digest(lthash.of(frame))
    for changed in (
        frame.with_columns(score=pl.lit(0.4051)),
        frame.with_columns(state=pl.lit("SR")),
        frame.with_columns(runtime_hit_count=pl.col("runtime_hit_count") + 1),
        frame.head(1),
        pl.concat([frame, frame.head(1)]),  # the same row twice is not the same as once
    ):
        assert lthash.digest(lthash.of(changed)) != base
    assert lthash.digest(lthash.of(frame.head(0))) == lthash.digest(lthash.empty())
    assert lthash.digest(lthash.of(frame, exclude=("score",))) != base


def test_a_stored_state_round_trips_and_a_bad_one_is_refused() -> None:
    state = lthash.of(_frame([("a", "RO", 0.405, 3)]))
    assert np.array_equal(lthash.decode(lthash.encode(state)), state)
    with pytest.raises(ValueError, match="2048 bytes"):
        lthash.decode(lthash.encode(state)[:-8])
    with pytest.raises(ValueError, match=r"base64|Incorrect|Non-base64"):
        lthash.decode("not base64!")


needs_native = pytest.mark.skipif(
    not kernel.lthash_available(), reason="the LtHash library is not built (make setup)"
)

WIDE_ROWS = st.lists(
    st.tuples(
        st.text(max_size=3000),  # past BLAKE3's 1,024-byte chunk, and unicode
        st.none() | st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.none() | st.datetimes(timezones=st.just(UTC)),
        st.floats(width=64),  # NaN and the infinities too
    ),
    max_size=30,
)


@needs_native
@settings(max_examples=80, deadline=None)
@given(WIDE_ROWS, st.integers(min_value=1, max_value=7))
def test_the_native_loop_equals_the_python_one(
    rows: list[tuple[str, int | None, datetime | None, float]], block: int
) -> None:
    frame = pl.DataFrame(
        rows,
        schema={"text": pl.String, "n": pl.Int64, "at": pl.Datetime("us", "UTC"), "x": pl.Float64},
        orient="row",
    )
    # several Arrow chunks, and blocks smaller than a chunk: every boundary is crossed
    chunked = pl.concat(
        [frame.head(frame.height // 2), frame.tail(frame.height - frame.height // 2)], rechunk=False
    )
    old = lthash._NATIVE_BLOCK
    try:
        lthash._NATIVE_BLOCK = block
        native = lthash._total_native(chunked, ("x",))
    finally:
        lthash._NATIVE_BLOCK = old
    assert np.array_equal(native, lthash._total_python(frame, ("x",)))
    assert np.array_equal(lthash._total_native(frame, ()), lthash._total_python(frame, ()))


@needs_native
def test_the_native_loop_refuses_offsets_that_do_not_fit_the_data() -> None:
    data = pa.py_buffer(b"abcdef")
    context = lthash.CONTEXT.encode()
    assert not kernel.lthash16_add(context, data, np.array([0], dtype=np.int64)).any()
    for bad in ([0, 7], [-1, 2], [0, 4, 2], [3, 2]):
        with pytest.raises(ValueError, match="offsets"):
            kernel.lthash16_add(context, data, np.array(bad, dtype=np.int64))
