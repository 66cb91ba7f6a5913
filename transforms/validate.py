"""Validate decompressed NDJSON events (SPEC §1): a columnar fast path, a per-line diagnosis.

The fast path parses the whole batch with Arrow's JSON reader against an explicit schema and
checks the field rules as polars expressions. Anything it cannot vouch for (a parse error, a
blank line, an over-long line, a suspicious token) sends the batch to the diagnostic pass,
which parses line by line with strict hooks and then applies the *same* field rules, so both
paths always agree on which lines are valid and why.
"""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.json as pa_json

from transforms import kernel
from transforms.dedupe import dedupe_events
from transforms.diagnose import Limits, diagnose_lines
from transforms.errors import Reason
from transforms.schema import (
    EVENT_COLUMNS,
    KNOWN_FIELDS,
    REJECTION_SCHEMA,
)
from transforms.text import (
    FORBIDDEN_CLASS_RUST,
    FORBIDDEN_RANGES,
    MAX_TIMESTAMP_US,
    MIN_TIMESTAMP_US,
)

_HEX_RE = r"^(0[xX])?[0-9a-fA-F]+$"
_TS_ZONED = "%Y-%m-%dT%H:%M:%S%.f%#z"
_TS_NAIVE = "%Y-%m-%dT%H:%M:%S%.f"
_SCAN_BYTES = 4 << 20  # byte scans work on slices of this size (bounded temporary masks)
_ARROW_MAX_OPENERS = 256  # Arrow's JSON parser recurses: ~20,000 nested brackets crash the process

# One Arrow JSON parse at a time per process. Arrow already spreads one parse over every core;
# under concurrent parses from several threads (the staging endpoint's worker pool while the
# test suite ran) the process died with SIGSEGV, which a lock rules out for little cost.
_ARROW_JSON_LOCK = threading.Lock()

__all__ = ["DedupedBatch", "Limits", "ValidationResult", "validate_deduped", "validate_events"]

# The known fields as the exact path's Arrow reader is told to type them.
ARROW_EVENT_SCHEMA = pa.schema(
    [
        ("symbolId", pa.string()),
        ("hitCount", pa.int64()),
        ("codeId", pa.string()),
        ("loaderBase", pa.string()),
        ("process", pa.struct([("id", pa.int64()), ("name", pa.string())])),
        ("processId", pa.int64()),
        ("processName", pa.string()),
        ("socketAddress", pa.string()),
        ("containerId", pa.string()),
        ("evidenceUri", pa.string()),
        ("purl", pa.string()),
        ("buildId", pa.string()),
        ("observedAt", pa.string()),
        ("timestamp", pa.string()),
    ]
)


@dataclass(frozen=True)
class ValidationResult:
    """Valid events (canonical columns), rejected lines, and what was counted on the way."""

    events: pl.DataFrame
    rejections: pl.DataFrame
    line_count: int
    unknown_fields: dict[str, int]
    fast_path: bool  # read whole (the kernel or Arrow), not line by line
    kernel: bool = False  # read by the native kernel


def validate_events(text: bytes, limits: Limits, *, native: bool = True) -> ValidationResult:
    """Validate every line of a decompressed batch.

    A batch in the probes' canonical form, every line valid, is read by the native kernel in
    one pass (`transforms.kernel`); anything else by the exact path below, which is the
    reference: the kernel accepts only what the exact path accepts, with the same columns.

    Args:
        text: the decompressed NDJSON bytes.
        limits: line, depth and number caps.
        native: try the native kernel first (when built); False runs the exact path only.

    Returns:
        The valid events with columns `EVENT_COLUMNS`, one rejection row per bad line
        (`line_number`, `reason_code`, `detail`), the non-blank line count and unknown-field counts.
    """
    if native and _kernel_applies(limits):
        events = kernel.validate_canonical(text, limits.max_line_bytes)
        if isinstance(events, pl.DataFrame):
            return ValidationResult(events, kernel.no_rejections(), events.height, {}, True, True)
    fast = _parse_fast(text, limits)
    if fast is not None:
        frame, unknown = fast
        fast_path = True
    else:
        frame, early, unknown = diagnose_lines(text, limits)
        fast_path = False
    checked = _check_rows(frame, refusable=not _plain_ascii(text))
    bad = checked.filter(pl.col("reason_code").is_not_null()).select(
        "line_number", "reason_code", "detail"
    )
    rejections = pl.concat([early, bad]) if not fast_path else bad
    rejections = rejections.cast(REJECTION_SCHEMA).sort("line_number")  # type: ignore[arg-type]
    events = checked.select(EVENT_COLUMNS)
    if bad.height:  # a clean batch keeps its columns as they are, without a filtered copy
        events = checked.filter(pl.col("reason_code").is_null()).select(EVENT_COLUMNS)
    line_count = frame.height + (0 if fast_path else early.height)
    return ValidationResult(events, rejections, line_count, unknown, fast_path)


