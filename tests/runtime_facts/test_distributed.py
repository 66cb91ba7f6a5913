"""The distributed demo: a real CeleryExecutor cluster (Postgres, Redis, moto, two workers).

The slow test runs the whole demo with fewer batches; the others pin its independent check
(DuckDB over the raw batches against the lake) on a local home, so a wrong fact or a batch
counted twice is known to make the demo fail.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from runtime_facts.config import Settings
from runtime_facts.distributed.demo import (
    TENANTS,
    WORKERS,
    DemoCheckFailed,
    Staged,
    check_lake,
    resolve_home,
    run_demo,
)
from runtime_facts.distributed.hostname import WORKER_NAME_VAR, worker_hostname
from runtime_facts.distributed.services import ServiceError, Services
from runtime_facts.generate import GeneratorSpec, generate_batches
from runtime_facts.home import Home
from runtime_facts.pipeline.ingest import ingest
from runtime_facts.subject import SubjectContext

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def _debian_servers() -> None:
    """PostgreSQL and Redis from Debian, installed by the project's script when missing."""
    subprocess.run(["bash", str(REPO / "scripts" / "distributed-deps.sh")], check=True)


@pytest.fixture
def pg_root() -> Iterator[Path]:
    """A folder the `postgres` user can reach (pytest's tmp_path is private to root)."""
    root = Path(tempfile.mkdtemp(prefix="rf-test-pg-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.usefixtures("_debian_servers")
def test_ingest_runs_on_both_celery_workers_and_counts_every_batch_once(
    tmp_path: Path, pg_root: Path
) -> None:
    result = run_demo(
        tmp_path / "cluster",
        home=None,
        batches_per_tenant=2,
        events_per_batch=2000,
        pg_root=pg_root,
        timeout=240,
    )
    fqdn = socket.getfqdn()
    assert result.home.startswith("s3://")
    assert len(result.batches) == 4
    assert {b.tenant for b in result.batches} == set(TENANTS)
    assert {state for _, _, state, _ in result.task_instances} == {"success"}
    # One mapped ingest per batch (a handful of batches is one chunk each), plus the DAG's
    # single tasks (discover, fold, score, publish...).
    mapped = [ti for ti in result.task_instances if ti[1] >= 0]
    assert {t for t, _, _, _ in mapped} == {"ingest_batch"}
    assert sorted(m for _, m, _, _ in mapped) == [0, 1, 2, 3]
    assert "discover" in {t for t, _, _, _ in result.task_instances}
    # Both workers ran task instances (their hostnames as recorded in the metadata DB)...
    assert set(result.per_worker) == {f"{name}@{fqdn}" for name in WORKERS}
    # ...and every batch counted once: one accepted receipt, its rows once, facts = raw sums.
    checked = result.checked
    assert checked["batches"] == checked["receipts"] == 4
    assert checked["hits"] == checked["raw_hits"] > 0
    names = ", ".join(sorted(result.per_worker))
    assert result.line() == (
        f"distributed demo: {len(result.task_instances)} task instances on 2 Celery workers"
        f" ({names}), facts ok"
    )
    # Postgres, Redis, moto and the API server listened, on the loopback address only.
    assert len(result.listening) >= 4
    assert {address for address, _ in result.listening} == {"127.0.0.1"}
    # Everything it started is stopped: no process still runs on its folders.
    assert not (pg_root / "data" / "postmaster.pid").exists()
    survivors = [
        p.info["cmdline"]
        for p in psutil.process_iter(["cmdline"])
        if any(str(tmp_path) in a or str(pg_root) in a for a in p.info["cmdline"] or [])
    ]
    assert survivors == []


def _stage(home: Home, tmp_path: Path) -> list[Staged]:
    staged = []
    for i, tenant in enumerate(TENANTS):
        spec = GeneratorSpec(events=1500, symbols=50, code_ids=5, seed=i, events_per_chunk=500)
        for j, chunk in enumerate(generate_batches(spec)):
            path = tmp_path / f"{tenant}-{j}.ndjson.gz"
            path.write_bytes(chunk)
            put = home.cas.put("runtime", chunk, SubjectContext(tenant, "cg", scan_id="s"))
            staged.append(Staged(tenant, path, put.sha256))
    return staged


def test_the_check_accepts_facts_equal_to_the_raw_batches(home: Home, tmp_path: Path) -> None:
    staged = _stage(home, tmp_path)
    ingest(home)
    checked = check_lake(Home(Settings.load(str(home.root))).lake, staged)
    assert checked["batches"] == checked["receipts"] == 6
    assert checked["hits"] == checked["raw_hits"] > 0


def test_the_check_fails_when_a_batch_would_count_twice(home: Home, tmp_path: Path) -> None:
    staged = _stage(home, tmp_path)
    ingest(home)
    with pytest.raises(DemoCheckFailed, match="facts differ"):
        check_lake(home.lake, [*staged, staged[0]])


def test_the_check_fails_when_a_staged_batch_is_missing(home: Home, tmp_path: Path) -> None:
    staged = _stage(home, tmp_path)
    ingest(home, [s.sha256 for s in staged[1:]])
    with pytest.raises(DemoCheckFailed):
        check_lake(home.lake, staged)


def test_worker_hostnames_tell_workers_on_one_host_apart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(WORKER_NAME_VAR, raising=False)
    assert worker_hostname() == socket.getfqdn()
    monkeypatch.setenv(WORKER_NAME_VAR, "worker2")
    assert worker_hostname() == f"worker2@{socket.getfqdn()}"


def test_the_home_is_moto_unless_a_folder_is_named(tmp_path: Path) -> None:
    assert resolve_home(None) == resolve_home("s3") == "s3://runtime-facts/demo"
    assert resolve_home("s3://bucket/prefix/") == "s3://bucket/prefix"
    assert resolve_home(str(tmp_path / "h")) == str((tmp_path / "h").resolve())


@pytest.mark.usefixtures("_debian_servers")
def test_services_stop_every_process_they_started(tmp_path: Path) -> None:
    services = Services(tmp_path / "s")
    broker = services.start_redis()
    port = int(broker.rsplit(":", 1)[1].split("/")[0])
    tree = services.start("tree", ["bash", "-c", "sleep 300 & sleep 300 & wait"])
    deadline = time.monotonic() + 10
    while len(psutil.Process(tree.proc.pid).children()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    pids = [tree.proc.pid, *(c.pid for c in psutil.Process(tree.proc.pid).children())]
    assert len(pids) == 3
    services.stop()
    assert services.started == []
    assert not any(
        psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in pids
    )
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # redis is gone


def test_a_failed_command_names_itself_with_its_log(tmp_path: Path) -> None:
    services = Services(tmp_path / "s")
    with pytest.raises(ServiceError, match=r"(?s)probe failed \(3\).*no such thing"):
        services.run("probe", ["bash", "-c", "echo no such thing; exit 3"], None, timeout=30)
    assert services.started == []
