"""The string and timestamp rules of SPEC §1, on both validation paths, with their details."""

from __future__ import annotations

import json

import pytest

from transforms.text import FORBIDDEN_RANGES, forbidden_character
from transforms.validate import Limits, validate_events

_GOOD = b'{"symbolId":"sym:a","hitCount":1,"observedAt":"2026-01-01T00:00:00Z"}\n'


def _both_paths(line: dict[str, object]) -> list[tuple[int, str, str]]:
    """Rejections of `line` after a good line, asserting both paths give the same ones."""
    text = _GOOD + json.dumps(line).encode() + b"\n"
    fast = validate_events(text, Limits())
    slow = validate_events(text + b"\n\n", Limits())  # blank lines force the diagnosis
    assert fast.fast_path
    assert not slow.fast_path
    assert fast.rejections.rows() == slow.rejections.rows()
    return fast.rejections.rows()


_FIELDS: list[tuple[str, dict[str, object], str, str]] = [
    ("symbolId", {"symbolId": "sym:\x00"}, "symbolId", "U+0000"),
    ("codeId", {"codeId": "b\x01"}, "codeId", "U+0001"),
    ("loaderBase", {"loaderBase": "0x7f\x7f"}, "loaderBase", "U+007F"),
    ("process.name", {"process": {"id": 1, "name": "java\x07"}}, "process name", "U+0007"),
    ("processName", {"processName": "java\u202e"}, "process name", "U+202E"),
    ("containerId", {"containerId": "c\x00"}, "containerId", "U+0000"),
    ("evidenceUri", {"evidenceUri": "s3://x/\u200b"}, "evidenceUri", "U+200B"),
    ("socketAddress", {"socketAddress": "10.0.0.1:80\x0a"}, "socketAddress", "U+000A"),
    ("purl", {"purl": "pkg:npm/x\x85"}, "purl", "U+0085"),
    ("buildId", {"buildId": "b\ufeff"}, "buildId", "U+FEFF"),
    ("metadata value", {"metadata": {"env": "prod\u2066"}}, "metadata", "U+2066"),
    ("metadata key", {"metadata": {"env\U000e0041": "prod"}}, "metadata", "U+E0041"),
]


@pytest.mark.parametrize(
    ("extra", "named", "point"), [f[1:] for f in _FIELDS], ids=[f[0] for f in _FIELDS]
)
def test_a_refused_character_in_any_string_field_is_control_character(
    extra: dict[str, object], named: str, point: str
) -> None:
    [(number, reason, detail)] = _both_paths({"symbolId": "sym:b", "hitCount": 1, **extra})
    assert (number, reason) == (2, "control_character")
    assert detail == f"{named} holds a control or invisible character ({point})"


@pytest.mark.parametrize(
    "char",
    sorted({chr(low) for low, _ in FORBIDDEN_RANGES} | {chr(h) for _, h in FORBIDDEN_RANGES}),
)
def test_every_refused_range_is_refused_at_both_ends(char: str) -> None:
    [(_, reason, _)] = _both_paths({"symbolId": "sym:b", "hitCount": 1, "containerId": f"a{char}"})
    assert reason == "control_character"


@pytest.mark.parametrize(
    "value", ["naïve", "日本語", "emoji 😀", "tab-free a b", "\u00a0nbsp-inside", "ZWJ-free"]
)
def test_ordinary_unicode_is_accepted_in_string_fields(value: str) -> None:
    assert _both_paths({"symbolId": "sym:b", "hitCount": 1, "containerId": value}) == []


def test_a_refused_character_in_a_null_metadata_entry_is_not_looked_at() -> None:
    assert _both_paths({"symbolId": "sym:b", "hitCount": 1, "metadata": {"k\x00": None}}) == []


@pytest.mark.parametrize("symbol", ["   ", "\t", "\u3000", "\u00a0 "])
def test_a_whitespace_only_symbol_is_missing(symbol: str) -> None:
    [(_, reason, detail)] = _both_paths({"symbolId": symbol, "hitCount": 1})
    assert reason == "missing_symbol_id"
    assert detail == "symbolId is required and must hold a non-whitespace character"


