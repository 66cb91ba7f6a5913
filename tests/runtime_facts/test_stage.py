"""The staging job: what it stages ingest can read; what ingest would refuse it refuses."""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import httpx
import orjson
import pytest
from typer.testing import CliRunner

from runtime_facts.cli.main import app
from runtime_facts.config import IngestSettings
from runtime_facts.errors import ExitCode, RejectedError
from runtime_facts.home import Home
from runtime_facts.pipeline.ingest import ingest
from runtime_facts.pipeline.stage import LinesRejected, stage_bytes, stage_file
from runtime_facts.subject import SubjectContext
from tests.runtime_facts.api_harness import auth, live_api, make_home

GOOD = b'{"symbolId":"sym:a","hitCount":2}\n{"symbolId":"sym:b","hitCount":3}\n'
HALF_BAD = b'{"symbolId":"sym:a","hitCount":2}\n{"hitCount":3}\n'
ALL_BAD = b'{"hitCount":2}\n{"symbolId":"sym:b","hitCount":0}\n'
ZSTD = b"\x28\xb5\x2f\xfd" + bytes(range(256))  # a zstd frame header, then binary noise
Clock = Callable[[], datetime]


def _limited(home: Home, **ingest_cfg: object) -> Home:
    cfg = IngestSettings.validate({**home.settings.ingest.to_dict(), **ingest_cfg})
    home.settings = home.settings.replace(ingest=cfg)
    return home


def test_plain_ndjson_is_gzipped_at_staging_and_ingest_accepts_it(
    home: Home, ctx: SubjectContext, clock: Clock
) -> None:
    staged = stage_bytes(home, GOOD, ctx)
    stored = home.cas.get("runtime", staged.sha256)
    assert staged.gzipped_here
    assert gzip.decompress(stored) == GOOD
    assert staged.line_count == 2
    summary = ingest(home, clock=clock)
    assert (summary.accepted, summary.rejected) == (1, 0)
    assert home.lake.read("runtime_facts").get_column("hit_count").sum() == 5


def test_gzipping_is_deterministic_so_a_restage_is_a_no_op(home: Home, ctx: SubjectContext) -> None:
    first = stage_bytes(home, GOOD, ctx)
    again = stage_bytes(home, GOOD, ctx)
    assert (again.sha256, again.created) == (first.sha256, False)


def test_a_gzip_batch_is_kept_byte_for_byte(home: Home, ctx: SubjectContext) -> None:
    data = gzip.compress(GOOD, compresslevel=9, mtime=123)
    staged = stage_bytes(home, data, ctx)
    assert staged.sha256 == hashlib.sha256(data).hexdigest()
    assert not staged.gzipped_here


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty_batch"),
        (b"\n  \n", "empty_batch"),
        (gzip.compress(b"\n", mtime=0), "empty_batch"),
        (ZSTD, "invalid_utf8"),
        (b'{"symbolId":"sym:\xff","hitCount":1}\n', "invalid_utf8"),
        (gzip.compress(GOOD, mtime=0)[:-9], "truncated_gzip"),
        (gzip.compress(GOOD, mtime=0) + b"junk", "trailing_garbage"),
        (HALF_BAD, "invalid_lines"),
    ],
)
def test_what_ingest_would_refuse_is_refused_and_nothing_is_staged(
    home: Home, ctx: SubjectContext, data: bytes, reason: str
) -> None:
    with pytest.raises(RejectedError) as caught:
        stage_bytes(home, data, ctx)
    assert caught.value.reason == reason
    assert caught.value.exit_code == ExitCode.REJECTED
    assert list(home.cas.list("runtime")) == []


def test_the_refusal_of_binary_input_names_the_place_and_the_fix(
    home: Home, ctx: SubjectContext
) -> None:
    with pytest.raises(RejectedError) as caught:
        stage_bytes(home, ZSTD, ctx, where="chunk.zst")
    assert "chunk.zst is neither gzip nor UTF-8 text (byte 1, line 1)" in caught.value.message
    assert ".ndjson.gz" in caught.value.hint


def test_strict_refusal_lists_every_bad_line(home: Home, ctx: SubjectContext) -> None:
    with pytest.raises(LinesRejected) as caught:
        stage_bytes(home, HALF_BAD, ctx)
    assert caught.value.lines == [(2, "missing_symbol_id", caught.value.lines[0][2])]
    assert caught.value.line_count == 2


