"""The native kernel accepts only what the exact validator accepts, with the same columns.

Differential: every generated or mutated batch goes to both the kernel
(`transforms.kernel.validate_canonical`) and the exact path (`validate_events(...,
native=False)`, Arrow + polars rules, or the line-by-line diagnosis). Where the kernel
accepts, the exact path must find no invalid line and build equal event columns. The kernel's
one-pass validate and dedupe (`kernel.read_grouped`) must decline exactly where it declines and
give the rows of the reference dedupe (`dedupe_events` over the exact path's events), or leave
the batch to it. The same mutated batches then run through the kernel built with
AddressSanitizer and UBSan. Seeded, so a run is repeatable.
"""

from __future__ import annotations

import gzip
import random
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import blake3
import numpy as np
import orjson
import polars as pl
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from transforms import kernel, lthash
from transforms.dedupe import dedupe_events
from transforms.errors import TransformError
from transforms.kernel.build import build_sanitized
from transforms.validate import Limits, validate_deduped, validate_events

HOSTILE = Path(__file__).resolve().parents[2] / "fixtures" / "hostile"
LIMITS = Limits()
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _deduped(events: pl.DataFrame) -> pl.DataFrame | str:
    try:
        return dedupe_events(events)
    except TransformError as exc:
        return str(exc.reason)


def agrees(text: bytes, seed: int = 1) -> bool:
    """Whether the kernel accepted `text`; asserts the exact path agrees when it did, and that
    the one-pass dedupe agrees with the reference dedupe."""
    got = kernel.validate_canonical(text, LIMITS.max_line_bytes)
    grouped = kernel.read_grouped(text, LIMITS.max_line_bytes, seed=seed)
    in_place = kernel.read_grouped(memoryview(bytearray(text)), LIMITS.max_line_bytes, seed=seed)
    if isinstance(grouped, kernel.Grouped):  # a view (as `gunzip_scratch` gives) reads the same
        assert isinstance(in_place, kernel.Grouped), text
        assert in_place.lines == grouped.lines, text
        assert (in_place.keys is None) == (grouped.keys is None), text
        if grouped.keys is not None and in_place.keys is not None:
            assert_frame_equal(in_place.keys, grouped.keys)
    else:
        assert in_place == grouped, text
    if isinstance(got, kernel.Declined):
        assert grouped == got, text
        return False
    ref = validate_events(text, LIMITS, native=False)
    assert ref.rejections.rows() == [], f"the kernel accepted what the exact path refuses: {text!r}"
    assert ref.unknown_fields == {}, text
    assert_frame_equal(got, ref.events)
    ref_deduped = _deduped(ref.events)
    assert isinstance(grouped, kernel.Grouped), text
    assert grouped.lines == ref.line_count
    if isinstance(ref_deduped, str):
        assert grouped.keys is None, text  # an overflow: the reference names the key
    else:
        assert grouped.keys is not None, text
        assert_frame_equal(grouped.keys, ref_deduped)
    return True


def ndjson(events: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(e) + b"\n" for e in events)


# --- the probes' form: accepted, and equal ------------------------------------------------

_symbol = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters='"\\'),
    min_size=1,
    max_size=12,
).filter(lambda s: s.strip() == s)
_hex = st.text("0123456789abcdefABCDEF", min_size=1, max_size=12)
_timestamp = st.builds(
    lambda y, mo, d, h, mi, s, frac: f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}{frac}Z",
    st.integers(1, 9999), st.integers(1, 12), st.integers(1, 28), st.integers(0, 23),
    st.integers(0, 59), st.integers(0, 59),
    st.one_of(st.just(""), st.integers(0, 999999).map(lambda f: f".{f:06d}"),
              st.integers(0, 999).map(lambda f: f".{f:03d}"),
              st.integers(0, 9).map(lambda f: f".{f}")),
)  # fmt: skip
_canonical_event = st.fixed_dictionaries(
    {"symbolId": _symbol, "hitCount": st.integers(1, 10**18 - 1)},
    optional={
        "codeId": _symbol,
        "loaderBase": st.one_of(_hex, _hex.map(lambda h: "0x" + h)),
        "process": st.fixed_dictionaries(
            {}, optional={"id": st.integers(-(10**17), 10**17), "name": _symbol}
        ),
        "processId": st.integers(0, 2**31),
        "containerId": _symbol,
        "evidenceUri": _symbol,
        "socketAddress": _symbol,
        "purl": _symbol,
        "buildId": _symbol,
        "metadata": st.dictionaries(_symbol, _symbol, max_size=4),
        "observedAt": _timestamp,
    },
)


