"""Staging announces itself to a real Airflow API server: an asset event, with a JWT."""

from __future__ import annotations

import gzip
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from runtime_facts.config import AirflowSettings, SecretStr
from runtime_facts.home import Home
from runtime_facts.stores.airflow_api import RUNTIME_ASSET, AirflowApi, announce_staged
from tests.dags.conftest import DAGS
from tests.dags.test_parallel_executor import _free_port, _start, _stop, _tail

USER, PASSWORD = "ops", secrets.token_urlsafe(12)


@pytest.fixture
def airflow_api(tmp_path: Path, home: Home) -> Iterator[str]:
    """A private Airflow: SQLite DB with this repo's DAGs serialized, the core API on 127.0.0.1."""
    airflow_home = tmp_path / "airflow-home"
    airflow_home.mkdir()
    passwords = tmp_path / "passwords.json"
    passwords.write_text(json.dumps({USER: PASSWORD}))
    port = _free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
        "RUNTIME_FACTS_HOME": str(home.root),
    }
    for args, name in ((["db", "migrate"], "migrate"), (["dags", "reserialize"], "reserialize")):
        proc = _start(args, env, tmp_path / f"{name}.log")
        try:
            assert proc.wait(timeout=180) == 0, _tail(tmp_path / f"{name}.log")
        finally:
            _stop(proc)
    log = tmp_path / "api-server.log"
    api = _start(["api-server", "--apps", "core", "-H", "127.0.0.1", "-p", str(port)], env, log)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert api.poll() is None, _tail(log)
            try:
                with urllib.request.urlopen(f"{base}/api/v2/monitor/health", timeout=2):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                assert time.monotonic() < deadline, _tail(log)
                time.sleep(0.5)
        yield base
    finally:
        _stop(api)


@pytest.mark.slow
def test_staging_records_a_runtime_batches_asset_event(airflow_api: str) -> None:
    settings = AirflowSettings(api_url=airflow_api, username=USER, password=SecretStr(PASSWORD))
    extra = {"casUri": "cas://reachability/runtime/" + "ab" * 32, "tenant": "acme"}

    assert announce_staged(settings, RUNTIME_ASSET, extra)

    api = AirflowApi(settings)
    headers = {"Authorization": f"Bearer {api.token()}"}
    asset = api.asset_id(RUNTIME_ASSET, headers)
    events = httpx.get(
        f"{airflow_api}/api/v2/assets/events", params={"asset_id": asset}, headers=headers
    ).json()["asset_events"]
    assert [e["extra"] for e in events] == [{**extra, "from_rest_api": True}]
    assert events[0]["uri"].endswith("/cas/reachability/runtime")
    api.close()
    wrong = AirflowSettings(api_url=airflow_api, username=USER, password=SecretStr("nope"))
    assert announce_staged(wrong, RUNTIME_ASSET, extra) is False  # logged, never raised


@pytest.mark.slow
def test_cas_put_announces_the_staged_batches(airflow_api: str, tmp_path: Path) -> None:
    batch = tmp_path / "b.ndjson.gz"
    batch.write_bytes(gzip.compress(b'{"symbolId":"sym:a","hitCount":1}\n', mtime=0))
    env = {
        **os.environ,
        "RUNTIME_FACTS__AIRFLOW__API_URL": airflow_api,
        "RUNTIME_FACTS__AIRFLOW__USERNAME": USER,
        "RUNTIME_FACTS__AIRFLOW__PASSWORD": PASSWORD,
    }
    exe = str(Path(sys.executable).with_name("runtime-facts"))
    args = [
        "cas",
        "put",
        str(batch),
        "--tenant",
        "acme",
        "--callgraph-id",
        "cg-1",
        "--scan-id",
        "s",
    ]
    staged = subprocess.run([exe, *args], env=env, capture_output=True, text=True, check=True)

    settings = AirflowSettings(api_url=airflow_api, username=USER, password=SecretStr(PASSWORD))
    api = AirflowApi(settings)
    headers = {"Authorization": f"Bearer {api.token()}"}
    events = httpx.get(
        f"{airflow_api}/api/v2/assets/events",
        params={"asset_id": api.asset_id(RUNTIME_ASSET, headers)},
        headers=headers,
    ).json()["asset_events"]
    api.close()
    assert [e["extra"]["casUris"] for e in events] == [[staged.stdout.strip()]]
    assert events[0]["extra"]["source"] == "cas put"


def test_without_an_airflow_nothing_is_announced() -> None:
    assert announce_staged(AirflowSettings(), RUNTIME_ASSET, {}) is False