@dataclass(frozen=True)
class DedupedBatch:
    """A batch validated and deduped: what the ingest path needs of it."""

    rejections: pl.DataFrame
    line_count: int
    valid_count: int
    unknown_fields: dict[str, int]
    native: bool  # validated and deduped by the kernel in one pass
    _keys: pl.DataFrame | None = None
    _events: pl.DataFrame | None = None

    def keys(self) -> pl.DataFrame:
        """One row per key of the valid events (`dedupe_events`' columns and order).

        Raises:
            TransformError: `hit_count_overflow` when a key's hits pass 2^63-1.
        """
        if self._keys is not None:
            return self._keys
        assert self._events is not None
        return dedupe_events(self._events)


def validate_deduped(
    text: bytes | memoryview, limits: Limits, *, native: bool = True
) -> DedupedBatch:
    """Validate every line of a batch as `validate_events` does, and dedupe the valid ones.

    A batch the kernel reads is deduped in the same pass (`kernel.read_grouped`): its events
    are never built as columns. Anything else is validated by `validate_events` and deduped
    by `dedupe_events` (the reference), when `keys()` is asked for: after the caller has seen
    the rejections, as the ingest path checks them first. A view (`gunzip_scratch`) is read
    in place by the kernel and copied for the exact path: nothing returned points into it.
    """
    if native and _kernel_applies(limits):
        read = kernel.read_grouped(text, limits.max_line_bytes)
        if isinstance(read, kernel.Grouped) and read.keys is not None:
            return DedupedBatch(kernel.no_rejections(), read.lines, read.lines, {}, True, read.keys)
    result = validate_events(bytes(text) if isinstance(text, memoryview) else text, limits,
                             native=native)  # fmt: skip
    events = result.events
    return DedupedBatch(
        result.rejections, result.line_count, events.height, result.unknown_fields, False,
        _events=events,
    )  # fmt: skip


def _kernel_applies(limits: Limits) -> bool:
    """The kernel's form nests objects two deep and writes numbers of at most 19 characters:
    under tighter caps the exact path alone decides."""
    return limits.max_nesting_depth >= 2 and limits.max_number_digits >= 20 and kernel.available()


