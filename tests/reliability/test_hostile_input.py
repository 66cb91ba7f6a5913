"""Hostile batches (fixtures/hostile/): each is refused with its reason, and the run goes on.

Every case stages a hostile batch beside a good one in a home that already holds facts, runs
one `ingest`, and checks: the hostile receipt (status, reason codes, rejected lines), that
nothing of the hostile batch reached `runtime_fact_batches` / `runtime_facts` (the tables
equal what the good batch alone gives), and that the good batch landed.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import orjson
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from runtime_facts.cli.main import app
from runtime_facts.config import Settings
from runtime_facts.home import Home
from runtime_facts.pipeline.ingest import ingest
from runtime_facts.subject import SubjectContext
from tests.reliability.conftest import (
    GOOD_BATCH,
    GOOD_FACTS,
    HOSTILE,
    chain_break,
    facts_summary,
    hostile_payload,
    json_lines,
    make_hostile,
    put,
    receipts_of,
    run_python,
    snapshot,
)

Clock = Callable[[], datetime]
CTX = SubjectContext("acme", "cg-1", scan_id="s-1")
BASE_BATCH = b'{"symbolId":"sym:base:x","hitCount":7}\n'
MIB = 1024 * 1024
MAX_LINE = "RUNTIME_FACTS__INGEST__MAX_LINE_BYTES"
MAX_OUT = "RUNTIME_FACTS__INGEST__MAX_DECOMPRESSED_BYTES"
MAX_BATCH = "RUNTIME_FACTS__INGEST__MAX_BATCH_BYTES"


@dataclass(frozen=True)
class Case:
    """A corpus file and what ingesting it must say."""

    file: str
    reasons: list[str]
    lines: list[tuple[int, str]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


def _lines(reason: str, *numbers: int) -> list[tuple[int, str]]:
    return [(n, reason) for n in numbers]


def _strict(*lines: tuple[int, str]) -> list[str]:
    return sorted({r for _, r in lines} | {"invalid_lines"})


CASES = [
    # gzip level: refused before any line is read
    Case("empty.ndjson.gz", ["empty_batch"]),
    Case("empty-stream.ndjson.gz", ["empty_batch"]),
    Case("whitespace-stream.ndjson.gz", ["empty_batch"]),
    Case("not-gzip.ndjson.gz", ["invalid_gzip"]),
    Case("truncated.ndjson.gz", ["truncated_gzip"]),
    Case("truncated-header.ndjson.gz", ["truncated_gzip"]),
    Case("bad-crc.ndjson.gz", ["invalid_gzip"]),
    Case("corrupt-deflate.ndjson.gz", ["invalid_gzip"]),
    Case("trailing-garbage.ndjson.gz", ["trailing_garbage"]),
    Case("trailing-zeros.ndjson.gz", ["trailing_garbage"]),
    Case("bomb-ratio.ndjson.gz", ["compression_ratio_exceeded"]),
    Case("bomb-size.ndjson.gz", ["decompressed_too_large"], env={MAX_OUT: str(MIB)}),
    # line level: strict mode rejects the batch and lists every bad line
    *(
        Case(name, _strict(*lines), lines)
        for name, lines in [
            ("invalid-utf8.ndjson", _lines("invalid_utf8", 2, 3)),
            ("lone-surrogate.ndjson", _lines("invalid_unicode_escape", 2, 3, 4)),
            (
                "raw-nul.ndjson",
                [(2, "invalid_json"), (3, "invalid_json"), (4, "control_character")],
            ),
            ("deep-nesting.ndjson", _lines("nesting_too_deep", 2)),
            ("nan-infinity.ndjson", _lines("invalid_number", 2, 3, 4, 5)),
            ("duplicate-keys.ndjson", _lines("duplicate_key", 2, 3, 4)),
            ("number-5000-digits.ndjson", _lines("number_too_long", 2, 3)),
            ("number-long-fraction.ndjson", _lines("number_too_long", 2, 3)),
            ("hit-count-invalid.ndjson", _lines("invalid_hit_count", *range(2, 11))),
            ("non-monotonic-timestamp.ndjson", _lines("non_monotonic_timestamp", 4)),
            ("unparseable-timestamp.ndjson", _lines("invalid_timestamp", 2, 3, 4)),
            ("not-an-object.ndjson", _lines("not_an_object", 2, 3, 4, 5, 6)),
            ("null-line.ndjson", _lines("not_an_object", 2)),
            ("two-objects-one-line.ndjson", _lines("invalid_json", 2)),
            ("object-across-lines.ndjson", _lines("invalid_json", 2, 3, 4)),
            ("bom.ndjson", _lines("invalid_json", 1)),
        ]
    ),
    Case(
        "long-line.ndjson",
        _strict((2, "line_too_long")),
        [(2, "line_too_long")],
        env={MAX_LINE: "1024"},
    ),
    Case("overflow-within-batch.ndjson", ["hit_count_overflow"]),
]


def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Home:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Home(Settings.load(str(tmp_path / "home")))


def _with_base(home: Home, clock: Clock) -> dict[str, pl.DataFrame]:
    put(home, gzip_text(BASE_BATCH), CTX)
    assert ingest(home, clock=clock).accepted == 1
    return snapshot(home)


def gzip_text(text: bytes) -> bytes:
    """NDJSON text as a deterministic gzip member."""
    return gzip.compress(text, mtime=0)


def _assert_only_good_landed(
    home: Home, before: dict[str, pl.DataFrame], good: str, hostile: str
) -> None:
    after = snapshot(home)
    batches = after["runtime_fact_batches"]
    assert set(batches.get_column("batch_sha256")) == set(
        before["runtime_fact_batches"].get_column("batch_sha256")
    ) | {good}
    assert_frame_equal(
        batches.filter(pl.col("batch_sha256") != good), before["runtime_fact_batches"]
    )
    assert hostile not in set(batches.get_column("batch_sha256"))
    assert facts_summary(home) == sorted([("sym:base:x", 7, 1), *GOOD_FACTS])
    assert not any(s.startswith("sym:hostile") for s, _, _ in facts_summary(home))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.file)
def test_hostile_batch_is_rejected_and_the_run_goes_on(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    home = _home(tmp_path, monkeypatch, case.env)
    before = _with_base(home, clock)
    hostile = put(home, hostile_payload(case.file), CTX)
    good = put(home, gzip_text(GOOD_BATCH), CTX)

    summary = ingest(home, clock=clock)

    assert (summary.accepted, summary.rejected) == (1, 1)
    [receipt] = receipts_of(home, hostile)
    assert receipt["status"] == "rejected"
    assert receipt["reason_codes"] == case.reasons
    assert [(x["line"], x["reason"]) for x in receipt["rejected_lines"]] == case.lines
    assert (receipt["accepted_count"], receipt["key_count"]) == (0, 0)
    assert [r["status"] for r in receipts_of(home, good)] == ["accepted"]
    _assert_only_good_landed(home, before, good, hostile)
    quarantined = (
        snapshot(home)["rejections"]
        .filter(pl.col("batch_sha256") == hostile)
        .select("line_number", "reason_code")
        .rows()
    )
    assert quarantined == case.lines
    assert chain_break(home) is None


@pytest.mark.parametrize(
    ("file", "env", "symbol", "hits"),
    [
        ("bomb-size.ndjson.gz", {}, "sym:hostile:bomb", 8 * MIB // 64),
        ("long-line.ndjson", {}, "sym:hostile:long", 1),
        ("long-line.ndjson", {MAX_LINE: "4096"}, "sym:hostile:long", 1),
    ],
)
def test_the_same_input_passes_under_a_larger_cap(
    file: str,
    env: dict[str, str],
    symbol: str,
    hits: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    clock: Clock,
) -> None:
    """Controls: the caps, not the content, are what refuse the bomb and the long line."""
    home = _home(tmp_path, monkeypatch, env)
    put(home, hostile_payload(file), CTX)
    assert ingest(home, clock=clock).accepted == 1
    assert (symbol, hits, hits) in facts_summary(home)


def test_a_nesting_bomb_does_not_crash_the_process(tmp_path: Path) -> None:
    """30,000 nested brackets in one 60 KB line: Arrow's parser used to die with SIGSEGV.

    Run in a child process so that a regression fails this test instead of killing pytest.
    """
    home = tmp_path / "home"
    child = run_python(NESTING_CHILD, str(home), str(HOSTILE / "deep-nesting-stack.ndjson"), env={})
    assert child.returncode == 0, child.stderr[-2000:]
    [outcomes] = json_lines(child.stdout)
    by_symbol = {o["status"]: o for o in outcomes}
    assert by_symbol["rejected"]["reason_codes"] == ["invalid_lines", "nesting_too_deep"]
    assert by_symbol["accepted"]["key_count"] == 2


NESTING_CHILD = """
import gzip, sys, orjson
from runtime_facts.config import Settings
from runtime_facts.home import Home
from runtime_facts.pipeline.ingest import ingest
from runtime_facts.subject import SubjectContext
from tests.reliability.conftest import GOOD_BATCH
home = Home(Settings.load(sys.argv[1]))
ctx = SubjectContext("acme", "cg-1", scan_id="s-1")
with open(sys.argv[2], "rb") as f:
    home.cas.put("runtime", gzip.compress(f.read()), ctx)
