"""Tell Airflow that data was staged: an asset event through its REST API (JWT auth).

`cas put`, `offline load` and the staging endpoint call `announce_staged` after a batch is in
CAS, so `runtime_facts_ingest` (scheduled on the `runtime_facts.cas.runtime` asset, with a cron
fallback) starts at once instead of at the next tick. Airflow 3 API tokens are short-lived
JWTs: one is obtained from `POST /auth/token` with the configured user for each announcement,
never stored. An unreachable Airflow never fails the staging: the batch is staged either way
and the cron fallback ingests it; the failure is logged.
"""

from __future__ import annotations

import logging
from typing import Any

from runtime_facts.config import AirflowSettings

RUNTIME_ASSET = "runtime_facts.cas.runtime"
GRAPHS_ASSET = "runtime_facts.cas.graphs"
_log = logging.getLogger("Reachability.Runtime")


class AirflowApi:
    """A small client of Airflow 3's public REST API (`/api/v2`)."""

    def __init__(self, settings: AirflowSettings) -> None:
        if not settings.api_url:
            raise ValueError("no Airflow API URL configured (RUNTIME_FACTS__AIRFLOW__API_URL)")
        self.settings = settings
        import httpx  # the [serve] extra; only needed when an Airflow is configured

        self.base = settings.api_url.rstrip("/")
        self.client = httpx.Client(timeout=settings.timeout_seconds)

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self.client.close()

    def token(self) -> str:
        """A fresh JWT for the configured user."""
        s = self.settings
        password = s.password.get_secret_value() if s.password else ""
        resp = self.client.post(
            f"{self.base}/auth/token", json={"username": s.username or "", "password": password}
        )
        resp.raise_for_status()
        return str(resp.json()["access_token"])

    def asset_id(self, name: str, headers: dict[str, str]) -> int | None:
        """The id Airflow gave the asset of this name (None: no DAG declares it yet)."""
        resp = self.client.get(
            f"{self.base}/api/v2/assets", params={"name_pattern": name}, headers=headers
        )
        resp.raise_for_status()
        for asset in resp.json().get("assets", []):
            if asset.get("name") == name:
                return int(asset["id"])
        return None

    def asset_event(self, name: str, extra: dict[str, Any]) -> dict[str, Any] | None:
        """Record an event of the named asset; returns Airflow's event (None: no such asset)."""
        headers = {"Authorization": f"Bearer {self.token()}"}
        asset = self.asset_id(name, headers)
        if asset is None:
            return None
        resp = self.client.post(
            f"{self.base}/api/v2/assets/events",
            json={"asset_id": asset, "extra": extra},
            headers=headers,
        )
        resp.raise_for_status()
        event: dict[str, Any] = resp.json()
        return event


def announce_staged(settings: AirflowSettings, asset: str, extra: dict[str, Any]) -> bool:
    """Record an asset event for staged data if an Airflow is configured; True if recorded."""
    if not settings.api_url:
        return False
    import httpx

    api = AirflowApi(settings)
    try:
        return api.asset_event(asset, extra) is not None
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        _log.warning("could not announce %s to Airflow at %s: %s", asset, api.base, exc)
        return False
    finally:
        api.close()