def _parse_fast(text: bytes, limits: Limits) -> tuple[pl.DataFrame, dict[str, int]] | None:
    if not _valid_utf8(text):  # Arrow's reader does not check UTF-8 inside strings
        return None
    buf = np.frombuffer(text, dtype=np.uint8)
    ends = _positions(buf, lambda chunk: chunk == 10)
    n_lines = len(ends) + (0 if text.endswith(b"\n") else 1)
    starts = np.concatenate(([-1], ends))
    bounds = np.concatenate((ends, [len(text)])) if not text.endswith(b"\n") else ends
    if n_lines and int(np.max(bounds - starts[: len(bounds)])) - 1 > limits.max_line_bytes:
        return None
    if n_lines and not _one_flat_object_per_line(buf, starts[: len(bounds)] + 1, bounds, limits):
        return None
    if limits.max_number_digits < 20 and _long_number(limits).search(text):
        return None  # a cap below int64's 20 characters applies to hitCount too
    try:
        with _ARROW_JSON_LOCK:
            table = pa_json.read_json(
                io.BytesIO(text),
                read_options=pa_json.ReadOptions(
                    block_size=max(4 << 20, 2 * limits.max_line_bytes)
                ),
                parse_options=pa_json.ParseOptions(
                    explicit_schema=ARROW_EVENT_SCHEMA, unexpected_field_behavior="infer"
                ),
            )
    except (pa.ArrowInvalid, UnicodeDecodeError, ValueError):
        return None
    if table.num_rows != n_lines:
        return None  # blank lines or several objects on one line: let the diagnosis number them
    unknown: dict[str, int] = {}
    for field in table.schema:
        if field.name in KNOWN_FIELDS and field.name != "metadata":
            continue
        if _type_depth(field.type) + 1 > limits.max_nesting_depth:
            return None
        if field.name == "metadata":
            if not _is_string_map(field.type):
                return None
            continue
        # Arrow reads NaN, Infinity and 5000-digit literals into unknown numeric fields;
        # JSON allows none of them, so a batch with such fields gets the closer look.
        if _has_number(field.type) and (
            b"NaN" in text or b"Infinity" in text or _long_number(limits).search(text)
        ):
            return None
        count = table.num_rows - table.column(field.name).null_count
        if count:
            unknown[field.name] = count
    kept = [*ARROW_EVENT_SCHEMA.names, *(["metadata"] if "metadata" in table.schema.names else [])]
    frame = pl.from_arrow(table.select(kept))  # unknown fields: counted only
    assert isinstance(frame, pl.DataFrame)
    process = pl.col("process")
    metadata = _metadata_text(frame.schema.get("metadata"))
    frame = frame.select(
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("line_number"),
        pl.col("symbolId").alias("symbol_id"),
        pl.col("hitCount").alias("hit_count"),
        pl.col("codeId").alias("code_id"),
        pl.col("loaderBase").alias("loader_base"),
        pl.coalesce(process.struct.field("name"), pl.col("processName")).alias("process_name"),
        pl.col("containerId").alias("container_id"),
        pl.col("evidenceUri").alias("evidence_uri"),
        pl.coalesce(pl.col("observedAt"), pl.col("timestamp")).alias("observed_raw"),
        pl.lit(None, dtype=pl.String).alias("reason_code"),
        pl.lit(None, dtype=pl.String).alias("detail"),
        pl.col("socketAddress").alias("socket_address"),
        pl.col("purl"),
        pl.col("buildId").alias("build_id"),
        _joined([process.struct.field("name"), pl.col("processName")]).alias("process_text"),
        metadata.alias("metadata_text"),
    )
    return frame, dict(sorted(unknown.items()))


def _joined(parts: Sequence[pl.Expr]) -> pl.Expr:
    """The non-null parts concatenated; null when every part is null (as the diagnosis has it)."""
    return (
        pl.when(pl.any_horizontal(part.is_not_null() for part in parts))
        .then(pl.concat_str(parts, ignore_nulls=True))
        .otherwise(pl.lit(None, dtype=pl.String))
    )


def _metadata_text(dtype: pl.DataType | None) -> pl.Expr:
    """Keys and values of the non-null metadata entries, joined, for the character rule."""
    if not isinstance(dtype, pl.Struct) or not dtype.fields:
        return pl.lit(None, dtype=pl.String)
    # Keys are the probe's: `*` or `^a$` in struct.field would be a wildcard or a regex to
    # polars (a panic, or other keys' values), so fields are renamed to plain positions first.
    column = pl.col("metadata").struct.rename_fields([f"f{i}" for i in range(len(dtype.fields))])
    entries = [
        pl.when(column.struct.field(f"f{i}").is_not_null()).then(
            pl.lit(f.name) + column.struct.field(f"f{i}").cast(pl.String)
        )
        for i, f in enumerate(dtype.fields)
    ]
    return _joined(entries)


def _one_flat_object_per_line(
    buf: np.ndarray, starts: np.ndarray, stops: np.ndarray, limits: Limits
) -> bool:
    """True when Arrow's rows can only be the lines, one each, and Arrow cannot overflow its stack.

    Arrow reads a stream of values, not lines: `{..}{..}` on one line beside a blank line, an
    object spread over two lines, `null` or a BOM would still give one row per line. A line
    that starts with `{` and ends with `}` cannot continue onto the next, so when every line
    does, row count == line count means one object per line. Nested brackets per line are
    bounded too: the count of `{`/`[` bounds the depth whatever strings hold.
    """
    if bool(np.any(stops <= starts)):
        return False  # a blank line
    last = stops - 1 - (buf[stops - 1] == 13)  # allow CRLF
    if not (bool(np.all(buf[starts] == 0x7B)) and bool(np.all(buf[last] == 0x7D))):
        return False
    openers = _positions(buf, lambda chunk: (chunk | 0x20) == 0x7B)  # offsets of `{` and `[`
    per_line = np.searchsorted(openers, stops) - np.searchsorted(openers, starts)
    return int(per_line.max()) <= min(limits.max_nesting_depth, _ARROW_MAX_OPENERS)