@settings(FUZZ, max_examples=300)
@given(events=st.lists(_canonical_event, min_size=1, max_size=12))
def test_batches_in_the_probes_form_are_read_by_the_kernel_and_equal(
    events: list[dict[str, Any]],
) -> None:
    # The running maximum of observedAt must not go back: sort the timestamps in line order.
    stamps = iter(sorted(e["observedAt"] for e in events if "observedAt" in e))
    for e in events:
        if "observedAt" in e:
            e["observedAt"] = next(stamps)
    accepted = agrees(ndjson(events))
    event("accepted" if accepted else "declined")
    assert accepted


def test_the_kernel_is_built_and_used_by_validate_events() -> None:
    text = ndjson([{"symbolId": "sym:a", "hitCount": 2, "observedAt": "2026-01-01T00:00:00Z"}])
    assert kernel.available(), "make setup builds transforms/kernel/_events.so"
    result = validate_events(text, LIMITS)
    assert (result.kernel, result.fast_path, result.line_count) == (True, True, 1)
    assert not validate_events(text, LIMITS, native=False).kernel
    # caps tighter than the kernel's form leave the batch to the exact path
    assert not validate_events(text, Limits(max_number_digits=19)).kernel
    assert not validate_events(text, Limits(max_nesting_depth=1)).kernel


# --- the one-pass dedupe: many lines per key, nulls in every column, overflowing sums ------

_few = st.sampled_from(["a", "b", "ab", "a b", "b0", "abcdefgh", "abcdefghi", "~", "!"])
_dup_event = st.fixed_dictionaries(
    {"symbolId": _few, "hitCount": st.one_of(st.integers(1, 9), st.just(10**18 - 1))},
    optional={
        "codeId": _few,
        "loaderBase": st.sampled_from(["0x1", "0X1", "1", "ff", "0xff"]),
        "process": st.fixed_dictionaries({}, optional={"name": _few}),
        "processName": _few,
        "containerId": _few,
        "evidenceUri": _few,
        "observedAt": _timestamp,
    },
)


@settings(FUZZ, max_examples=400)
@given(events=st.lists(_dup_event, min_size=1, max_size=40), seed=st.integers(0, 2**64 - 1))
def test_the_one_pass_dedupe_equals_the_reference(events: list[dict[str, Any]], seed: int) -> None:
    stamps = iter(sorted(e["observedAt"] for e in events if "observedAt" in e))
    for e in events:
        if "observedAt" in e:
            e["observedAt"] = next(stamps)
    text = ndjson(events)
    accepted = agrees(text, seed=seed)
    grouped = kernel.read_grouped(text, LIMITS.max_line_bytes, seed=seed)
    overflow = isinstance(grouped, kernel.Grouped) and grouped.keys is None
    event("declined" if not accepted else "overflow" if overflow else "deduped")


def test_the_one_pass_dedupe_leaves_an_overflow_to_the_reference() -> None:
    line = b'{"symbolId":"s","hitCount":999999999999999999}\n'
    grouped = kernel.read_grouped(line * 10, LIMITS.max_line_bytes)
    assert grouped == kernel.Grouped(None, 10)
    batch = validate_deduped(line * 10, LIMITS)
    assert not batch.native
    with pytest.raises(TransformError) as caught:
        batch.keys()
    assert caught.value.reason == "hit_count_overflow"
    under = validate_deduped(line * 9, LIMITS)
    assert under.native
    assert under.keys().get_column("hit_count").to_list() == [9 * (10**18 - 1)]


def test_the_keys_do_not_depend_on_the_seed() -> None:
    rng = random.Random(3)
    text = ndjson(
        [{"symbolId": f"s{rng.randrange(300)}", "hitCount": 1, "codeId": f"c{rng.randrange(3)}",
          "evidenceUri": f"u{rng.randrange(50)}"} for _ in range(5000)]
    )  # fmt: skip
    first = kernel.read_grouped(text, LIMITS.max_line_bytes, seed=0)
    assert isinstance(first, kernel.Grouped)
    assert first.keys is not None
    for seed in (1, 2**63, 2**64 - 1):
        other = kernel.read_grouped(text, LIMITS.max_line_bytes, seed=seed)
        assert isinstance(other, kernel.Grouped)
        assert other.keys is not None
        assert_frame_equal(other.keys, first.keys)
    assert_frame_equal(first.keys, dedupe_events(validate_events(text, LIMITS).events))


