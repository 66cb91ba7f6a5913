"""What every request handler shares: the home, the tokens, the metrics, the Airflow client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import cast

import httpx
from fastapi import Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from runtime_facts.api.auth import Principal, TokenStore
from runtime_facts.api.errors import ApiError
from runtime_facts.api.metrics import ApiMetrics
from runtime_facts.errors import Reason
from runtime_facts.home import Home

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="A token from the token file (runtime-facts serve token add).",
)


@dataclass
class ApiState:
    """Shared by every request of one app."""

    home: Home
    tokens: TokenStore
    metrics: ApiMetrics = field(default_factory=ApiMetrics)
    _airflow: httpx.AsyncClient | None = None
    uploads: int = 0
    """Uploads being read or staged now (authenticated, head arrived)."""

    @asynccontextmanager
    async def upload_slot(self) -> AsyncIterator[None]:
        """Hold one of `serve.max_concurrency` upload slots; 503 `server_busy` when none is free.

        Taken only after the token was accepted, so unauthenticated clients never hold one.
        All requests run on the server's one event loop, so a plain counter is exact.
        """
        limit = self.home.settings.serve.max_concurrency
        if self.uploads >= limit:
            raise ApiError(
                503,
                Reason.SERVER_BUSY,
                f"{limit} uploads are being staged; this one was not read",
                hint="retry after a short pause (Retry-After)",
                headers={"Retry-After": "1"},
            )
        self.uploads += 1
        try:
            yield
        finally:
            self.uploads -= 1

    def airflow(self) -> httpx.AsyncClient:
        """The HTTP client for the Airflow REST API (created on first use)."""
        if self._airflow is None:
            self._airflow = httpx.AsyncClient(
                timeout=self.home.settings.serve.airflow_timeout_seconds
            )
        return self._airflow

    async def aclose(self) -> None:
        """Release the Airflow client."""
        if self._airflow is not None:
            await self._airflow.aclose()
            self._airflow = None


def api_state(request: Request) -> ApiState:
    """The app's shared state."""
    return cast(ApiState, request.app.state.api)


def authorize(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None,
    scope: str,
    tenant: str | None = None,
) -> Principal:
    """401 without a known token, 403 without the scope or for another tenant."""
    principal = api_state(request).tokens.authenticate(
        credentials.credentials if credentials else None
    )
    principal.require(scope, tenant)
    return principal
