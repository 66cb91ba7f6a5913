"""Errors of the pure steps: a stable reason code, a message, and per-line findings.

`transforms/` stands alone (it imports nothing of `runtime_facts`); the product's error
hierarchy in `runtime_facts.errors` builds on these classes, so a rejection raised here is
caught, reported and mapped to an exit code like any other.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Reason codes the transforms themselves produce (lines and whole batches)."""

    # line level
    MISSING_SYMBOL_ID = "missing_symbol_id"
    INVALID_SYMBOL_ID = "invalid_symbol_id"
    INVALID_HIT_COUNT = "invalid_hit_count"
    INVALID_JSON = "invalid_json"
    INVALID_UTF8 = "invalid_utf8"
    INVALID_UNICODE_ESCAPE = "invalid_unicode_escape"
    LINE_TOO_LONG = "line_too_long"
    NOT_AN_OBJECT = "not_an_object"
    DUPLICATE_KEY = "duplicate_key"
    NESTING_TOO_DEEP = "nesting_too_deep"
    NUMBER_TOO_LONG = "number_too_long"
    INVALID_NUMBER = "invalid_number"
    CONTROL_CHARACTER = "control_character"
    INVALID_CODE_ID = "invalid_code_id"
    INVALID_FIELD_TYPE = "invalid_field_type"
    INVALID_LOADER_BASE = "invalid_loader_base"
    INVALID_PROCESS = "invalid_process"
    INVALID_METADATA = "invalid_metadata"
    INVALID_TIMESTAMP = "invalid_timestamp"
    NON_MONOTONIC_TIMESTAMP = "non_monotonic_timestamp"
    # batch level
    EMPTY_BATCH = "empty_batch"
    INVALID_GZIP = "invalid_gzip"
    TRUNCATED_GZIP = "truncated_gzip"
    TRAILING_GARBAGE = "trailing_garbage"
    DECOMPRESSED_TOO_LARGE = "decompressed_too_large"
    COMPRESSION_RATIO_EXCEEDED = "compression_ratio_exceeded"
    HIT_COUNT_OVERFLOW = "hit_count_overflow"
    # trusted documents (manifests, sidecars, token files, graphs)
    DUPLICATE_JSON_KEY = "duplicate_json_key"


class ReasonedError(Exception):
    """An error for people (message, hint) and for machines (reason code).

    `exit_code` is 1 (unexpected); the edges refine it (`runtime_facts.errors`).
    """

    exit_code: int = 1

    def __init__(self, reason: StrEnum | str, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.reason = str(reason)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        text = f"[{self.reason}] {self.message}"
        return f"{text}\n  hint: {self.hint}" if self.hint else text


class RejectedInput(ReasonedError):
    """Input data was refused (exit code 3 at the edges)."""

    exit_code = 3


class TransformError(RejectedInput):
    """A transform refused a whole batch; `lines` holds (line, reason code, detail) findings."""

    def __init__(
        self,
        reason: StrEnum | str,
        message: str,
        *,
        lines: list[tuple[int, str, str]] | None = None,
        hint: str = "",
    ) -> None:
        super().__init__(reason, message, hint=hint)
        self.lines = lines or []
