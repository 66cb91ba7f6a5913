"""Dedupe by (symbolId, codeId, loaderBase): sums, counts, first/last, distinct lists."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from runtime_facts.errors import BatchRejected
from transforms.dedupe import dedupe_events, owned
from transforms.schema import EVENT_COLUMNS, UTC_US

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = datetime(2026, 1, 2, tzinfo=UTC)
EVENT_SCHEMA = {
    "symbol_id": pl.String, "code_id": pl.String, "loader_base": pl.String, "hit_count": pl.Int64,
    "observed_at": UTC_US, "process_name": pl.String, "container_id": pl.String,
    "evidence_uri": pl.String,
}  # fmt: skip


def _events(rows: list[tuple[object, ...]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=EVENT_SCHEMA, orient="row").select(EVENT_COLUMNS)


def test_same_key_is_summed_with_first_and_last_and_distinct_lists() -> None:
    events = _events(
        [
            ("a", "c1", "0x1", 2, T1, "java", "k1", None),
            ("a", "c1", "0x1", 3, T0, "node", "k1", "u1"),
        ]
    )
    out = dedupe_events(events)
    expected = pl.DataFrame(
        {
            "symbol_id": ["a"], "code_id": ["c1"], "loader_base": ["0x1"], "hit_count": [5],
            "event_count": [2], "first_observed_at": [T0], "last_observed_at": [T1],
            "process_names": [["java", "node"]], "container_ids": [["k1"]],
            "evidence_uris": [["u1"]],
        },
        schema_overrides={"first_observed_at": UTC_US, "last_observed_at": UTC_US},
    )  # fmt: skip
    assert_frame_equal(out, expected)


def test_nulls_in_the_key_are_ordinary_values() -> None:
    events = _events(
        [
            ("a", None, None, 1, None, None, None, None),
            ("a", None, None, 1, None, None, None, None),
            ("a", "c1", None, 1, None, None, None, None),
        ]
    )
    out = dedupe_events(events)
    assert out.select("code_id", "hit_count").rows() == [(None, 2), ("c1", 1)]


def test_overflow_within_a_batch_is_an_error_not_a_wrap() -> None:
    big = 2**63 - 1
    events = _events(
        [
            ("a", None, None, big, None, None, None, None),
            ("a", None, None, 1, None, None, None, None),
        ]
    )
    with pytest.raises(BatchRejected) as info:
        dedupe_events(events)
    assert info.value.reason == "hit_count_overflow"


keys = st.sampled_from(["a", "b", "c"])
maybe = st.one_of(st.none(), st.sampled_from(["x", "y"]))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(keys, maybe, maybe, st.integers(1, 10**12)), min_size=1, max_size=60))
def test_dedupe_conserves_total_hits_and_events(
    rows: list[tuple[str, str | None, str | None, int]],
) -> None:
    events = _events([(s, c, b, h, None, None, None, None) for s, c, b, h in rows])
    out = dedupe_events(events)
    assert out.get_column("hit_count").sum() == sum(r[3] for r in rows)
    assert out.get_column("event_count").sum() == len(rows)
    assert out.height == len({(s, c, b) for s, c, b, _ in rows})


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.tuples(keys, maybe, maybe, st.integers(1, 1000)), min_size=1, max_size=40),
    st.randoms(),
)
def test_dedupe_ignores_event_order(
    rows: list[tuple[str, str | None, str | None, int]], rnd: object
) -> None:
    shuffled = list(rows)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    a = dedupe_events(_events([(s, c, b, h, None, None, None, None) for s, c, b, h in rows]))
    b = dedupe_events(_events([(s, c, b, h, None, None, None, None) for s, c, b, h in shuffled]))
    assert_frame_equal(a, b)


def test_owned_rows_do_not_share_the_buffers_they_were_cut_from() -> None:
    """polars keeps zero-copy views of the buffers a frame came from (the kernel's output
    arrays): a kept slice must not see those buffers reused, nor keep them alive."""
    data = np.frombuffer(b"sym:a-long-enough-to-be-out-of-line" * 2, dtype=np.uint8).copy()
    offsets = np.array([0, 35, 70], dtype=np.int64)
    column = pa.Array.from_buffers(
        pa.large_string(), 2, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )
    source = pl.DataFrame({"symbol_id": pl.from_arrow(column)})
    view, kept = source.head(1), owned(source.head(1))
    data[:5] = np.frombuffer(b"XXXXX", dtype=np.uint8)  # the buffer is reused
    assert view["symbol_id"][0].startswith("XXXXX")  # a plain slice sees it
    assert kept["symbol_id"][0] == "sym:a-long-enough-to-be-out-of-line"
    assert kept.schema == source.schema
