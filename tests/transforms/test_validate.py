"""Validation rules of SPEC §1: each reason code, both parse paths, both process shapes."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from transforms.validate import Limits, validate_events

INVALID = sorted((Path(__file__).parents[2] / "fixtures" / "batches" / "invalid").glob("*.ndjson"))
SINGLE_REASON = [p for p in INVALID if not p.name.startswith("mixed")]


def _reason_of(path: Path) -> str:
    return path.name.removesuffix(".ndjson").split("-", 1)[0]


@pytest.mark.parametrize("path", SINGLE_REASON, ids=lambda p: p.name)
def test_each_invalid_fixture_is_rejected_with_its_reason(path: Path) -> None:
    text = path.read_bytes()
    result = validate_events(text, Limits())
    last_line = text.rstrip(b"\n").count(b"\n") + 1
    assert result.rejections.rows()[-1][:2] == (last_line, _reason_of(path))
    assert result.events.height == last_line - 1


def test_mixed_batch_reports_each_bad_line_with_its_number(fixtures_dir: Path) -> None:
    text = (fixtures_dir / "batches" / "invalid" / "mixed-bad-lines.ndjson").read_bytes()
    result = validate_events(text, Limits())
    expected = pl.DataFrame(
        {
            "line_number": [2, 3, 5],
            "reason_code": ["missing_symbol_id", "invalid_hit_count", "invalid_json"],
        }
    )
    assert_frame_equal(result.rejections.select("line_number", "reason_code"), expected)
    assert result.events.get_column("symbol_id").to_list() == [
        "sym:dotnet:Acme.Billing.Invoice::Render",
        "sym:dotnet:Acme.Billing.Ledger::Post",
    ]
    assert result.line_count == 5


def test_line_too_long_is_rejected() -> None:
    line = b'{"symbolId":"' + b"a" * 2000 + b'","hitCount":1}\n'
    result = validate_events(b'{"symbolId":"b","hitCount":1}\n' + line, Limits(max_line_bytes=1000))
    assert result.rejections.rows() == [(2, "line_too_long", result.rejections.item(0, "detail"))]


def test_clean_batch_takes_the_fast_path_and_counts_unknown_fields() -> None:
    text = (
        b'{"symbolId":"a","hitCount":1,"traceId":"t"}\n'
        b'{"symbolId":"b","hitCount":2,"traceId":"u","x":null}\n'
    )
    result = validate_events(text, Limits())
    assert result.fast_path
    assert result.unknown_fields == {"traceId": 2}
    assert result.rejections.is_empty()


def test_both_paths_give_the_same_events() -> None:
    good = (
        b'{"symbolId":"a","hitCount":3,"process":{"id":1,"name":"java"},"observedAt":"2026-01-01T00:00:00Z"}\n'
        b'{"symbolId":"a","hitCount":4,"processId":2,"processName":"node","timestamp":"2026-01-01T00:00:01+00:00"}\n'
    )
    fast = validate_events(good, Limits())
    slow = validate_events(good + b"\n\n", Limits())  # blank lines force the diagnostic path
    assert fast.fast_path
    assert not slow.fast_path
    assert_frame_equal(fast.events, slow.events)
    assert fast.events.get_column("process_name").to_list() == ["java", "node"]


def test_timestamp_alias_and_offsets_are_normalised_to_utc() -> None:
    text = b'{"symbolId":"a","hitCount":1,"timestamp":"2026-01-01T02:00:00+02:00"}\n'
    result = validate_events(text, Limits())
    assert str(result.events.item(0, "observed_at")) == "2026-01-01 00:00:00+00:00"


def test_lines_without_timestamps_do_not_break_monotonicity() -> None:
    text = (
        b'{"symbolId":"a","hitCount":1,"observedAt":"2026-01-01T00:00:01Z"}\n'
        b'{"symbolId":"b","hitCount":1}\n'
        b'{"symbolId":"c","hitCount":1,"observedAt":"2026-01-01T00:00:01Z"}\n'
    )
    assert validate_events(text, Limits()).rejections.is_empty()


def test_nested_duplicate_key_is_rejected_on_both_paths() -> None:
    text = b'{"symbolId":"a","hitCount":1,"metadata":{"k":"1","k":"2"}}\n'
    assert validate_events(text, Limits()).rejections.item(0, "reason_code") == "duplicate_key"


def test_infinity_in_an_unknown_field_is_rejected() -> None:
    text = b'{"symbolId":"a","hitCount":1,"x":-Infinity}\n'
    assert validate_events(text, Limits()).rejections.item(0, "reason_code") == "invalid_number"


def test_long_number_in_an_unknown_field_is_rejected() -> None:
    text = b'{"symbolId":"a","hitCount":1,"x":' + b"1" * 100 + b"}\n"
    assert validate_events(text, Limits()).rejections.item(0, "reason_code") == "number_too_long"


def test_two_objects_on_one_line_are_invalid_json() -> None:
    text = b'{"symbolId":"a","hitCount":1}{"symbolId":"b","hitCount":1}\n'
    assert validate_events(text, Limits()).rejections.item(0, "reason_code") == "invalid_json"


def test_deep_nesting_in_fast_path_is_caught() -> None:
    text = b'{"symbolId":"a","hitCount":1,"m":' + b'{"a":' * 40 + b"1" + b"}" * 40 + b"}\n"
    assert validate_events(text, Limits()).rejections.item(0, "reason_code") == "nesting_too_deep"