@pytest.mark.parametrize("symbol", [" sym:b", "sym:b ", "\u3000sym:b"])
def test_surrounding_whitespace_in_a_symbol_is_refused_not_trimmed(symbol: str) -> None:
    [(_, reason, detail)] = _both_paths({"symbolId": symbol, "hitCount": 1})
    assert reason == "invalid_symbol_id"
    assert detail == f"symbolId has leading or trailing whitespace: {symbol}"


def test_whitespace_inside_a_symbol_is_part_of_it() -> None:
    assert _both_paths({"symbolId": "sym:java:a b", "hitCount": 1}) == []


@pytest.mark.parametrize("code_id", ["", " ", " abc", "abc "])
def test_a_blank_or_padded_code_id_is_refused(code_id: str) -> None:
    [(_, reason, _)] = _both_paths({"symbolId": "sym:b", "hitCount": 1, "codeId": code_id})
    assert reason == "invalid_code_id"


def test_a_padded_loader_base_is_not_hex() -> None:
    [(_, reason, _)] = _both_paths({"symbolId": "sym:b", "hitCount": 1, "loaderBase": " 0x7f"})
    assert reason == "invalid_loader_base"


@pytest.mark.parametrize(
    "stamp",
    [
        "0000-01-01T00:00:00Z",
        "-0001-06-01T00:00:00Z",
        "+10000-01-01T00:00:00Z",
        "0001-01-01T00:30:00+01:00",
        "9999-12-31T23:30:00-01:00",
    ],
)
def test_a_timestamp_outside_years_1_to_9999_utc_is_invalid(stamp: str) -> None:
    [(number, reason, detail)] = _both_paths(
        {"symbolId": "sym:b", "hitCount": 1, "observedAt": stamp}
    )
    assert (number, reason) == (2, "invalid_timestamp")
    assert detail == (
        f"observedAt {stamp} is outside 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999999Z"
    )


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z"])
def test_the_ends_of_the_timestamp_range_are_accepted(stamp: str) -> None:
    text = json.dumps({"symbolId": "sym:b", "hitCount": 1, "observedAt": stamp}).encode() + b"\n"
    result = validate_events(text, Limits())
    assert result.rejections.is_empty()
    assert result.events.item(0, "observed_at").isoformat().startswith(stamp[:19])


def test_an_out_of_range_timestamp_does_not_make_later_lines_out_of_order() -> None:
    lines = [
        {"symbolId": "a", "hitCount": 1, "observedAt": "+20000-01-01T00:00:00Z"},
        {"symbolId": "b", "hitCount": 1, "observedAt": "2026-01-01T00:00:00Z"},
    ]
    text = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    result = validate_events(text, Limits())
    assert result.rejections.select("line_number", "reason_code").rows() == [
        (1, "invalid_timestamp")
    ]


def test_the_python_check_names_the_first_refused_character() -> None:
    assert forbidden_character("ok-id") is None
    assert forbidden_character("a\u202eb\x00") == "U+202E"
    assert forbidden_character("tag\U000e007f") == "U+E007F"


@pytest.mark.parametrize("char", ["\u202e", "\u200b", "\x85", "\U000e0041", "\x7f"])
def test_a_raw_refused_character_is_refused_like_its_escape(char: str) -> None:
    raw = '{"symbolId":"sym:b","hitCount":1,"containerId":"c' + char + '"}\n'
    text = _GOOD + raw.encode("utf-8")
    fast, slow = validate_events(text, Limits()), validate_events(text + b"\n\n", Limits())
    assert fast.rejections.rows() == slow.rejections.rows()
    assert fast.rejections.select("line_number", "reason_code").rows() == [(2, "control_character")]


@pytest.mark.parametrize("key", ["*", "^a$", "^.*$", "a|b", "(", "\\"])
def test_metadata_keys_are_names_not_patterns(key: str) -> None:
    """A key that polars would read as a wildcard or a regex (it panicked on `*`) is a name."""
    assert _both_paths({"symbolId": "s", "hitCount": 1, "metadata": {key: "v", "a": "w"}}) == []
    found = _both_paths({"symbolId": "s", "hitCount": 1, "metadata": {key: "v\x00", "a": "w"}})
    assert [(n, r) for n, r, _ in found] == [(2, "control_character")]
