"""Fuzzing: mutated gzip bytes never crash ingest; mutated lines get one verdict on both paths.

Seeded (`derandomize=True`, no example database), so a run is repeatable and CI-stable.
"""

from __future__ import annotations

import gzip
import json
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from runtime_facts.config import Settings
from runtime_facts.errors import Reason
from runtime_facts.home import Home
from runtime_facts.pipeline.ingest import ingest
from runtime_facts.pipeline.prepare import prepare_batch
from runtime_facts.subject import SubjectContext
from tests.reliability.conftest import chain_break, receipts_of
from transforms.validate import Limits, validate_events

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
CTX = SubjectContext("acme", "cg-1", scan_id="s-1")
REASONS = {str(r) for r in Reason}
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

_EVENTS = [
    {"symbolId": "sym:java:A::run", "hitCount": 3, "codeId": "b1", "loaderBase": "0x7f00"},
    {"symbolId": "sym:java:A::run", "hitCount": 4, "process": {"id": 7, "name": "java"}},
    {"symbolId": "sym:go:main", "hitCount": 1, "observedAt": "2026-11-20T10:00:00Z"},
    {"symbolId": "sym:go:main", "hitCount": 2, "timestamp": "2026-11-20T10:00:01+00:00"},
    {"symbolId": "sym:py:f", "hitCount": 5, "metadata": {"k": "v"}, "traceId": "t-1"},
]
BASE_TEXT = b"".join(json.dumps(e, separators=(",", ":")).encode() + b"\n" for e in _EVENTS)
BASE_GZIP = gzip.compress(BASE_TEXT, compresslevel=6, mtime=0)


# --- byte-level mutations of a valid gzip batch -------------------------------------------


@st.composite
def mutated_gzip(draw: st.DrawFn) -> bytes:
    """The valid batch with 1-3 random edits: bit flips, overwrites, cuts, inserts, appends."""
    data = bytearray(BASE_GZIP)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["flip", "set", "delete", "insert", "truncate", "append"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 16))]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "truncate":
            del data[pos:]
        else:
            data += draw(st.binary(min_size=1, max_size=32))
    return bytes(data)


@pytest.fixture(scope="module")
def fuzz_home() -> Iterator[Home]:
    """One home shared by every example (each mutated batch has its own digest)."""
    with tempfile.TemporaryDirectory() as root:
        home = Home(Settings.load(str(Path(root) / "home")))
        home.ensure_lake()
        yield home


@FUZZ
@given(payload=mutated_gzip())
def test_mutated_bytes_never_crash_prepare(fuzz_home: Home, payload: bytes) -> None:
    """The byte-touching half of ingest, many times: an outcome, never an exception."""
    sha = fuzz_home.cas.put("runtime", payload, CTX).sha256
    prepared = prepare_batch(fuzz_home, sha, clock=lambda: NOW)
    if prepared.error is not None:
        event(f"rejected: {prepared.error.reason}")
        assert prepared.error.reason in REASONS
        assert prepared.rows is None
    else:
        event("accepted")
        assert prepared.rows is not None
        assert prepared.rows.height > 0
        assert gzip.decompress(payload)  # an independent decoder agrees the stream is sound


@settings(FUZZ, max_examples=40)
@given(payload=mutated_gzip())
def test_mutated_bytes_always_end_in_a_receipt(fuzz_home: Home, payload: bytes) -> None:
    """The whole ingest (commit, fold, recompute): exactly one receipt, tables consistent."""
    sha = fuzz_home.cas.put("runtime", payload, CTX).sha256
    had = len(receipts_of(fuzz_home, sha))
    summary = ingest(fuzz_home, [sha], clock=lambda: NOW)
    [outcome] = summary.outcomes
    assert outcome.status in {"accepted", "rejected", "duplicate"}
    assert set(outcome.reason_codes) <= REASONS
    assert len(receipts_of(fuzz_home, sha)) == had + 1
    landed = fuzz_home.lake.read("runtime_fact_batches").filter(pl.col("batch_sha256") == sha)
    if outcome.status == "rejected":
        assert landed.is_empty()
        assert outcome.reason_codes
    else:
        assert landed.height == outcome.key_count or outcome.status == "duplicate"
        assert gzip.decompress(payload)
    assert chain_break(fuzz_home) is None