# --- edges of each rule: the kernel accepts only where the exact path does ------------------

_EDGE_TIMESTAMPS = [
    "2024-02-29T00:00:00Z", "2023-02-29T00:00:00Z", "2000-02-29T12:00:00Z",
    "1900-02-29T12:00:00Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z",
    "0000-12-31T23:59:59Z", "1969-12-31T23:59:59.999999Z", "1970-01-01T00:00:00.5Z",
    "2026-13-01T00:00:00Z", "2026-04-31T00:00:00Z", "2026-01-01T24:00:00Z",
    "2026-01-01T23:60:00Z", "2026-01-01T23:59:60Z", "2026-01-01T00:00:00.Z",
    "2026-01-01T00:00:00.1234567Z", "2026-01-01T00:00:00.123456789Z", "2026-01-01T00:00:00z",
    "2026-01-01t00:00:00Z", "2026-01-01T00:00:00+00:00", "2026-01-01T00:00:00",
    "2026-01-01 00:00:00Z", "+2026-01-01T00:00:00Z", "2026-1-01T00:00:00Z", "20260-01-01T00:00:00Z",
    "2026-01-01T00:00:00ZZ", "2026-01-01T00:00:00.000000Z", "2026-01-01T0:00:00Z",
]  # fmt: skip


@pytest.mark.parametrize("stamp", _EDGE_TIMESTAMPS)
def test_timestamp_edges(stamp: str) -> None:
    accepted = agrees(ndjson([{"symbolId": "s", "hitCount": 1, "observedAt": stamp}]))
    canonical = stamp.endswith("Z") and stamp[:4] != "0000" and "T" in stamp
    if stamp in {"2024-02-29T00:00:00Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z"}:
        assert accepted
    if not canonical:
        assert not accepted


_EDGE_LINES = [
    b'{"symbolId":"s","hitCount":1}',
    b'{"symbolId":" s","hitCount":1}',
    b'{"symbolId":"s ","hitCount":1}',
    b'{"symbolId":"","hitCount":1}',
    b'{"symbolId":" ","hitCount":1}',
    b'{"symbolId":"s","hitCount":0}',
    b'{"symbolId":"s","hitCount":-1}',
    b'{"symbolId":"s","hitCount":01}',
    b'{"symbolId":"s","hitCount":1.0}',
    b'{"symbolId":"s","hitCount":1e2}',
    b'{"symbolId":"s","hitCount":"1"}',
    b'{"symbolId":"s","hitCount":true}',
    b'{"symbolId":"s","hitCount":999999999999999999}',
    b'{"symbolId":"s","hitCount":9223372036854775807}',
    b'{"symbolId":"s","hitCount":1,"codeId":""}',
    b'{"symbolId":"s","hitCount":1,"codeId":" b"}',
    b'{"symbolId":"s","hitCount":1,"codeId":null}',
    b'{"symbolId":"s","hitCount":1,"loaderBase":"0x"}',
    b'{"symbolId":"s","hitCount":1,"loaderBase":"0X0"}',
    b'{"symbolId":"s","hitCount":1,"loaderBase":"0"}',
    b'{"symbolId":"s","hitCount":1,"loaderBase":"0xg"}',
    b'{"symbolId":"s","hitCount":1,"loaderBase":"x7f"}',
    b'{"symbolId":"s","hitCount":1,"process":{}}',
    b'{"symbolId":"s","hitCount":1,"process":{"name":"a"},"processName":"b"}',
    b'{"symbolId":"s","hitCount":1,"process":{"id":1,"id":2}}',
    b'{"symbolId":"s","hitCount":1,"process":{"pid":1}}',
    b'{"symbolId":"s","hitCount":1,"process":{"id":-0}}',
    b'{"symbolId":"s","hitCount":1,"process":{"id":-5,"name":"java"}}',
    b'{"symbolId":"s","hitCount":1,"processId":-5}',
    b'{"symbolId":"s","hitCount":1,"metadata":{}}',
    b'{"symbolId":"s","hitCount":1,"metadata":{"a":"b","a":"c"}}',
    b'{"symbolId":"s","hitCount":1,"metadata":{"a":1}}',
    b'{"symbolId":"s","hitCount":1,"metadata":{"a":null}}',
    b'{"symbolId":"s","hitCount":1,"symbolId":"t"}',
    b'{"symbolId":"s","hitCount":1,"traceId":"t"}',
    b'{"symbolId":"s","hitCount":1,"observedAt":"2026-01-01T00:00:00Z","timestamp":"x"}',
    b'{"symbolId":"s","hitCount":1,"timestamp":"2026-01-01T00:00:00Z"}',
    b'{"symbolId":"s\\u0041","hitCount":1}',
    b'{"symbolId":"s\x7f","hitCount":1}',
    b'{"symbolId":"s\xc3\xa9","hitCount":1}',
    b'{"symbolId": "s","hitCount":1}',
    b'{"symbolId":"s","hitCount":1}\r',
    b'{"symbolId":"s","hitCount":1},',
    b'{"symbolId":"s","hitCount":1,}',
    b'\xef\xbb\xbf{"symbolId":"s","hitCount":1}',
    b"",
    b"{}",
]


