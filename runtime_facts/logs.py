"""Structured logs: category `Reachability.Runtime`, JSON or text, one line per batch outcome.

`configure_logging()` is called by entry points (CLI, DAG tasks); library code only logs.
The format comes from `RUNTIME_FACTS__LOG__FORMAT` (`text`, the default, or `json` for log
shippers) and the level from `RUNTIME_FACTS__LOG__LEVEL`. Batch fields use the names of the
SPEC's trace attributes (`callgraphId`, `subjectKey`, `casUri`, `eventCount`), passed with
`extra=`, so JSON lines and spans can be joined on them.
"""

from __future__ import annotations

import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

import orjson

from runtime_facts.config import Section, from_environment, load_section

CATEGORY = "Reachability.Runtime"
_HANDLER_NAME = "runtime-facts"
# Every attribute a bare LogRecord has: anything else on a record came in through `extra=`.
_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}

logger = logging.getLogger(CATEGORY)
logger.addHandler(logging.NullHandler())  # silent until an entry point configures logging


LOG_PREFIX = "RUNTIME_FACTS__LOG__"


class LogSettings(Section):
    """Log output, from `RUNTIME_FACTS__LOG__*` (`LogSettings.load()`)."""

    format: Literal["json", "text"] = "text"
    """`json`: one JSON object per line (for log shippers); `text`: for people."""
    level: str = "INFO"
    """Lowest level written (DEBUG, INFO, WARNING, ERROR)."""

    @classmethod
    def load(cls) -> LogSettings:
        """These settings from the environment.

        Raises:
            UsageError: `RUNTIME_FACTS__LOG__FORMAT` is neither `json` nor `text`
                (`invalid_setting`).
        """
        return load_section(cls, from_environment(os.environ, LOG_PREFIX), LOG_PREFIX)


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in sorted(vars(record).items()) if k not in _RESERVED}


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """`{"timestamp", "level", "category", "message", <extra fields sorted>, "exception"?}`."""

    def format(self, record: logging.LogRecord) -> str:
        """One JSON line."""
        doc: dict[str, Any] = {
            "timestamp": _timestamp(record),
            "level": record.levelname,
            "category": record.name,
            "message": record.getMessage(),
        }
        doc.update(_extras(record))
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str, option=orjson.OPT_UTC_Z).decode()


class TextFormatter(logging.Formatter):
    """`<time> <LEVEL> <category> <message> key=value ...`."""

    def format(self, record: logging.LogRecord) -> str:
        """One text line (plus a traceback when there is one)."""
        fields = " ".join(f"{k}={_text(v)}" for k, v in _extras(record).items())
        line = f"{_timestamp(record)} {record.levelname} {record.name} {record.getMessage()}"
        line = f"{line} {fields}" if fields else line
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _text(value: Any) -> str:
    if isinstance(value, str) and value and " " not in value:
        return value
    return orjson.dumps(value, default=str).decode()


def configure_logging(
    fmt: str | None = None, level: str | None = None, stream: TextIO | None = None
) -> logging.Logger:
    """Send `Reachability.Runtime` records to a stream (stderr) in the configured format.

    Args:
        fmt: `json` or `text`; default from `RUNTIME_FACTS__LOG__FORMAT`.
        level: a level name; default from `RUNTIME_FACTS__LOG__LEVEL`.
        stream: where lines go (default stderr).

    Returns:
        The category logger. Calling again replaces the handler, never adds a second one.
    """
    settings = LogSettings.load()
    chosen = (fmt or settings.format).lower()
    if chosen not in ("json", "text"):
        raise ValueError(f"log format must be json or text, not {chosen!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if chosen == "json" else TextFormatter())
    for old in [h for h in logger.handlers if h.get_name() == _HANDLER_NAME]:
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel((level or settings.level).upper())
    logger.propagate = False  # one line per record, even under a root handler (Airflow's)
    return logger


def batch_fields(receipt: dict[str, Any]) -> dict[str, Any]:
    """The log/trace fields of one receipt (SPEC §6 names first), None values dropped."""
    fields = {
        "callgraphId": receipt.get("callgraph_id"),
        "subjectKey": receipt.get("subject_key"),
        "casUri": receipt.get("cas_uri"),
        "eventCount": receipt.get("accepted_count"),
        "tenant": receipt.get("tenant"),
        "batchSha256": receipt.get("batch_sha256"),
        "status": receipt.get("status"),
        "source": receipt.get("source"),
        "lineCount": receipt.get("line_count"),
        "rejectedCount": receipt.get("rejected_count"),
        "keyCount": receipt.get("key_count"),
        "reasonCodes": receipt.get("reason_codes") or None,
        "durationMs": receipt.get("duration_ms"),
        "sequence": receipt.get("sequence"),
        "receiptSha256": receipt.get("receipt_sha256"),
    }
    return {k: v for k, v in fields.items() if v is not None}


def log_batch(receipt: dict[str, Any]) -> None:
    """Log one batch outcome: INFO when accepted or duplicate, WARNING when rejected."""
    fields = batch_fields(receipt)
    status = fields.get("status", "unknown")
    sha = str(fields.get("batchSha256", ""))[:16]
    level = logging.WARNING if status == "rejected" else logging.INFO
    message = f"batch {status} {sha}"
    if status == "rejected" and fields.get("reasonCodes"):
        message += f": {', '.join(fields['reasonCodes'])}"
    logger.log(level, message, extra=fields)