# --- line-level mutations: the fast path and the diagnosis must agree ------------------------

_TOKENS = [
    "{", "}", "[", "]", '"', ":", ",", "\\", "\\u", "\\ud800", "\\udc00", "\\u0000", "NaN",
    "Infinity", "-Infinity", "-", "0", "01", "1e999", "1E2", ".5", "2.0", "null", "true", " ",
    "\t", "\r", "\x00", "\x7f", "\u00e9", "\ud83d\ude00", "9" * 70, "1." + "0" * 70, "-" + "9" * 64,
    '"hitCount":1', '"hitCount":0', '"hitCount":-1', '"hitCount":"1"', '"hitCount":1.5',
    '"hitCount":true', '"hitCount":9223372036854775808', '"symbolId":"x"', '"symbolId":""',
    '"symbolId":7', '"x":1,"x":2', '"metadata":{"a":1}', '"metadata":{"a":{"b":"c"}}',
    '"process":{"id":"1"}', '"process":[]', '"processId":1.5', '"codeId":5',
    '"loaderBase":"zz"', '"observedAt":"2026-13-01T00:00:00Z"',
    '"observedAt":"2026-11-19T00:00:00Z"',
    '"observedAt":5', '"timestamp":"2026-11-21T00:00:00Z"', '"n":' + "[" * 40 + "]" * 40,
    '"n":' + "[" * 300 + "]" * 300, "}{", "\n", "\n\n", "\ufeff",
    "\\u202e", "\u202e", "\\u0007", "\x85", "\u200b", "\U000e0041", "\u3000",
    '"symbolId":"  "', '"symbolId":" x"', '"codeId":""', '"codeId":" c"',
    '"containerId":"c\\u0000"', '"processName":"p\\u001b"', '"purl":"p\u202e"',
    '"metadata":{"k\\u200b":"v"}', '"metadata":{"k":"v\\u0085"}', '"buildId":"b\x7f"',
    '"observedAt":"0000-01-01T00:00:00Z"', '"observedAt":"+10000-01-01T00:00:00Z"',
    '"observedAt":"-0001-01-01T00:00:00Z"', '"observedAt":"0001-01-01T00:00:00+01:00"',
]  # fmt: skip
_RAW = [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xef\xbb\xbf", b"\x00"]


@st.composite
def mutated_lines(draw: st.DrawFn) -> bytes:
    """A valid NDJSON batch with 1-4 edits: tokens inserted or substituted, lines split,
    joined, swapped or dropped, raw invalid bytes injected."""
    lines = [json.dumps(e, separators=(",", ":")) for e in draw(st.permutations(_EVENTS))]
    lines = lines[: draw(st.integers(1, len(lines)))]
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        line = lines[i]
        op = draw(st.sampled_from(["insert", "replace", "delete", "swap", "join", "drop"]))
        pos = draw(st.integers(0, len(line)))
        if op == "insert":
            line = line[:pos] + draw(st.sampled_from(_TOKENS)) + line[pos:]
        elif op == "replace":
            end = min(len(line), pos + draw(st.integers(1, 12)))
            line = line[:pos] + draw(st.sampled_from(_TOKENS)) + line[end:]
        elif op == "delete":
            line = line[:pos] + line[pos + draw(st.integers(1, 6)) :]
        elif op == "swap" and len(lines) > 1:
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
            continue
        elif op == "join" and i + 1 < len(lines):
            lines[i : i + 2] = [lines[i] + lines[i + 1]]
            continue
        elif op == "drop" and len(lines) > 1:
            del lines[i]
            continue
        lines[i] = line
    text = "\n".join(lines).encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        pos = draw(st.integers(0, len(text)))
        text = text[:pos] + draw(st.sampled_from(_RAW)) + text[pos:]
    return text + (b"\n" if draw(st.booleans()) else b"")


def _verdict(text: bytes) -> tuple[list[tuple[int, str, str]], pl.DataFrame, int, dict[str, int]]:
    result = validate_events(text, Limits())
    rejected = result.rejections.rows()
    return rejected, result.events, result.line_count, result.unknown_fields


@settings(FUZZ, max_examples=600)
@given(text=mutated_lines())
def test_fast_path_and_diagnosis_agree_on_mutated_lines(text: bytes) -> None:
    fast = validate_events(text, Limits())
    slow = validate_events(text + b"\n\n", Limits())  # a blank line forces the diagnosis
    assert not slow.fast_path
    event("fast path" if fast.fast_path else "diagnosis")
    f_rej, f_events, f_count, f_unknown = _verdict(text)
    s_rej, s_events, s_count, s_unknown = _verdict(text + b"\n\n")
    assert f_rej == s_rej
    assert_frame_equal(f_events, s_events)
    assert (f_count, f_unknown) == (s_count, s_unknown)


# Strings that mix ordinary text with whitespace and the refused controls / invisibles.
_text = st.text(
    st.sampled_from(["a", "é", " ", "\u3000", "\x00", "\t", "\x7f", "\x85", "\u200b", "\u202e",
                     "\u2066", "\ufeff", "\U000e0041", "\u00ad"]),
    max_size=4,
)  # fmt: skip


@settings(FUZZ, max_examples=300)
@given(
    events=st.lists(
        st.fixed_dictionaries(
            {
                "symbolId": st.one_of(st.text(min_size=0, max_size=8), _text),
                "hitCount": st.one_of(
                    st.integers(-(2**64), 2**64), st.floats(), st.booleans(), st.none(),
                    st.text(max_size=3),
                ),
            },
            optional={
                "codeId": st.one_of(st.text(max_size=4), st.integers()),
                "containerId": _text,
                "evidenceUri": _text,
                "socketAddress": _text,
                "purl": _text,
                "buildId": _text,
                "processName": _text,
                "loaderBase": st.sampled_from(["0x7f", "7F", "0x", "zz", ""]),
                "observedAt": st.sampled_from(
                    ["2026-11-20T10:00:00Z", "2026-11-19T10:00:00Z", "2026-11-20T10:00:00",
                     "2026-11-20 10:00:00", "nope", "", "0000-01-01T00:00:00Z",
                     "+10000-01-01T00:00:00Z", "0001-01-01T00:00:00Z",
                     "9999-12-31T23:59:59.999999Z", "0001-01-01T00:00:00+00:01"]
                ),
                "process": st.one_of(
                    st.fixed_dictionaries({}, optional={"id": st.integers(-(2**64), 2**64),
                                                        "name": st.text(max_size=3)}),
                    st.integers(),
                ),
                "metadata": st.dictionaries(_text, st.one_of(_text, st.integers(), st.none())),
                "extra": st.recursive(
                    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=3),
                    lambda inner: st.lists(inner, max_size=2)
                    | st.dictionaries(st.text(max_size=2), inner, max_size=2),
                    max_leaves=6,
                ),
            },
        ),
        min_size=1,
        max_size=6,
    )
)  # fmt: skip
def test_fast_path_and_diagnosis_agree_on_typed_values(events: list[dict[str, object]]) -> None:
    """Structurally valid JSON with every wrong type and edge value the contract names."""
    text = b"".join(
        json.dumps(e, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")
        + b"\n"
        for e in events
    )
    fast = _verdict(text)
    slow = _verdict(text + b"\n")
    assert fast[0] == slow[0]
    assert_frame_equal(fast[1], slow[1])
    assert fast[2:] == slow[2:]
