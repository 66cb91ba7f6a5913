"""Airflow on CeleryExecutor: scheduler, API server, DAG processor and named Celery workers.

Every Airflow process gets the same environment (`airflow_env`): the Postgres metadata DB,
the Redis broker, the repo's `dags/` folder, a JWT secret shared by the API server and the
workers' task processes, and a SimpleAuthManager user for the REST API. Runs are triggered
and watched through Airflow's public REST API with a JWT from `/auth/token` (Airflow 3
expires its tokens: one is fetched per demo, never stored).
"""

from __future__ import annotations

import json
import secrets
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from runtime_facts.airflow.pools import pool_command
from runtime_facts.distributed.hostname import WORKER_NAME_VAR
from runtime_facts.distributed.services import ServiceError, Services, free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
API_USER = "demo"


class APIError(ServiceError):
    """Airflow's REST API answered with an HTTP error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class AirflowConfig:
    """Where the cluster's pieces are and how Airflow reaches them."""

    home: Path
    sql_alchemy_conn: str
    broker_url: str
    api_port: int
    password: str
    env: dict[str, str]

    @property
    def api(self) -> str:
        """Base URL of the API server."""
        return f"http://127.0.0.1:{self.api_port}"


def airflow_env(
    home: Path,
    sql_alchemy_conn: str,
    broker_url: str,
    base: dict[str, str],
    *,
    dags: Path = DAGS,
    concurrency: int = 1,
) -> AirflowConfig:
    """The environment every Airflow process of the cluster runs with."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    password = secrets.token_urlsafe(16)
    passwords = home / "simple_auth_manager_passwords.json"
    passwords.write_text(json.dumps({API_USER: password}))
    passwords.chmod(0o600)
    result_backend = "db+" + sql_alchemy_conn
    env = {k: v for k, v in base.items() if not k.startswith(("AIRFLOW", "AWS_"))}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": (
                "runtime_facts.distributed.hostname.worker_hostname"
            ),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{API_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sql_alchemy_conn,
            "AIRFLOW__CELERY__BROKER_URL": broker_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": result_backend,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(concurrency),
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "21600",
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}/",
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
            # Runs come from the REST API only: no cron run appears beside the demo's.
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        }
    )
    return AirflowConfig(home, sql_alchemy_conn, broker_url, port, password, env)


def _airflow(*args: str) -> list[str]:
    return [sys.executable, "-m", "airflow", *args]


def start_airflow(services: Services, config: AirflowConfig, workers: list[str]) -> None:
    """Migrate the metadata DB, then start the API server, scheduler, DAG processor and one
    Celery worker per name (`--celery-hostname <name>@%h`)."""
    services.run("airflow-db-migrate", _airflow("db", "migrate"), config.env, timeout=600)
    services.run("airflow-pool", _airflow(*pool_command("airflow")[1:]), config.env, timeout=300)
    services.start(
        "airflow-api-server",
        _airflow("api-server", "-H", "127.0.0.1", "-p", str(config.api_port), "-w", "1"),
        config.env,
    )
    services.start("airflow-scheduler", _airflow("scheduler", "--skip-serve-logs"), config.env)
    services.start("airflow-dag-processor", _airflow("dag-processor"), config.env)
    for name in workers:
        args = ["celery", "worker", "--celery-hostname", f"{name}@%h"]
        args += ["--skip-serve-logs", "--without-gossip", "--without-mingle"]
        services.start(f"celery-{name}", _airflow(*args), {**config.env, WORKER_NAME_VAR: name})


def wait_until_ready(
    services: Services, config: AirflowConfig, workers: list[str], dag_id: str, timeout: float
) -> str:
    """Wait for the API, the parsed DAG and every worker; returns a REST API token."""

    def api_healthy() -> bool:
        services.check_alive()
        with urllib.request.urlopen(f"{config.api}/api/v2/monitor/health", timeout=5) as r:
            return int(r.status) == 200

    api_log = services.path("logs") / "airflow-api-server.log"
    wait_for(api_healthy, "airflow api-server", timeout, api_log)
    tokens: list[str] = []

    def got_token() -> bool:
        tokens.append(api_token(config))
        return True

    wait_for(got_token, "API token", timeout, api_log)
    token = tokens[-1]

    def dag_parsed() -> bool:
        services.check_alive()
        return bool(rest(config, token, "GET", f"/api/v2/dags/{dag_id}").get("dag_id"))

    wait_for(dag_parsed, f"DAG {dag_id} (dag-processor)", timeout)
    for name in workers:
        log = services.path("logs") / f"celery-{name}.log"

        def ready(log: Path = log) -> bool:
            services.check_alive()
            return " ready." in log.read_text(errors="replace")

        wait_for(ready, f"celery worker {name}", timeout, log)
    return token


def api_token(config: AirflowConfig) -> str:
    """A JWT for the REST API (SimpleAuthManager's `/auth/token`)."""
    body = json.dumps({"username": API_USER, "password": config.password}).encode()
    request = urllib.request.Request(
        f"{config.api}/auth/token",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return str(json.loads(response.read())["access_token"])


def rest(
    config: AirflowConfig, token: str, method: str, path: str, body: Any = None
) -> dict[str, Any]:
    """One call to Airflow's REST API; ServiceError with the answer on an HTTP error."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        config.api + path,
        data=data,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method=method,
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as exc:
        raise APIError(exc.code, f"{method} {path}: {exc.code} {exc.read()[:500]!r}") from exc


def trigger_and_wait(
    config: AirflowConfig, token: str, dag_id: str, timeout: float
) -> tuple[str, str]:
    """Trigger the ingest DAG through the REST API and wait for the run to end.

    A busy API server may answer late: a call that times out or loses its connection is
    repeated (a repeated trigger that finds its run already created is fine) until `timeout`.
    """
    run_id = f"distributed-demo-{uuid.uuid4().hex[:8]}"
    body: dict[str, Any] = {"dag_run_id": run_id, "logical_date": None, "conf": {}}
    deadline = time.monotonic() + timeout
    runs = f"/api/v2/dags/{dag_id}/dagRuns"
    state = "not triggered"
    while time.monotonic() < deadline:
        try:
            if state == "not triggered":
                try:
                    rest(config, token, "POST", runs, body)
                except APIError as exc:
                    if exc.status != 409:  # 409: an earlier, late attempt created it
                        raise
                state = "queued"
            state = str(rest(config, token, "GET", f"{runs}/{run_id}")["state"])
        except APIError as exc:
            if exc.status < 500:
                raise
        except (TimeoutError, ConnectionError, urllib.error.URLError):
            pass  # late or dropped answer: ask again
        if state in ("success", "failed"):
            return run_id, state
        time.sleep(2)
    raise ServiceError(f"run {run_id} still {state} after {timeout:.0f}s")


def task_instances(
    sql_alchemy_conn: str, dag_id: str, run_id: str
) -> list[tuple[str, int, str, str]]:
    """(task_id, map_index, state, hostname) of the run, from the metadata DB."""
    import psycopg2

    url = urlsplit(sql_alchemy_conn)
    conn = psycopg2.connect(
        host=url.hostname,
        port=url.port,
        user=url.username,
        password=url.password,
        dbname=url.path.lstrip("/"),
    )
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT task_id, map_index, state, hostname FROM task_instance"
                " WHERE dag_id = %s AND run_id = %s ORDER BY task_id, map_index",
                [dag_id, run_id],
            )
            return [(str(t), int(m), str(s), str(h or "")) for t, m, s, h in cur.fetchall()]
    finally:
        conn.close()
