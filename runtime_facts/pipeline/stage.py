"""Stage batches in CAS (the one staging path of the CLI and the endpoint), and verify CAS.

Staging refuses what ingest would certainly refuse, so a staged digest is always one that
ingest can read: the bytes are gzip (kept as sent) or UTF-8 NDJSON text (gzipped here,
deterministically), within the size caps, and their lines pass the validation ingest runs
(strict: every line; partial: at least one).
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime_facts.errors import BatchRejected, NotFoundError, Reason, RejectedError, UsageError
from runtime_facts.home import Home
from runtime_facts.stores.cas import Kind
from runtime_facts.subject import SubjectContext
from transforms.decompress import gunzip_bounded
from transforms.validate import Limits, validate_events

GZIP_MAGIC = b"\x1f\x8b"
GZIP_LEVEL = 6
INGEST_ID_HEX = 32
_SHOWN_LINES = 5
_FORMAT_HINT = "stage NDJSON text (.ndjson) or gzip-compressed NDJSON (.ndjson.gz)"


@dataclass(frozen=True)
class StagedBatch:
    """A batch now in CAS."""

    uri: str
    sha256: str
    size: int
    created: bool
    context: SubjectContext
    line_count: int
    gzipped_here: bool
    """True when plain NDJSON was gzipped at staging (the digest is of the gzip bytes)."""
    invalid_lines: list[tuple[int, str, str]] = field(default_factory=list)
    """Lines partial mode will quarantine: (line number, reason code, detail)."""

    @property
    def ingest_id(self) -> str:
        """A stable short id of the batch (its digest's first 32 hex digits)."""
        return self.sha256[:INGEST_ID_HEX]

    def to_json(self) -> dict[str, Any]:
        """Machine output of `cas put --json`."""
        return {
            "uri": self.uri,
            "sha256": self.sha256,
            "size": self.size,
            "created": self.created,
            "gzipped_here": self.gzipped_here,
            "line_count": self.line_count,
            "invalid_line_count": len(self.invalid_lines),
            "subject_key": self.context.subject_key,
        }


class LinesRejected(BatchRejected):
    """Lines ingest would refuse (`invalid_lines` strict, `no_valid_lines` partial)."""

    def __init__(
        self, reason: Reason, lines: list[tuple[int, str, str]], line_count: int, *, where: str
    ) -> None:
        shown = "; ".join(f"line {n} {r}" for n, r, _ in lines[:_SHOWN_LINES])
        more = f"; and {len(lines) - _SHOWN_LINES} more" if len(lines) > _SHOWN_LINES else ""
        super().__init__(
            reason,
            f"{where}: {len(lines)} of {line_count} lines are invalid: {shown}{more}",
            lines=lines,
            hint="fix the lines and stage the batch again; nothing was staged",
        )
        self.line_count = line_count


def gzip_deterministic(data: bytes) -> bytes:
    """gzip at level 6 with mtime 0: the same text always gives the same object."""
    return gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)


def stage_bytes(
    home: Home,
    data: bytes,
    context: SubjectContext,
    *,
    where: str = "the batch",
    allow_partial: bool | None = None,
    check: Callable[[bytes], None] | None = None,
) -> StagedBatch:
    """Stage one batch (gzip, or plain NDJSON that is gzipped here) in CAS.

    Args:
        home: target home.
        data: the batch bytes: gzip-compressed NDJSON, or UTF-8 NDJSON text.
        context: tenant, callgraph and subject the batch belongs to.
        where: how errors name the batch (a file path, "the request body").
        allow_partial: accept a batch with some invalid lines (as `ingest --allow-partial`
            would); default: settings `ingest.allow_partial`.
        check: called with the bytes to be stored before anything is written (the
            endpoint's sealed-mode proof); raise to refuse.

    Returns:
        The CAS address; `created` is False when the bytes were already staged.

    Raises:
        RejectedError: (exit 3) empty_batch, invalid_utf8 (neither gzip nor UTF-8 text),
            batch_too_large, decompressed_too_large, the gzip reasons of `gunzip_bounded`,
            invalid_lines / no_valid_lines (`LinesRejected`), context_conflict.
    """
    cfg = home.settings.ingest
    if not data:
        raise BatchRejected(Reason.EMPTY_BATCH, f"{where} is empty")
    gzipped = data.startswith(GZIP_MAGIC)
    if gzipped:
        _check_compressed_size(len(data), cfg.max_batch_bytes, where)
        stored = data
        text = gunzip_bounded(
            data, max_output=cfg.max_decompressed_bytes, max_ratio=cfg.max_compression_ratio
        )
    else:
        if len(data) > cfg.max_decompressed_bytes:
            raise BatchRejected(
                Reason.DECOMPRESSED_TOO_LARGE,
                f"{where} is {len(data)} bytes of text; the cap is {cfg.max_decompressed_bytes}",
                hint="split it into smaller chunks",
            )
        _check_text(data, where)
        text, stored = data, gzip_deterministic(data)
        _check_compressed_size(len(stored), cfg.max_batch_bytes, where)
    if not text.strip():
        raise BatchRejected(Reason.EMPTY_BATCH, f"{where} has no events")
    if check is not None:
        check(stored)
    line_count, invalid = _validate(home, text, allow_partial, where)
    put = home.cas.put("runtime", stored, context)
    return StagedBatch(
        put.uri, put.sha256, put.size, put.created, context, line_count, not gzipped, invalid
    )


