"""GET /healthz (alive), /readyz (able to stage), /metrics (Prometheus text)."""

from __future__ import annotations

import os
import threading
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from runtime_facts.api.errors import json_response
from runtime_facts.api.models import Health
from runtime_facts.api.state import ApiState, api_state

router = APIRouter(tags=["operations"])


def _home_writable(state: ApiState) -> str:
    """Write and delete a probe object where CAS objects go (local folder or bucket)."""
    key = f"tmp/readyz-{os.getpid()}-{threading.get_ident()}"
    try:
        state.home.objects.put(key, b"ok")
        state.home.objects.delete(key)
    except Exception as exc:  # any failure means an upload could not be staged
        detail = getattr(exc, "strerror", None) or type(exc).__name__
        return f"home {state.home.uri} is not writable: {detail}"
    return "ok"


def _sealed(state: ApiState) -> str:
    settings = state.home.settings
    if not settings.ingest.sealed:
        return "off"
    if settings.serve.allow_anonymous:
        return "misconfigured: sealed mode cannot accept anonymous uploads (serve.allow_anonymous)"
    if settings.serve.token_file is None:
        return "misconfigured: sealed mode needs a token file (serve.token_file)"
    return "ok"


def readiness(state: ApiState) -> dict[str, str]:
    """Every readiness check by name: `ok`/`off`, or what is wrong."""
    return {
        "home": _home_writable(state),
        "tokens": state.tokens.problem() or "ok",
        "sealed": _sealed(state),
    }


@router.get("/healthz", responses={200: {"model": Health}}, summary="Liveness")
async def healthz() -> Response:
    """The process answers."""
    return json_response({"status": "ok", "checks": {}})


@router.get(
    "/readyz",
    responses={
        200: {"model": Health, "description": "Ready to stage."},
        503: {
            "model": Health,
            "description": "Home unwritable, no tokens, or sealed mode misconfigured.",
        },
    },
    summary="Readiness",
)
async def readyz(request: Request) -> Response:
    """503 when an upload could not be staged or verified."""
    checks = await run_in_threadpool(readiness, api_state(request))
    ready = all(v in ("ok", "off") for v in checks.values())
    doc: dict[str, Any] = {"status": "ok" if ready else "unavailable", "checks": checks}
    return json_response(doc, 200 if ready else 503)


@router.get(
    "/metrics",
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
    summary="Prometheus metrics",
)
async def metrics(request: Request) -> Response:
    """Requests by route/status, staged batches, rejections by reason, latency."""
    return Response(api_state(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)
