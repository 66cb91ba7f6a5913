"""Structured logs (`Reachability.Runtime`) and optional OpenTelemetry batch spans."""

from __future__ import annotations

import io
import json
import logging
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from runtime_facts import logs, tracing
from runtime_facts.logs import CATEGORY, configure_logging, log_batch
from runtime_facts.tracing import NOOP_SPAN, annotate_span, batch_span, reset_tracing

SHA = "ab" * 32
RECEIPT: dict[str, Any] = {
    "batch_sha256": SHA,
    "cas_uri": f"cas://reachability/runtime/{SHA}",
    "source": "cas",
    "tenant": "acme",
    "subject_key": "scan:s-1",
    "callgraph_id": "cg-1",
    "status": "accepted",
    "line_count": 12,
    "accepted_count": 12,
    "rejected_count": 0,
    "key_count": 4,
    "reason_codes": [],
    "duration_ms": 31.5,
    "sequence": 7,
    "receipt_sha256": "cd" * 32,
}


@pytest.fixture(autouse=True)
def _restore_logger() -> Iterator[None]:
    logger = logging.getLogger(CATEGORY)
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    reset_tracing()
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)
    logger.propagate = propagate
    reset_tracing()


def _json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_batch_line_has_the_trace_fields() -> None:
    stream = io.StringIO()
    configure_logging("json", stream=stream)
    log_batch(RECEIPT)
    (line,) = _json_lines(stream)
    assert line["category"] == "Reachability.Runtime"
    assert line["level"] == "INFO"
    assert line["message"] == f"batch accepted {SHA[:16]}"
    assert line["callgraphId"] == "cg-1"
    assert line["subjectKey"] == "scan:s-1"
    assert line["casUri"] == f"cas://reachability/runtime/{SHA}"
    assert line["eventCount"] == 12
    assert line["tenant"] == "acme"
    assert line["timestamp"].endswith("Z")
    assert "reasonCodes" not in line  # empty values are left out


def test_rejected_batch_is_a_warning_with_reasons() -> None:
    stream = io.StringIO()
    configure_logging("json", stream=stream)
    log_batch(
        {**RECEIPT, "status": "rejected", "accepted_count": 0, "reason_codes": ["invalid_json"]}
    )
    (line,) = _json_lines(stream)
    assert line["level"] == "WARNING"
    assert line["reasonCodes"] == ["invalid_json"]
    assert line["message"].endswith(": invalid_json")
    assert line["eventCount"] == 0


def test_format_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNTIME_FACTS__LOG__FORMAT", "json")
    monkeypatch.setenv("RUNTIME_FACTS__LOG__LEVEL", "WARNING")
    stream = io.StringIO()
    configure_logging(stream=stream)
    log_batch(RECEIPT)  # INFO: below the configured level
    log_batch({**RECEIPT, "status": "rejected"})
    assert [line["status"] for line in _json_lines(stream)] == ["rejected"]


def test_text_format_is_the_default() -> None:
    stream = io.StringIO()
    configure_logging(stream=stream)
    log_batch(RECEIPT)
    text = stream.getvalue()
    assert " INFO Reachability.Runtime batch accepted " in text
    assert "callgraphId=cg-1" in text
    assert "subjectKey=scan:s-1" in text
    assert "eventCount=12" in text


def test_exceptions_are_logged_as_one_json_line() -> None:
    stream = io.StringIO()
    configure_logging("json", stream=stream)
    try:
        raise ValueError("boom")
    except ValueError:
        logs.logger.exception("ingest failed", extra={"casUri": "cas://x"})
    (line,) = _json_lines(stream)
    assert line["level"] == "ERROR"
    assert "ValueError: boom" in line["exception"]


def test_configuring_twice_keeps_one_handler() -> None:
    configure_logging("json", stream=io.StringIO())
    stream = io.StringIO()
    configure_logging("json", stream=stream)
    log_batch(RECEIPT)
    assert len(_json_lines(stream)) == 1
    assert sum(h.get_name() == "runtime-facts" for h in logs.logger.handlers) == 1


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="json or text"):
        configure_logging("xml")


def test_unconfigured_logging_is_silent(capsys: pytest.CaptureFixture[str]) -> None:
    logging.getLogger(CATEGORY).handlers[:] = [logging.NullHandler()]
    logging.getLogger(CATEGORY).propagate = False
    log_batch({**RECEIPT, "status": "rejected"})
    assert capsys.readouterr().err == ""


# tracing --------------------------------------------------------------------------------


def test_no_endpoint_means_a_noop_span(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in tracing.ENDPOINT_VARS:
        monkeypatch.delenv(var, raising=False)
    with batch_span(SHA, {"callgraphId": "cg-1"}) as span:
        span.set_attribute("eventCount", 3)
    assert span is NOOP_SPAN
    assert not tracing.tracing_enabled()


def test_endpoint_without_opentelemetry_is_a_noop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # import fails
    monkeypatch.setitem(sys.modules, "opentelemetry.trace", None)
    with batch_span(SHA) as span:
        assert span is NOOP_SPAN


class FakeSpan:
    def __init__(self, name: str, attributes: dict[str, Any]) -> None:
        self.name = name
        self.attributes = dict(attributes)

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value

    def is_recording(self) -> bool:
        return True


class FakeTracer:
    def __init__(self) -> None:
        self.spans: list[FakeSpan] = []

    @contextmanager
    def start_as_current_span(self, name: str, attributes: dict[str, Any]) -> Iterator[FakeSpan]:
        span = FakeSpan(name, attributes)
        self.spans.append(span)
        yield span


def _fake_opentelemetry(monkeypatch: pytest.MonkeyPatch) -> FakeTracer:
    tracer = FakeTracer()

    class Proxy:
        pass

    class Configured:  # the host process already set a provider: leave it alone
        pass

    trace = types.ModuleType("opentelemetry.trace")
    trace.ProxyTracerProvider = Proxy  # type: ignore[attr-defined]
    trace.get_tracer_provider = Configured  # type: ignore[attr-defined]
    trace.get_tracer = lambda name: tracer  # type: ignore[attr-defined]
    package = types.ModuleType("opentelemetry")
    package.trace = trace  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "opentelemetry", package)
    monkeypatch.setitem(sys.modules, "opentelemetry.trace", trace)
    return tracer


def test_span_around_a_batch_when_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    tracer = _fake_opentelemetry(monkeypatch)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    with batch_span(SHA, {"casUri": RECEIPT["cas_uri"], "ignored": None}) as span:
        annotate_span(span, RECEIPT)
    (recorded,) = tracer.spans
    assert recorded.name == "runtime_facts.batch"
    assert recorded.attributes["batchSha256"] == SHA
    assert recorded.attributes["callgraphId"] == "cg-1"
    assert recorded.attributes["subjectKey"] == "scan:s-1"
    assert recorded.attributes["casUri"] == RECEIPT["cas_uri"]
    assert recorded.attributes["eventCount"] == 12
    assert "ignored" not in recorded.attributes
    assert tracing.tracing_enabled()