@pytest.mark.parametrize("line", _EDGE_LINES, ids=range(len(_EDGE_LINES)))
def test_rule_edges(line: bytes) -> None:
    agrees(b'{"symbolId":"ok","hitCount":1}\n' + line + b"\n")
    agrees(line)


def test_the_kernel_accepts_the_common_forms() -> None:
    for line in (_EDGE_LINES[0], _EDGE_LINES[12], _EDGE_LINES[18], _EDGE_LINES[22], _EDGE_LINES[27],
                 _EDGE_LINES[29], _EDGE_LINES[36]):  # fmt: skip
        assert agrees(line + b"\n"), line


def test_the_order_rule_sees_the_timestamp_alias() -> None:
    text = (
        b'{"symbolId":"s","hitCount":1,"observedAt":"2026-01-01T00:00:02Z"}\n'
        b'{"symbolId":"s","hitCount":1,"timestamp":"2026-01-01T00:00:01Z"}\n'
    )
    assert not agrees(text)
    assert validate_events(text, LIMITS).rejections.get_column("reason_code").to_list() == [
        "non_monotonic_timestamp"
    ]


# --- mutations of the hostile corpus and of canonical batches, and the sanitizer run ------

_INSERTS = [b"\\", b'"', b"{", b"}", b"[", b",", b":", b"0", b"-", b".", b"e", b"\n", b"\r",
            b" ", b"\x7f", b"\x80", b"\xff", b"\x00", b"null", b"Z", b"T", b"9" * 19, b'"a":1',
            b'"hitCount":1', b'"symbolId":"x"', b"\\u0000"]  # fmt: skip


def corpus() -> list[bytes]:
    texts = []
    for path in sorted(HOSTILE.iterdir()):
        if path.suffix == ".py":
            continue
        data = path.read_bytes()
        if path.name.endswith(".gz"):
            try:
                data = gzip.decompress(data)[: 1 << 16]
            except (OSError, EOFError):
                continue
        texts.append(data[: 1 << 16])
    rng = random.Random(7)
    for _ in range(60):
        events = [
            {"symbolId": f"sym:{rng.randrange(5)}", "hitCount": rng.randrange(1, 9),
             "codeId": f"{rng.randrange(1 << 20):x}", "loaderBase": "0x7f00",
             "observedAt": f"2026-01-01T00:00:{i:02d}.{rng.randrange(10**6):06d}Z",
             "process": {"id": rng.randrange(100), "name": "java"}, "metadata": {"k": "v"}}
            for i in range(rng.randrange(1, 8))
        ]  # fmt: skip
        texts.append(ndjson(events))
    for _ in range(40):  # few keys, many lines each: the dedupe's groups and lists fill up
        events = [
            {"symbolId": f"sym:{rng.randrange(4)}", "hitCount": rng.choice((1, 2, 10**18 - 1)),
             **({"codeId": f"c{rng.randrange(2)}"} if rng.random() < 0.7 else {}),
             **({"containerId": f"k{rng.randrange(3)}"} if rng.random() < 0.7 else {}),
             "evidenceUri": f"cas://e/{rng.randrange(5)}", "processName": "java"}
            for _ in range(rng.randrange(1, 30))
        ]  # fmt: skip
        texts.append(ndjson(events))
    texts.append(b'{"symbolId":"s","hitCount":999999999999999999}\n' * 10)  # sums past 2^63-1
    return texts


