"""HTTP errors of the staging endpoint: reason code → status, and the JSON error body."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from runtime_facts.errors import (
    NotFoundError,
    Reason,
    RejectedError,
    RuntimeFactsError,
    UsageError,
)

MAX_LINES_IN_RESPONSE = 1000

# The runbook's wording for line findings; other codes read as their words.
LINE_MESSAGES: dict[str, str] = {
    Reason.MISSING_SYMBOL_ID: "missing symbolId",
    Reason.INVALID_SYMBOL_ID: "invalid symbolId",
    Reason.INVALID_HIT_COUNT: "invalid hitCount",
    Reason.INVALID_JSON: "invalid JSON",
    Reason.INVALID_UTF8: "invalid UTF-8",
    Reason.LINE_TOO_LONG: "line too long",
    Reason.NOT_AN_OBJECT: "not a JSON object",
    Reason.INVALID_LOADER_BASE: "invalid loaderBase",
    Reason.INVALID_TIMESTAMP: "invalid observedAt",
    Reason.NON_MONOTONIC_TIMESTAMP: "non-monotonic observedAt",
}

STATUS_BY_REASON: dict[str, int] = {
    Reason.EMPTY_BATCH: 400,
    Reason.INVALID_CONTEXT: 400,
    Reason.CLIENT_DISCONNECTED: 400,
    Reason.UNAUTHENTICATED: 401,
    Reason.INSUFFICIENT_SCOPE: 403,
    Reason.TENANT_MISMATCH: 403,
    Reason.SEALED_MODE_EVIDENCE_INVALID: 403,
    Reason.NO_TABLES: 404,
    Reason.UNKNOWN_SUBJECT: 404,
    Reason.CAS_MISS: 404,
    Reason.BODY_TIMEOUT: 408,
    Reason.CONTEXT_CONFLICT: 409,
    Reason.BATCH_TOO_LARGE: 413,
    Reason.DECOMPRESSED_TOO_LARGE: 413,
    Reason.UNSUPPORTED_CONTENT_ENCODING: 415,
    Reason.AIRFLOW_UNAVAILABLE: 502,
    Reason.SERVER_BUSY: 503,
}


def line_message(reason: str) -> str:
    """Short human wording of a line reason code (`missing symbolId`)."""
    return LINE_MESSAGES.get(reason, reason.replace("_", " "))


class ApiError(Exception):
    """An error answered as JSON `{error, message, hint, reasonCodes, lines}`."""

    def __init__(
        self,
        status: int,
        reason: Reason | str,
        message: str,
        *,
        hint: str = "",
        lines: list[tuple[int, str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = str(reason)
        self.message = message
        self.hint = hint
        self.lines = lines or []
        self.headers = headers or {}

    @classmethod
    def of(cls, reason: Reason | str, message: str, **kwargs: Any) -> ApiError:
        """An error whose status follows from its reason code (422 by default)."""
        return cls(STATUS_BY_REASON.get(str(reason), 422), reason, message, **kwargs)

    @classmethod
    def from_runtime(cls, exc: RuntimeFactsError) -> ApiError:
        """Map a pipeline error onto HTTP: usage 400, not found 404, rejected 422."""
        status = STATUS_BY_REASON.get(exc.reason)
        if status is None:
            if isinstance(exc, UsageError):
                status = 400
            elif isinstance(exc, NotFoundError):
                status = 404
            elif isinstance(exc, RejectedError):
                status = 422
            else:
                status = 500
        lines = getattr(exc, "lines", None)
        return cls(status, exc.reason, exc.message, hint=exc.hint, lines=lines)

    def body(self) -> dict[str, Any]:
        """The JSON document (line findings capped at MAX_LINES_IN_RESPONSE)."""
        codes = sorted({self.reason} | {reason for _, reason, _ in self.lines})
        return {
            "error": self.reason,
            "message": self.message,
            "hint": self.hint or None,
            "reasonCodes": codes,
            "lines": [
                {"line": n, "reason": r, "message": line_message(r), "detail": d}
                for n, r, d in self.lines[:MAX_LINES_IN_RESPONSE]
            ],
        }

    def response(self) -> Response:
        """The HTTP response."""
        headers = dict(self.headers)
        if self.status in (408, 413):
            headers["Connection"] = "close"  # the rest of the body is never read
        return json_response(self.body(), self.status, headers)


def json_response(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response rendered by orjson (datetimes as ISO-8601)."""
    return Response(
        orjson.dumps(doc, default=str), status, headers=headers, media_type="application/json"
    )


def lines_summary(lines: list[tuple[int, str, str]], total: int) -> str:
    """`2 of 5 lines are invalid: line 3 missing symbolId; line 5 invalid hitCount`."""
    shown = "; ".join(f"line {n} {line_message(r)}" for n, r, _ in lines[:5])
    more = f"; and {len(lines) - 5} more" if len(lines) > 5 else ""
    return f"{len(lines)} of {total} lines are invalid: {shown}{more}"
