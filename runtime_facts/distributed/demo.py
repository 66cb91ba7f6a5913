"""`make distributed-demo`: the ingest DAG on a real CeleryExecutor cluster, checked.

Starts PostgreSQL, Redis and (for an object-store home) the moto S3 server on 127.0.0.1, then
Airflow's scheduler, API server, DAG processor and two Celery workers; stages generated
batches of two tenants with `runtime-facts cas put`; triggers `runtime_facts_ingest` through
the REST API; waits for it; and checks the result independently: DuckDB sums the raw gzip
NDJSON per (tenant, symbol, code id, loader base) and every sum must equal `runtime_facts`,
every batch must have exactly one accepted receipt and its rows in `runtime_fact_batches`.
Everything it started is stopped at the end, also on failure or Ctrl-C.

The home: `RUNTIME_FACTS_HOME` unset, `s3` or `s3://bucket/prefix` → the moto server
(default `s3://runtime-facts/demo`); the workers read its endpoint and keys from the Airflow
Connection `runtime_facts_s3` (`AIRFLOW_CONN_RUNTIME_FACTS_S3`, JSON), the CLI from `AWS_*`.
A folder → that folder (the local home, shared by the workers of this machine).

Progress goes to stderr; stdout gets one line:
`distributed demo: <N> task instances on <M> Celery workers (<names>), facts ok`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rich.console import Console

from runtime_facts.distributed.check import DemoCheckFailed, Staged, check_lake, lake_of
from runtime_facts.distributed.cluster import (
    REPO,
    airflow_env,
    start_airflow,
    task_instances,
    trigger_and_wait,
)
from runtime_facts.distributed.cluster import wait_until_ready as wait_for_cluster
from runtime_facts.distributed.services import ServiceError, Services

DAG_ID = "runtime_facts_ingest"
TENANTS = ("northwind", "contoso")
WORKERS = ("worker1", "worker2")
CONN_ID = "runtime_facts_s3"
DEFAULT_S3_HOME = "s3://runtime-facts/demo"
__all__ = ["DemoCheckFailed", "DemoResult", "Staged", "check_lake", "main", "run_demo"]
S3_KEYS = {"AWS_ACCESS_KEY_ID": "demo-access-key", "AWS_SECRET_ACCESS_KEY": "demo-secret-key"}

err = Console(stderr=True, highlight=False, markup=False, soft_wrap=True)


@dataclass
class DemoResult:
    """What one demo run did and measured."""

    run_id: str
    home: str
    batches: list[Staged]
    task_instances: list[tuple[str, int, str, str]]
    """(task_id, map_index, state, hostname) of every task instance of the run."""
    checked: dict[str, int] = field(default_factory=dict)
    """What `check_lake` counted."""
    listening: set[tuple[str, int]] = field(default_factory=set)
    """(address, port) every server and worker listened on, just before the stop."""
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def per_worker(self) -> dict[str, int]:
        """Task instances per worker (the `hostname` Airflow recorded)."""
        return dict(sorted(Counter(ti[3] for ti in self.task_instances).items()))

    def line(self) -> str:
        """The final line of the demo."""
        names = ", ".join(self.per_worker)
        return (
            f"distributed demo: {len(self.task_instances)} task instances on "
            f"{len(self.per_worker)} Celery workers ({names}), facts ok"
        )


def resolve_home(value: str | None) -> str:
    """The home the demo ingests into: an `s3://` URI (moto) or an absolute folder."""
    if not value or value == "s3":
        return DEFAULT_S3_HOME
    if value.startswith("s3://"):
        return value.rstrip("/")
    return str(Path(value).resolve())


@contextmanager
def _stop_on_signals() -> Iterator[None]:
    """SIGTERM / SIGHUP end the demo like Ctrl-C does, so the `finally` stops the servers."""

    def _exit(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = {s: signal.signal(s, _exit) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _cli(args: list[str], env: dict[str, str]) -> Any:
    binary = Path(sys.executable).with_name("runtime-facts")
    out = subprocess.run(
        [str(binary), "--json", *args], env=env, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise ServiceError(f"runtime-facts {' '.join(args[:2])} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout)


def stage_batches(
    workdir: Path, env: dict[str, str], batches_per_tenant: int, events_per_batch: int
) -> list[Staged]:
    """Generate batches per tenant (`runtime-facts generate`) and stage each (`cas put`)."""
    jobs: list[tuple[str, Path]] = []
    for i, tenant in enumerate(TENANTS):
        out = workdir / "batches" / tenant
        shutil.rmtree(out, ignore_errors=True)
        events = str(batches_per_tenant * events_per_batch)
        args = ["generate", "--out", str(out), "--events", events, "--symbols", "500"]
        args += ["--events-per-chunk", str(events_per_batch), "--seed", str(101 + i)]
        generated = _cli(args, env)
        jobs += [(tenant, Path(f)) for f in generated["files"]]

    def put(job: tuple[str, Path]) -> Staged:
        tenant, path = job
        digest = "sha256:" + hashlib.sha256(tenant.encode()).hexdigest()
        subject = ["--callgraph-id", f"cg-{tenant}", "--image-digest", digest]
        (staged,) = _cli(["cas", "put", str(path), "--tenant", tenant, *subject], env)
        return Staged(tenant, path, str(staged["sha256"]))

    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(put, jobs))


def _timed(fn: Any, *args: Any) -> tuple[Any, float]:
    mark = time.monotonic()
    return fn(*args), time.monotonic() - mark


def _create_bucket(home: str, s3_env: dict[str, str]) -> None:
    import boto3

    bucket = urlsplit(home).netloc
    boto3.client(
        "s3",
        endpoint_url=s3_env["AWS_ENDPOINT_URL"],
        aws_access_key_id=s3_env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=s3_env["AWS_SECRET_ACCESS_KEY"],
        region_name=s3_env["AWS_REGION"],
    ).create_bucket(Bucket=bucket)


def run_demo(
    workdir: Path,
    *,
    home: str | None = None,
    batches_per_tenant: int = 3,
    events_per_batch: int = 5000,
    pg_root: Path | None = None,
    timeout: float = 900.0,
) -> DemoResult:
    """Start the cluster under `workdir` (emptied first), run and check the ingest, stop all.

    Args:
        workdir: folder for every server's data and logs (`logs/<server>.log`).
        home: the runtime-facts home setting (see the module docstring); None: moto.
        batches_per_tenant: batches generated and staged per tenant.
        events_per_batch: events per batch.
        pg_root: the PostgreSQL cluster's folder (default `<workdir>/pg`); it must be
            reachable by the `postgres` user when this runs as root.
        timeout: bound of each wait (servers ready, the run).

    Returns:
        The run's task instances per worker, the staged batches and phase timings.

    Raises:
        ServiceError: a server did not start or the run failed (with the log's tail).
        DemoCheckFailed: facts or receipts disagree with the staged batches.
    """
    started = time.monotonic()
    seconds: dict[str, float] = {}
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    target = resolve_home(home)
    services = Services(workdir)
    try:
        with _stop_on_signals():
            err.print(f"[distributed] work folder {workdir}, home {target}")
            sql = services.start_postgres(pg_root or workdir / "pg")
            broker = services.start_redis()
            base = {k: v for k, v in os.environ.items() if not k.startswith("RUNTIME_FACTS")}
            base["RUNTIME_FACTS_HOME"] = target
            cli_env = dict(base)
            s3_env: dict[str, str] = {}
            if target.startswith("s3://"):
                endpoint = services.start_moto()
                s3_env = {"AWS_ENDPOINT_URL": endpoint, "AWS_REGION": "us-east-1", **S3_KEYS}
                _create_bucket(target, s3_env)
                cli_env.update(s3_env, RUNTIME_FACTS_LOCAL_DIR=str(workdir / "cli-local"))
            config = airflow_env(workdir / "airflow", sql, broker, base)
            if s3_env:
                connection = {
                    "conn_type": "aws",
                    "login": s3_env["AWS_ACCESS_KEY_ID"],
                    "password": s3_env["AWS_SECRET_ACCESS_KEY"],
                    "extra": {
                        "endpoint_url": s3_env["AWS_ENDPOINT_URL"],
                        "region_name": "us-east-1",
                    },
                }
                config.env[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps(connection)
                config.env["RUNTIME_FACTS__S3__AWS_CONN_ID"] = CONN_ID
                config.env["RUNTIME_FACTS_LOCAL_DIR"] = str(workdir / "worker-local")
            seconds["servers"] = time.monotonic() - started
            err.print(f"[distributed] postgres, redis{', moto' if s3_env else ''} up; airflow")
            # Stage while Airflow migrates its DB and starts up: neither needs the other.
            with ThreadPoolExecutor(max_workers=1) as pool:
                staging = pool.submit(
                    _timed, stage_batches, workdir, cli_env, batches_per_tenant, events_per_batch
                )
                start_airflow(services, config, list(WORKERS))
                staged, seconds["stage"] = staging.result()
            err.print(f"[distributed] staged {len(staged)} batches of {len(TENANTS)} tenants")
            token = wait_for_cluster(services, config, list(WORKERS), DAG_ID, timeout)
            seconds["airflow_ready"] = time.monotonic() - started
            mark = time.monotonic()
            run_id, state = trigger_and_wait(config, token, DAG_ID, timeout)
            seconds["run"] = time.monotonic() - mark
            tis = task_instances(sql, DAG_ID, run_id)
            err.print(
                f"[distributed] {run_id} {state}: "
                + ", ".join(f"{t[0]}[{t[1]}]@{t[3]}" for t in tis)
            )
            if state != "success":
                failed = [t for t in tis if t[2] != "success"]
                raise ServiceError(f"run {run_id} ended {state}; not successful: {failed}")
            listening = services.listening()
            checked = check_lake(lake_of(target, s3_env), staged)
            seconds["total"] = time.monotonic() - started
            return DemoResult(run_id, target, staged, tis, checked, listening, seconds)
    finally:
        err.print("[distributed] stopping every server and worker")
        services.stop()


def main(argv: list[str] | None = None) -> None:
    """Run the demo; exit 1 with the reason (and a log's tail) if anything fails."""
    parser = argparse.ArgumentParser(prog="python -m runtime_facts.distributed.demo")
    parser.add_argument("--workdir", type=Path, default=REPO / "var" / "distributed")
    parser.add_argument("--batches-per-tenant", type=int, default=3)
    parser.add_argument("--events-per-batch", type=int, default=5000)
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args(argv)
    pg_root = None
    if os.geteuid() == 0 and not _reachable_by_postgres(args.workdir):
        pg_root = Path(tempfile.mkdtemp(prefix="rf-distributed-pg-"))
    try:
        result = run_demo(
            args.workdir.resolve(),
            home=os.environ.get("RUNTIME_FACTS_HOME"),
            batches_per_tenant=args.batches_per_tenant,
            events_per_batch=args.events_per_batch,
            pg_root=pg_root,
            timeout=args.timeout,
        )
    except ServiceError as exc:
        err.print(f"[distributed] FAILED: {exc}")
        sys.exit(1)
    finally:
        if pg_root is not None:
            shutil.rmtree(pg_root, ignore_errors=True)
    timings = ", ".join(f"{k} {v:.0f}s" for k, v in result.seconds.items())
    per_worker = ", ".join(f"{k}: {v}" for k, v in result.per_worker.items())
    err.print(f"[distributed] {timings}; task instances per worker: {per_worker}")
    ports = ", ".join(f"{a}:{p}" for a, p in sorted(result.listening))
    err.print(f"[distributed] listened on {ports}")
    sys.stdout.write(result.line() + "\n")


def _reachable_by_postgres(folder: Path) -> bool:
    """True when every existing parent of `folder` lets others through (the postgres user)."""
    for parent in [folder.resolve(), *folder.resolve().parents]:
        if parent.exists():
            return all(p.stat().st_mode & 0o001 for p in [parent, *parent.parents])
    return True


if __name__ == "__main__":
    main()
