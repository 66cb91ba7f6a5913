"""runtime_facts_ingest on a LocalExecutor: mapped ingests run at once in separate processes.

The other DAG tests use `dag.test()`, which runs every task in the test process, one after
the other. This one runs `airflow dags test --use-executor` (the same `dag.test()` loop, with
`use_executor=True`) in a subprocess configured for `LocalExecutor` with parallelism 4, so
each task runs in its own supervised process forked from an executor worker.

Those task processes talk to Airflow only through the Execution API over HTTP
(`[core] execution_api_server_url`), and `dag.test(use_executor=True)` does not start one
(apache/airflow#59074): the fixture starts `airflow api-server --apps execution` on
127.0.0.1. Both share a private SQLite metadata DB and a JWT secret: the executor signs each
task's token with it and the API server checks it. It is set explicitly rather than left to
the random one the first Airflow process writes into a fresh `airflow.cfg`.

Concurrency is judged from the metadata DB, where the API server records what each task's
supervisor reports: `start_date` and `pid` once the task process is forked (before the task
body runs), `end_date` with the final state. Two mapped instances whose intervals overlap
were running at the same time, which an executor that ran them one after the other cannot
produce (with parallelism 1 the six pids still differ, but no two intervals overlap).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import closing, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psutil
import pytest

from runtime_facts.config import Settings
from runtime_facts.home import Home
from runtime_facts.subject import SubjectContext
from tests.dags.conftest import DAGS, REPO

DAG_ID = "runtime_facts_ingest"
PARALLELISM = 4
MIGRATE_TIMEOUT = 120
API_START_TIMEOUT = 90
RUN_TIMEOUT = 240
Staged = list[tuple[str, int]]


@dataclass
class LocalAirflow:
    """A private Airflow (SQLite + execution API server) that `dags test` runs against."""

    home: Path
    env: dict[str, str]
    logs: Path

    @property
    def db(self) -> Path:
        return self.home / "airflow.db"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 40) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "airflow", *args],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate a process we started and every process it started, by pid; kill stragglers.

    Task processes put themselves in process groups of their own, so the tree is collected
    first (children are reparented, and lost from view, once their parent exits).
    """
    try:
        tree = [psutil.Process(proc.pid)]
        tree += tree[0].children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    for p in tree:
        with suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(tree, timeout=15)
    for p in alive:
        with suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=5)
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=5)


def _wait_healthy(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + API_START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"airflow api-server exited with {proc.returncode}:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    pytest.fail(f"airflow api-server not healthy after {API_START_TIMEOUT}s:\n{_tail(log)}")


@pytest.fixture
def local_airflow(tmp_path: Path, home: Home) -> Iterator[LocalAirflow]:
    """A migrated SQLite metadata DB and an execution API server on 127.0.0.1, both private."""
    airflow_home = tmp_path / "airflow-home"
    logs = tmp_path / "logs"
    airflow_home.mkdir()
    logs.mkdir()
    port = _free_port()
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(PARALLELISM),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "RUNTIME_FACTS_HOME": str(home.root),
    }
    migrate = _start(["db", "migrate"], env, logs / "migrate.log")
    try:
        rc = migrate.wait(timeout=MIGRATE_TIMEOUT)
    finally:
        _stop(migrate)
    assert rc == 0, f"airflow db migrate failed:\n{_tail(logs / 'migrate.log')}"

    api = _start(
        ["api-server", "--apps", "execution", "-H", "127.0.0.1", "-p", str(port), "-w", "1"],
        env,
        logs / "api-server.log",
    )
    try:
        _wait_healthy(api, f"http://127.0.0.1:{port}/execution/health", logs / "api-server.log")
        yield LocalAirflow(home=airflow_home, env=env, logs=logs)
    finally:
        _stop(api)


def _run_dag(airflow: LocalAirflow) -> int:
    """`airflow dags test --use-executor`, bounded by RUN_TIMEOUT; returns its exit code."""
    log = airflow.logs / "dags-test.log"
    proc = _start(["dags", "test", DAG_ID, "--use-executor"], airflow.env, log)
    try:
        return proc.wait(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`airflow dags test` still running after {RUN_TIMEOUT}s:\n{_tail(log)}")
    finally:
        _stop(proc)


@dataclass(frozen=True)
class TaskRun:
    map_index: int
    state: str
    start: datetime
    end: datetime
    pid: int


def _ingest_runs(db: Path) -> tuple[list[str], list[TaskRun]]:
    """States of the DAG's runs and the mapped ingest instances, from the metadata DB."""
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        runs = [s for (s,) in conn.execute("SELECT state FROM dag_run WHERE dag_id = ?", [DAG_ID])]
        rows = conn.execute(
            "SELECT map_index, state, start_date, end_date, pid FROM task_instance"
            " WHERE dag_id = ? AND task_id = 'ingest_batch' ORDER BY map_index",
            [DAG_ID],
        ).fetchall()
    return runs, [
        TaskRun(i, state, datetime.fromisoformat(start), datetime.fromisoformat(end), pid)
        for i, state, start, end, pid in rows
    ]


def _most_at_once(runs: list[TaskRun]) -> int:
    """Largest number of task instances running at the same instant."""
    # At equal timestamps an end sorts before a start: touching intervals do not overlap.
    edges = sorted([(r.start, 1) for r in runs] + [(r.end, -1) for r in runs])
    running = most = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


@pytest.mark.slow
def test_mapped_ingests_run_concurrently_and_count_each_batch_once(
    local_airflow: LocalAirflow,
    home: Home,
    stage_generated: Callable[..., Staged],
) -> None:
    staged = stage_generated(
        SubjectContext("acme", "cg", scan_id="s"), events=24_000, per_batch=4000
    )
    shas = sorted(sha for sha, _ in staged)
    assert len(shas) == 6

    rc = _run_dag(local_airflow)

    log = local_airflow.logs / "dags-test.log"
    assert rc == 0, f"`airflow dags test` exited with {rc}:\n{_tail(log)}"
    dag_runs, ingests = _ingest_runs(local_airflow.db)
    assert dag_runs == ["success"]
    assert [(r.map_index, r.state) for r in ingests] == [(i, "success") for i in range(6)]
    # Each mapped instance ran in a process of its own, none of them this one...
    pids = {r.pid for r in ingests}
    assert len(pids) == len(ingests)
    assert os.getpid() not in pids
    # ...and at least two of them were running at the same time.
    timeline = "\n".join(f"{r.map_index}: {r.start} → {r.end} pid {r.pid}" for r in ingests)
    assert _most_at_once(ingests) >= 2, f"no two ingest tasks overlapped:\n{timeline}"

    lake = Home(Settings.load(str(home.root))).lake
    receipts = lake.read("ingest_receipts")
    assert sorted(receipts.get_column("batch_sha256").to_list()) == shas
    assert set(receipts.get_column("status").to_list()) == {"accepted"}
    keys = dict(receipts.select("batch_sha256", "key_count").iter_rows())
    rows = lake.read("runtime_fact_batches")
    assert dict(rows.group_by("batch_sha256").len().iter_rows()) == keys
    facts = lake.read("runtime_facts")
    assert int(facts.get_column("hit_count").sum()) == sum(hits for _, hits in staged)
