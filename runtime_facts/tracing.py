"""OpenTelemetry spans around batches, only when OpenTelemetry is installed and configured.

`batch_span(sha, attrs)` opens a span named `runtime_facts.batch` when `opentelemetry` can
be imported *and* an OTLP endpoint is set (`OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`); otherwise it yields a no-op span, so OpenTelemetry is
never a hard dependency. When the SDK and an OTLP exporter are installed and nobody has set a
tracer provider yet, one is set up here (service name from `OTEL_SERVICE_NAME`, default
`runtime-facts`); the standard `OTEL_*` variables configure the exporter itself.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from runtime_facts.logs import batch_fields

SPAN_NAME = "runtime_facts.batch"
ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
TRACER_NAME = "runtime_facts"
_EXPORTERS = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
)


class SpanLike(Protocol):
    """The part of an OpenTelemetry span the jobs use."""

    def set_attribute(self, key: str, value: Any) -> None: ...
    def is_recording(self) -> bool: ...


class NoopSpan:
    """Stands in for a span when tracing is off."""

    def set_attribute(self, key: str, value: Any) -> None:
        """Ignore the attribute."""

    def is_recording(self) -> bool:
        """Never records."""
        return False


NOOP_SPAN = NoopSpan()
_lock = threading.Lock()
_state: dict[str, Any] = {}


def tracing_enabled() -> bool:
    """True when an OTLP endpoint is configured and `opentelemetry.trace` imports."""
    return _tracer() is not None


def reset_tracing() -> None:
    """Forget the cached decision (tests, or after the environment changed)."""
    with _lock:
        _state.clear()


def _tracer() -> Any | None:
    endpoint = next((os.environ[v] for v in ENDPOINT_VARS if os.environ.get(v)), None)
    with _lock:
        if _state.get("endpoint") == endpoint and "tracer" in _state:
            return _state["tracer"]
        tracer = _make_tracer() if endpoint else None
        _state.update(endpoint=endpoint, tracer=tracer)
        return tracer


def _make_tracer() -> Any | None:
    try:
        trace = importlib.import_module("opentelemetry.trace")
    except ImportError:
        return None
    _install_provider(trace)
    return trace.get_tracer(TRACER_NAME)


def _install_provider(trace: Any) -> None:
    """Set an SDK provider exporting over OTLP, unless the process already configured one."""
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return
    try:
        sdk_trace = importlib.import_module("opentelemetry.sdk.trace")
        export = importlib.import_module("opentelemetry.sdk.trace.export")
        resources = importlib.import_module("opentelemetry.sdk.resources")
    except ImportError:
        return  # API only: spans stay no-ops unless the host application sets a provider
    exporter_cls = None
    for name in _EXPORTERS:
        with contextlib.suppress(ImportError):
            exporter_cls = importlib.import_module(name).OTLPSpanExporter
            break
    if exporter_cls is None:
        return
    service = os.environ.get("OTEL_SERVICE_NAME", "runtime-facts")
    provider = sdk_trace.TracerProvider(
        resource=resources.Resource.create({"service.name": service})
    )
    provider.add_span_processor(export.BatchSpanProcessor(exporter_cls()))
    trace.set_tracer_provider(provider)


def span_attributes(sha: str, attrs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Attributes an OTel span accepts: str/bool/int/float or lists of them; None dropped."""
    out: dict[str, Any] = {"batchSha256": sha}
    for key, value in (attrs or {}).items():
        if value is None:
            continue
        if isinstance(value, bool | int | float | str):
            out[key] = value
        elif isinstance(value, list | tuple):
            out[key] = [v if isinstance(v, bool | int | float | str) else str(v) for v in value]
        else:
            out[key] = str(value)
    return out


@contextlib.contextmanager
def batch_span(sha: str, attrs: Mapping[str, Any] | None = None) -> Iterator[SpanLike]:
    """A span around one batch (or a no-op); set more attributes on what it yields.

    Args:
        sha: the batch digest, recorded as `batchSha256`.
        attrs: more attributes, e.g. `callgraphId`, `subjectKey`, `casUri`, `eventCount`.
    """
    tracer = _tracer()
    if tracer is None:
        yield NOOP_SPAN
        return
    with tracer.start_as_current_span(SPAN_NAME, attributes=span_attributes(sha, attrs)) as span:
        yield span


def annotate_span(span: SpanLike, receipt: dict[str, Any]) -> None:
    """Copy a sealed receipt's fields (callgraphId, subjectKey, casUri, eventCount, ...) on."""
    if not span.is_recording():
        return
    for key, value in span_attributes(
        str(receipt.get("batch_sha256", "")), batch_fields(receipt)
    ).items():
        span.set_attribute(key, value)