def stage_file(
    home: Home, path: Path, context: SubjectContext, *, allow_partial: bool | None = None
) -> StagedBatch:
    """Stage one batch file (`.ndjson.gz`, or `.ndjson` gzipped here); see `stage_bytes`."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise NotFoundError(
            Reason.CAS_MISS, f"no such file: {path}", hint="check the path of the batch file"
        ) from exc
    except IsADirectoryError as exc:
        raise UsageError(Reason.INVALID_CONTEXT, f"{path} is a directory") from exc
    return stage_bytes(home, data, context, where=str(path), allow_partial=allow_partial)


stage_batch = stage_file  # the name the CLI has used


def _check_compressed_size(size: int, limit: int, where: str) -> None:
    if size > limit:
        raise BatchRejected(
            Reason.BATCH_TOO_LARGE,
            f"{where} is {size} bytes gzip-compressed; batches are at most {limit} bytes",
            hint="split it into smaller chunks",
        )


def _check_text(data: bytes, where: str) -> None:
    """Plain input must be UTF-8 text: anything else (zstd, zip, ...) ingest cannot read."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise BatchRejected(
            Reason.INVALID_UTF8,
            f"{where} is neither gzip nor UTF-8 text (byte {exc.start}, line {line})",
            hint=_FORMAT_HINT,
        ) from exc


def _validate(
    home: Home, text: bytes, allow_partial: bool | None, where: str
) -> tuple[int, list[tuple[int, str, str]]]:
    """The ingest's own line validation; refuses what the policy would reject."""
    cfg = home.settings.ingest
    partial = cfg.allow_partial if allow_partial is None else allow_partial
    result = validate_events(
        text, Limits(cfg.max_line_bytes, cfg.max_nesting_depth, cfg.max_number_digits)
    )
    lines = [
        (int(n), str(r), str(d or ""))
        for n, r, d in result.rejections.select("line_number", "reason_code", "detail").iter_rows()
    ]
    if lines and not partial:
        raise LinesRejected(Reason.INVALID_LINES, lines, result.line_count, where=where)
    if partial and result.events.height == 0:
        raise LinesRejected(Reason.NO_VALID_LINES, lines, result.line_count, where=where)
    return result.line_count, lines


@dataclass
class VerifyReport:
    """Outcome of rehashing CAS objects."""

    checked: int = 0
    bad: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, sha, reason)

    @property
    def ok(self) -> bool:
        """True when every object hashed to its address."""
        return not self.bad


def verify_cas(
    home: Home, shas: list[str] | None = None, on_object: Callable[[], None] | None = None
) -> VerifyReport:
    """Rehash CAS objects (all of them, or the given runtime digests) and check their sidecars."""
    report = VerifyReport()
    targets: list[tuple[Kind, str]]
    if shas is None:
        targets = [("runtime", s) for s in home.cas.list("runtime")]
        targets += [("graphs", s) for s in home.cas.list("graphs")]
    else:
        targets = [("runtime", s) for s in shas]
    for kind, sha in targets:
        report.checked += 1
        try:
            home.cas.get(kind, sha)
            home.cas.verify_context(kind, sha)
        except (RejectedError, NotFoundError, UsageError) as exc:
            report.bad.append((kind, sha, exc.reason))
        if on_object:
            on_object()
    return report
