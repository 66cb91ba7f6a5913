"""Line-by-line diagnosis of a batch the columnar fast path could not vouch for."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import polars as pl

from transforms.errors import Reason
from transforms.schema import INT64_MAX, KNOWN_FIELDS, RAW_SCHEMA, REJECTION_SCHEMA

_STRING_FIELDS = ("codeId", "loaderBase", "socketAddress", "containerId", "evidenceUri", "purl",
                  "buildId")  # fmt: skip


@dataclass(frozen=True)
class Limits:
    """Per-line caps applied while parsing."""

    max_line_bytes: int = 256 * 1024
    max_nesting_depth: int = 32
    max_number_digits: int = 64


class _LineError(Exception):
    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def diagnose_lines(
    text: bytes, limits: Limits
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, int]]:
    """Parse each line strictly.

    Returns:
        The parsed lines as a raw frame (`RAW_SCHEMA`, with `reason_code` set where a field has
        the wrong type), rejections for lines that could not be parsed at all, and the counts of
        unknown fields.
    """
    rows: list[dict[str, Any]] = []
    early: list[tuple[int, str, str]] = []
    unknown: dict[str, int] = {}
    for number, raw in enumerate(text.split(b"\n"), start=1):
        line = raw.rstrip(b"\r")
        if not line.strip():
            continue
        try:
            obj = _parse_line(line, limits)
        except _LineError as err:
            early.append((number, str(err.reason), err.detail))
            continue
        for key, value in obj.items():
            if key not in KNOWN_FIELDS and value is not None:
                unknown[key] = unknown.get(key, 0) + 1
        rows.append(_raw_row(number, obj))
    frame = pl.DataFrame(rows, schema=RAW_SCHEMA, orient="row")
    rejected = pl.DataFrame(early, schema=REJECTION_SCHEMA, orient="row")
    return frame, rejected, dict(sorted(unknown.items()))


def _parse_line(line: bytes, limits: Limits) -> dict[str, Any]:
    if len(line) > limits.max_line_bytes:
        raise _LineError(Reason.LINE_TOO_LONG, f"{len(line)} bytes > {limits.max_line_bytes}")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _LineError(Reason.INVALID_UTF8, f"invalid UTF-8 at byte {exc.start}") from exc

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                raise _LineError(Reason.DUPLICATE_KEY, f"key {key!r} appears twice")
            out[key] = value
        return out

    def constant(name: str) -> Any:
        raise _LineError(Reason.INVALID_NUMBER, f"{name} is not valid JSON")

    def number(kind: type[int] | type[float]) -> Any:
        def parse(token: str) -> Any:
            if len(token) > limits.max_number_digits:
                raise _LineError(Reason.NUMBER_TOO_LONG, f"a number of {len(token)} characters")
            return kind(token)

        return parse

    try:
        obj = json.loads(
            text,
            object_pairs_hook=pairs,
            parse_constant=constant,
            parse_int=number(int),
            parse_float=number(float),
        )
    except RecursionError as exc:
        raise _LineError(Reason.NESTING_TOO_DEEP, "JSON nested too deeply") from exc
    except ValueError as exc:
        raise _LineError(Reason.INVALID_JSON, f"invalid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise _LineError(
            Reason.NOT_AN_OBJECT, f"a line must be a JSON object, got {type(obj).__name__}"
        )
    _check_tree(obj, 1, limits.max_nesting_depth)
    return obj


def _check_tree(value: Any, depth: int, cap: int) -> None:
    if depth > cap:
        raise _LineError(Reason.NESTING_TOO_DEEP, f"JSON nested deeper than {cap}")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_string(key)
            _check_tree(item, depth + 1, cap)
    elif isinstance(value, list):
        for item in value:
            _check_tree(item, depth + 1, cap)
    elif isinstance(value, str):
        _check_string(value)
    elif (isinstance(value, float) and value != value) or value in (float("inf"), float("-inf")):
        raise _LineError(Reason.INVALID_NUMBER, "number out of range")


def _check_string(value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _LineError(Reason.INVALID_UNICODE_ESCAPE, "lone UTF-16 surrogate escape") from exc


def _is_int(value: Any) -> bool:
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and -INT64_MAX - 1 <= value <= INT64_MAX
    )


def _raw_row(number: int, obj: dict[str, Any]) -> dict[str, Any]:
    reason: Reason | None = None
    detail: str | None = None

    def fail(code: Reason, message: str) -> None:
        nonlocal reason, detail
        if reason is None:
            reason, detail = code, message

    symbol = obj.get("symbolId")
    if symbol is not None and not isinstance(symbol, str):
        fail(Reason.INVALID_SYMBOL_ID, f"symbolId must be a string, got {type(symbol).__name__}")
        symbol = None
    hits = obj.get("hitCount")
    if hits is not None and not _is_int(hits):
        fail(Reason.INVALID_HIT_COUNT, f"hitCount must be an integer >= 1, got {hits!r:.40}")
        hits = 0
    strings: dict[str, str | None] = {}
    for name in _STRING_FIELDS:
        value = obj.get(name)
        if value is not None and not isinstance(value, str):
            fail(Reason.INVALID_FIELD_TYPE, f"{name} must be a string")
            value = None
        strings[name] = value
    process_name = _process_name(obj, fail)
    metadata = obj.get("metadata")
    if metadata is not None and not (
        isinstance(metadata, dict)
        and all(isinstance(v, str) or v is None for v in metadata.values())
    ):
        fail(Reason.INVALID_METADATA, "metadata must be an object of string values")
    observed = obj.get("observedAt")
    if observed is None:
        observed = obj.get("timestamp")
    if observed is not None and not isinstance(observed, str):
        fail(Reason.INVALID_TIMESTAMP, "observedAt must be an ISO-8601 string")
        observed = None
    return {
        "line_number": number,
        "symbol_id": symbol,
        "hit_count": hits,
        "code_id": strings["codeId"],
        "loader_base": strings["loaderBase"],
        "process_name": process_name,
        "container_id": strings["containerId"],
        "evidence_uri": strings["evidenceUri"],
        "observed_raw": observed,
        "reason_code": None if reason is None else str(reason),
        "detail": detail,
        "socket_address": strings["socketAddress"],
        "purl": strings["purl"],
        "build_id": strings["buildId"],
        "process_text": _process_text(obj),
        "metadata_text": _metadata_text(metadata),
    }


def _process_text(obj: dict[str, Any]) -> str | None:
    """Both spellings of the process name, joined, for the character rule."""
    process = obj.get("process")
    names = [
        process.get("name") if isinstance(process, dict) else None,
        obj.get("processName"),
    ]
    texts = [name for name in names if isinstance(name, str)]
    return "".join(texts) if texts else None


def _metadata_text(metadata: Any) -> str | None:
    """Keys and values of the non-null metadata entries, joined, for the character rule."""
    if not isinstance(metadata, dict):
        return None
    parts = [key + value for key, value in metadata.items() if isinstance(value, str)]
    return "".join(parts) if parts else None


def _process_name(obj: dict[str, Any], fail: Any) -> str | None:
    process = obj.get("process")
    name: Any = None
    if process is not None:
        if not isinstance(process, dict):
            fail(Reason.INVALID_PROCESS, "process must be an object {id, name}")
            return None
        pid, name = process.get("id"), process.get("name")
        if (pid is not None and not _is_int(pid)) or (
            name is not None and not isinstance(name, str)
        ):
            fail(Reason.INVALID_PROCESS, "process.id must be an integer, process.name a string")
            return None
    flat_id, flat_name = obj.get("processId"), obj.get("processName")
    if (flat_id is not None and not _is_int(flat_id)) or (
        flat_name is not None and not isinstance(flat_name, str)
    ):
        fail(Reason.INVALID_PROCESS, "processId must be an integer, processName a string")
        return None
    return name if name is not None else flat_name