home.cas.put("runtime", gzip.compress(GOOD_BATCH), ctx)
summary = ingest(home)
rows = [{"status": o.status, "reason_codes": o.reason_codes, "key_count": o.key_count}
        for o in summary.outcomes]
sys.stdout.write(orjson.dumps(rows).decode() + "\\n")
"""


def test_hit_counts_that_would_pass_int64_across_batches_are_refused(
    home: Home, clock: Clock
) -> None:
    first = put(home, hostile_payload("overflow-max.ndjson"), CTX)
    assert ingest(home, clock=clock).accepted == 1
    plus_one = put(home, hostile_payload("overflow-plus-one.ndjson"), CTX)
    good = put(home, gzip_text(GOOD_BATCH), CTX)

    summary = ingest(home, clock=clock)

    assert (summary.accepted, summary.rejected) == (1, 1)
    [receipt] = receipts_of(home, plus_one)
    assert (receipt["status"], receipt["reason_codes"]) == ("rejected", ["hit_count_overflow"])
    facts = dict((s, h) for s, h, _ in facts_summary(home))
    assert facts["sym:hostile:sum"] == 2**63 - 1  # never wrapped, never saturated past
    assert "sym:hostile:other" not in facts  # the whole batch is refused, not just the key
    assert set(snapshot(home)["runtime_fact_batches"].get_column("batch_sha256")) == {first, good}


def test_overflow_between_two_pending_batches_keeps_exactly_one(home: Home, clock: Clock) -> None:
    """Both batches in one run, neither folded yet: one is accepted, the other refused."""
    a = put(home, hostile_payload("overflow-max.ndjson"), CTX)
    b = put(home, hostile_payload("overflow-plus-one.ndjson"), CTX)
    summary = ingest(home, clock=clock)
    statuses = {sha: receipts_of(home, sha)[0]["status"] for sha in (a, b)}
    assert sorted(statuses.values()) == ["accepted", "rejected"]
    assert summary.rejected == 1
    refused = next(s for s, st in statuses.items() if st == "rejected")
    assert receipts_of(home, refused)[0]["reason_codes"] == ["hit_count_overflow"]
    hits = max(h for _, h, _ in facts_summary(home))
    assert hits <= 2**63 - 1


def test_a_chunk_over_10_mib_is_refused_unread(home: Home, tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "big.ndjson.gz"
    size = make_hostile().write_oversized_chunk(path, 10 * MIB + 1)
    assert size > 10 * MIB
    before = _with_base(home, clock)
    big = put(home, path.read_bytes(), CTX)
    good = put(home, gzip_text(GOOD_BATCH), CTX)

    ingest(home, clock=clock)

    [receipt] = receipts_of(home, big)
    assert (receipt["status"], receipt["reason_codes"]) == ("rejected", ["batch_too_large"])
    assert receipt["decompressed_bytes"] == 0  # refused before decompressing anything
    _assert_only_good_landed(home, before, good, big)


def test_the_cli_refuses_to_stage_a_chunk_over_10_mib(tmp_path: Path) -> None:
    path = tmp_path / "big.ndjson.gz"
    make_hostile().write_oversized_chunk(path, 10 * MIB + 1)
    result = CliRunner().invoke(
        app,
        ["--home", str(tmp_path / "h"), "--json", "cas", "put", str(path), "--tenant", "acme",
         "--callgraph-id", "cg-1", "--scan-id", "s-1"],
    )  # fmt: skip
    assert result.exit_code == 3
    assert orjson.loads(result.output)[0]["error"] == "batch_too_large"


@pytest.mark.parametrize(("slack", "status"), [(0, "accepted"), (-1, "rejected")])
def test_the_size_cap_is_inclusive_and_configurable(
    slack: int, status: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    payload = gzip_text(GOOD_BATCH)
    home = _home(tmp_path, monkeypatch, {MAX_BATCH: str(len(payload) + slack)})
    sha = put(home, payload, CTX)
    ingest(home, clock=clock)
    assert [r["status"] for r in receipts_of(home, sha)] == [status]


def test_partial_mode_quarantines_hostile_lines_and_keeps_the_rest(
    home: Home, clock: Clock
) -> None:
    """With --allow-partial the good first line of a hostile file lands, the bad ones do not."""
    sha = put(home, hostile_payload("hit-count-invalid.ndjson"), CTX)
    summary = ingest(home, allow_partial=True, clock=clock)
    assert summary.accepted == 1
    assert facts_summary(home) == [("sym:hostile:first", 1, 1)]
    rejected = home.lake.read("rejections").filter(pl.col("batch_sha256") == sha)
    assert rejected.get_column("line_number").to_list() == list(range(2, 11))


def test_every_corpus_file_is_covered() -> None:
    """A file added to fixtures/hostile/ without a case here fails this test."""
    covered = {c.file for c in CASES} | {
        "deep-nesting-stack.ndjson",
        "overflow-max.ndjson",
        "overflow-plus-one.ndjson",
    }
    on_disk = {p.name for p in HOSTILE.iterdir() if p.suffix != ".py" and p.is_file()}
    assert on_disk == covered


def test_the_corpus_regenerates_byte_for_byte(tmp_path: Path) -> None:
    make_hostile().main(["make_hostile.py", str(tmp_path)])
    for path in sorted(tmp_path.iterdir()):
        assert path.read_bytes() == (HOSTILE / path.name).read_bytes(), path.name