def _valid_utf8(text: bytes) -> bool:
    """Strict UTF-8 check (surrogates and overlongs refused, like Python's decoder), done by
    Arrow over the bytes in place: no decoded copy of the batch."""
    offsets = pa.py_buffer(np.array([0, len(text)], dtype=np.int64).tobytes())
    array = pa.Array.from_buffers(pa.large_binary(), 1, [None, offsets, pa.py_buffer(text)])
    try:
        array.cast(pa.large_string())
    except pa.ArrowInvalid:
        return False
    return True


def _positions(buf: np.ndarray, match: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Offsets where `match` holds, scanned in slices so the boolean masks stay small."""
    parts = [
        np.flatnonzero(match(buf[start : start + _SCAN_BYTES])) + start
        for start in range(0, len(buf), _SCAN_BYTES)
    ]
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


def _long_number(limits: Limits) -> re.Pattern[bytes]:
    """A numeric token longer than the diagnosis allows (sign, point and exponent count)."""
    return re.compile(rb"[-+.eE0-9]{%d,}" % (limits.max_number_digits + 1))


def _type_depth(dtype: pa.DataType) -> int:
    if pa.types.is_struct(dtype):
        return 1 + max(
            (_type_depth(dtype.field(i).type) for i in range(dtype.num_fields)), default=0
        )
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        return 1 + _type_depth(dtype.value_type)
    return 0


def _has_number(dtype: pa.DataType) -> bool:
    if pa.types.is_struct(dtype):
        return any(_has_number(dtype.field(i).type) for i in range(dtype.num_fields))
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        return _has_number(dtype.value_type)
    return bool(pa.types.is_integer(dtype) or pa.types.is_floating(dtype))


def _is_string_map(dtype: pa.DataType) -> bool:
    if pa.types.is_null(dtype):
        return True
    if not pa.types.is_struct(dtype):
        return False
    return all(
        pa.types.is_string(dtype.field(i).type) or pa.types.is_null(dtype.field(i).type)
        for i in range(dtype.num_fields)
    )


def _plain_ascii(text: bytes) -> bool:
    """True when the bytes are printable ASCII, tab, CR and LF without a backslash: then no
    string of the batch can hold a refused character, raw or escaped, and that rule is moot."""
    return not text.translate(None, _PLAIN_BYTES)


_PLAIN_BYTES = bytes(b for b in range(0x20, 0x7F) if b != 0x5C) + b"\t\n\r"


def _check_rows(frame: pl.DataFrame, *, refusable: bool = True) -> pl.DataFrame:
    """Apply the field rules shared by both paths; the first failing rule names the reason.

    Timestamps without an offset are read as UTC; that second parse only runs when some
    timestamp did not match the zoned form. Reasons and details are built only when a rule
    fails somewhere, so a clean batch costs one pass of boolean checks.
    """
    raw = pl.col("observed_raw")
    # cache=False: timestamps are nearly all distinct, a parse cache only adds hashing
    zoned = raw.str.to_datetime(
        _TS_ZONED, strict=False, time_unit="us", time_zone="UTC", cache=False
    )
    frame = frame.with_columns(zoned.alias("observed_at"))
    if frame.select((pl.col("observed_at").is_null() & raw.is_not_null()).any()).item():
        naive = raw.str.to_datetime(
            _TS_NAIVE, strict=False, time_unit="us", cache=False
        ).dt.replace_time_zone("UTC")
        frame = frame.with_columns(pl.coalesce(pl.col("observed_at"), naive).alias("observed_at"))
    # Outside what every reader holds (years 1-9999 UTC) is as invalid as unparseable; such a
    # value is dropped before the order check so it cannot make later lines look out of order.
    micros = pl.col("observed_at").cast(pl.Int64)
    out_of_range = (micros < MIN_TIMESTAMP_US) | (micros > MAX_TIMESTAMP_US)
    frame = frame.with_columns(
        out_of_range.fill_null(False).alias("_ts_out_of_range"),
        pl.when(out_of_range).then(None).otherwise(pl.col("observed_at")).alias("observed_at"),
    )
    parsed = pl.col("observed_at")
    running_max = parsed.cum_max().forward_fill().shift(1)
    symbol = pl.col("symbol_id")
    code_id = pl.col("code_id")
    refused, refused_detail = _refused_characters() if refusable else (pl.lit(False), pl.lit(None))
    # anchored at one end each: two fast searches instead of one scan of the whole string
    padded = symbol.str.contains(r"^\s") | symbol.str.contains(r"\s$")
    rules: list[tuple[pl.Expr, Reason, pl.Expr]] = [
        (
            symbol.is_null() | (symbol == "") | (padded & symbol.str.contains(r"^\s*$")),
            Reason.MISSING_SYMBOL_ID,
            pl.lit("symbolId is required and must hold a non-whitespace character"),
        ),
        (refused, Reason.CONTROL_CHARACTER, refused_detail),
        (
            padded,
            Reason.INVALID_SYMBOL_ID,
            pl.format("symbolId has leading or trailing whitespace: {}", symbol),
        ),
        (
            pl.col("hit_count").is_null() | (pl.col("hit_count") < 1),
            Reason.INVALID_HIT_COUNT,
            pl.format("hitCount must be an integer >= 1, got {}", pl.col("hit_count")),
        ),
        (
            (code_id == "") | code_id.str.contains(r"^\s") | code_id.str.contains(r"\s$"),
            Reason.INVALID_CODE_ID,
            pl.format("codeId is blank or has leading or trailing whitespace: {}", code_id),
        ),
        (
            pl.col("loader_base").is_not_null()
            & ~pl.col("loader_base").str.contains(_HEX_RE).fill_null(False),
            Reason.INVALID_LOADER_BASE,
            pl.format("loaderBase must be hex like 0x7f3a..., got {}", pl.col("loader_base")),
        ),
        (
            pl.col("_ts_out_of_range"),
            Reason.INVALID_TIMESTAMP,
            pl.format(
                "observedAt {} is outside 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999999Z",
                raw,
            ),
        ),
        (
            raw.is_not_null() & parsed.is_null(),
            Reason.INVALID_TIMESTAMP,
            pl.format("observedAt is not an ISO-8601 timestamp: {}", raw),
        ),
        (
            parsed.is_not_null() & running_max.is_not_null() & (parsed < running_max),
            Reason.NON_MONOTONIC_TIMESTAMP,
            pl.format("observedAt {} is earlier than a previous line", raw),
        ),
    ]
    failing = pl.any_horizontal(cond.fill_null(False) for cond, _, _ in rules)
    if not frame.select(failing.any()).item():
        return frame
    reason = pl.col("reason_code")
    detail = pl.col("detail")
    for cond, code, text in reversed(rules):
        reason = (
            pl.when(pl.col("reason_code").is_null() & cond)
            .then(pl.lit(str(code)))
            .otherwise(reason)
        )
        detail = pl.when(pl.col("reason_code").is_null() & cond).then(text).otherwise(detail)
    return frame.with_columns(reason.alias("reason_code"), detail.alias("detail"))


# Every string field of an event, in the order a finding names them.
_TEXT_FIELDS = (
    ("symbol_id", "symbolId"),
    ("code_id", "codeId"),
    ("loader_base", "loaderBase"),
    ("process_text", "process name"),
    ("container_id", "containerId"),
    ("evidence_uri", "evidenceUri"),
    ("socket_address", "socketAddress"),
    ("purl", "purl"),
    ("build_id", "buildId"),
    ("metadata_text", "metadata"),
)
_CODE_POINTS = {
    chr(cp): f"U+{cp:04X}" for low, high in FORBIDDEN_RANGES for cp in range(low, high + 1)
}


def _refused_characters() -> tuple[pl.Expr, pl.Expr]:
    """Whether a line has a refused character in a string field; which field and code point."""
    hits = [
        (pl.col(column).str.contains(FORBIDDEN_CLASS_RUST).fill_null(False), column, name)
        for column, name in _TEXT_FIELDS
    ]
    detail: Any = pl
    for cond, column, name in hits:
        point = (
            pl.col(column)
            .str.extract(f"({FORBIDDEN_CLASS_RUST})")
            .replace_strict(_CODE_POINTS, default=None, return_dtype=pl.String)
        )
        detail = detail.when(cond).then(
            pl.format(f"{name} holds a control or invisible character ({{}})", point)
        )
    return pl.any_horizontal(cond for cond, _, _ in hits), detail.otherwise(None)
