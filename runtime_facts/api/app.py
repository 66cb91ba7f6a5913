"""The ASGI app: routes, error bodies, metrics; `create_app(home)` for tests and the CLI."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from runtime_facts import __version__
from runtime_facts.api import routes_ops, routes_reachability, routes_signals
from runtime_facts.api.auth import TokenStore
from runtime_facts.api.errors import ApiError
from runtime_facts.api.metrics import MetricsMiddleware
from runtime_facts.api.state import ApiState
from runtime_facts.config import Settings
from runtime_facts.errors import Reason
from runtime_facts.home import Home

log = logging.getLogger("Reachability.Runtime")


def _close_unread(request: Request, error: ApiError) -> Response:
    response = error.response()
    if request.method == "POST" and not getattr(request.state, "body_read", False):
        response.headers["Connection"] = "close"  # the unread body must not be parsed as a request
    return response


async def _on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return _close_unread(request, exc)


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    reason = Reason.INVALID_REQUEST if exc.status_code != 404 else "not_found"
    headers = dict(exc.headers) if exc.headers else None
    error = ApiError(exc.status_code, reason, str(exc.detail), headers=headers)
    return _close_unread(request, error)


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in exc.errors()
    )
    return _close_unread(request, ApiError(422, Reason.INVALID_REQUEST, problems))


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    error = ApiError(500, "internal_error", "unexpected server error; see the server log")
    return _close_unread(request, error)


def create_app(home: Home) -> FastAPI:
    """The staging endpoint for one home."""
    serve = home.settings.serve
    state = ApiState(
        home=home,
        tokens=TokenStore(
            Path(serve.token_file) if serve.token_file else None,
            allow_anonymous=serve.allow_anonymous,
        ),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await state.aclose()

    app = FastAPI(
        title="runtime-facts staging endpoint",
        version=__version__,
        description="Probes stage runtime-fact batches in CAS; see docs/staging-endpoint.md.",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.api = state
    app.include_router(routes_signals.router)
    app.include_router(routes_reachability.router)
    app.include_router(routes_ops.router)
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(HTTPException, _on_http_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(Exception, _on_unexpected)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    return app


def app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory runtime_facts.api:app_from_env` (settings from env)."""
    return create_app(Home(Settings.load()))