def test_partial_mode_stages_a_batch_with_some_valid_lines(
    home: Home, ctx: SubjectContext, clock: Clock
) -> None:
    staged = stage_bytes(home, HALF_BAD, ctx, allow_partial=True)
    assert [(n, r) for n, r, _ in staged.invalid_lines] == [(2, "missing_symbol_id")]
    summary = ingest(home, allow_partial=True, clock=clock)
    assert (summary.accepted, summary.rejected_lines) == (1, 1)


def test_partial_mode_follows_the_settings_by_default(home: Home, ctx: SubjectContext) -> None:
    staged = stage_bytes(_limited(home, allow_partial=True), HALF_BAD, ctx)
    assert len(staged.invalid_lines) == 1


def test_partial_mode_still_refuses_a_batch_without_one_valid_line(
    home: Home, ctx: SubjectContext
) -> None:
    with pytest.raises(LinesRejected) as caught:
        stage_bytes(home, ALL_BAD, ctx, allow_partial=True)
    assert caught.value.reason == "no_valid_lines"
    assert list(home.cas.list("runtime")) == []


def test_size_caps_apply_to_gzip_as_sent_and_to_plain_text(home: Home, ctx: SubjectContext) -> None:
    packed = gzip.compress(GOOD, mtime=0)
    capped = _limited(home, max_batch_bytes=len(packed) - 1, max_decompressed_bytes=len(GOOD))
    with pytest.raises(RejectedError) as too_big:
        stage_bytes(capped, packed, ctx)
    assert too_big.value.reason == "batch_too_large"
    with pytest.raises(RejectedError) as plain_too_big:
        stage_bytes(capped, GOOD + b"\n", ctx)
    assert plain_too_big.value.reason == "decompressed_too_large"
    with pytest.raises(RejectedError) as gzip_of_plain:
        stage_bytes(capped, GOOD, ctx)  # its gzip passes the compressed cap
    assert gzip_of_plain.value.reason == "batch_too_large"


def test_stage_file_reads_the_file(tmp_path: Path, home: Home, ctx: SubjectContext) -> None:
    path = tmp_path / "b.ndjson"
    path.write_bytes(GOOD)
    assert stage_file(home, path, ctx).sha256 == stage_bytes(home, GOOD, ctx).sha256


def _cas_put(tmp_path: Path, path: Path) -> tuple[int, dict[str, object]]:
    result = CliRunner().invoke(
        app,
        ["--home", str(tmp_path / "home"), "--json", "cas", "put", str(path), "--tenant", "acme",
         "--callgraph-id", "cg-1", "--scan-id", "s-1"],
    )  # fmt: skip
    return result.exit_code, orjson.loads(result.output)[0]  # one entry per file


def test_cli_cas_put_of_plain_ndjson_is_ingested(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "b.ndjson"
    path.write_bytes(GOOD)
    code, doc = _cas_put(tmp_path, path)
    assert (code, doc["gzipped_here"], doc["created"]) == (0, True, True)
    home = make_home(tmp_path)
    summary = ingest(home, clock=clock)
    assert (summary.accepted, summary.rejected) == (1, 0)


def test_cli_cas_put_refuses_what_ingest_cannot_read(tmp_path: Path) -> None:
    path = tmp_path / "b.ndjson.zst"
    path.write_bytes(ZSTD)
    code, doc = _cas_put(tmp_path, path)
    assert (code, doc["error"]) == (3, "invalid_utf8")


def test_the_endpoint_and_the_cli_stage_the_same_text_to_the_same_digest(
    tmp_path: Path,
) -> None:
    path = tmp_path / "b.ndjson"
    path.write_bytes(GOOD)
    code, doc = _cas_put(tmp_path, path)
    assert code == 0
    home = make_home(tmp_path)
    with live_api(home) as live:
        resp = httpx.post(
            f"{live.url}/signals/runtime-facts/ndjson",
            params={"scanId": "s-1"},
            content=GOOD,
            headers={**auth("writer"), "X-Tenant": "acme", "X-Callgraph-Id": "cg-1"},
        )
    assert resp.status_code == 202
    assert (resp.json()["sha256"], resp.json()["created"]) == (doc["sha256"], False)