def mutations(texts: list[bytes], count: int, seed: int) -> Iterator[bytes]:
    """1-4 edits each (mostly one); a third of them digit-for-digit or letter-for-letter
    swaps, which keep the form and change a value (a date, a count, a hex digit): near misses."""
    rng = random.Random(seed)
    for _ in range(count):
        data = bytearray(rng.choice(texts))
        for _ in range(rng.choice((1, 1, 2, 4))):
            pos = rng.randint(0, len(data))
            op = rng.randrange(8)
            if op >= 5 and pos < len(data) and chr(data[pos]).isalnum():
                pool = b"0123456789" if chr(data[pos]).isdigit() else b"abcdefxXZT "
                data[pos] = rng.choice(pool)
            elif op == 0:
                data[pos:pos] = rng.choice(_INSERTS)
            elif op == 1 and data:
                data[min(pos, len(data) - 1)] = rng.randrange(256)
            elif op == 2:
                del data[pos : pos + rng.randint(1, 8)]
            elif op == 3 and data:
                start = rng.randint(0, len(data) - 1)
                data[pos:pos] = data[start : start + rng.randint(1, 40)]
            else:
                data = data[:pos]
        yield bytes(data)


def test_mutated_batches_never_pass_the_kernel_alone(tmp_path: Path) -> None:
    texts = corpus()
    verdicts: Counter[bool] = Counter()
    for i, text in enumerate(mutations(texts, 3000, seed=16)):
        verdicts[agrees(text)] += 1
        (tmp_path / f"m{i:05d}.ndjson").write_bytes(text)
    assert verdicts[True] > 100, verdicts  # both sides exercised
    assert verdicts[False] > 100, verdicts


@pytest.fixture(scope="module")
def sanitized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_sanitized(tmp_path_factory.mktemp("asan") / "events_fuzz")


def test_the_kernel_runs_clean_under_asan_and_ubsan(sanitized: Path, tmp_path: Path) -> None:
    texts = corpus()
    files = []
    for i, text in enumerate([*texts, *mutations(texts, 3000, seed=17)]):
        path = tmp_path / f"c{i:05d}.ndjson"
        path.write_bytes(text)
        files.append(str(path))
    # one line longer than the cap, and the cap itself at its edges
    for cap in ("0", "1", "40", str(LIMITS.max_line_bytes)):
        out = subprocess.run(
            [str(sanitized), cap, *files],
            capture_output=True,
            text=True,
            timeout=300,
            env={"ASAN_OPTIONS": "detect_leaks=1", "UBSAN_OPTIONS": "print_stacktrace=1"},
        )
        assert out.returncode == 0, out.stderr[-4000:]
        assert "runtime error" not in out.stderr, out.stderr
        assert "Sanitizer" not in out.stderr, out.stderr
        assert len(out.stdout.splitlines()) == len(files)
    rows = [line for line in out.stdout.splitlines() if " rows " in line]
    assert len(rows) > 100  # the accepting path ran too, not only the early declines
    groups = [int(line.split(" groups ")[1].split()[0]) for line in rows]
    assert sum(g > 0 for g in groups) > 100  # and so did the dedupe
    written = [int(line.split(" written ")[1].split()[0]) for line in rows if " written " in line]
    assert written == [g for g in groups if g > 0]  # into outputs of the sizes it reported
    assert -3 in groups  # an overflow among them (the reference names the key)
    # the LtHash loop ran on every file's pieces too, and agrees with the Python path
    printed = [line.rsplit(" lthash ", 1)[1] for line in out.stdout.splitlines()]
    for path, lanes in list(zip(files, printed, strict=True))[::25]:
        assert lanes == _first_lanes(Path(path).read_bytes()), path


def _first_lanes(text: bytes) -> str:
    """The driver's LtHash print, by the `blake3` package: each line with its newline is a
    row, and so is what follows the last newline."""
    parts = text.split(b"\n")
    pieces = [part + b"\n" for part in parts[:-1]] + [parts[-1]]
    total = np.zeros(4, dtype=np.uint64)
    for piece in pieces:
        expanded = blake3.blake3(piece, derive_key_context=lthash.CONTEXT).digest(8)
        total += np.frombuffer(expanded, dtype="<u2").astype(np.uint64)
    return "".join(f"{int(lane) % 65536:04x}" for lane in total)


def test_the_sanitizer_build_catches_an_overflow(sanitized: Path) -> None:
    """A control for the run above: the driver is really instrumented (its output buffers are
    exact-size heap blocks), shown by a one-byte overflow the driver provokes on request."""
    out = subprocess.run(
        [str(sanitized), "--overflow-self-test", "4"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "AddressSanitizer: heap-buffer-overflow" in out.stderr
