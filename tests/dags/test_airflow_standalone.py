"""`make airflow`: a plain shell starts all four components; stopping it leaves nothing behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest

from runtime_facts.airflow_home import (
    DAGS,
    REPO,
    read_cfg_value,
    set_cfg_values,
    venv_bin,
)
from runtime_facts.airflow_standalone import already_running, print_banner, standalone_env

PLAIN_PATH = "/usr/bin:/bin"
STARTUP_SECONDS = 150


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def plain_env(tmp_path: Path, port: int, **extra: str) -> dict[str, str]:
    """What a fresh login shell has: no venv on PATH, nothing of Airflow or runtime-facts set."""
    return {
        "PATH": PLAIN_PATH,
        "HOME": str(tmp_path / "user"),
        "LANG": "C.UTF-8",
        "AIRFLOW_HOME": str(tmp_path / "airflow-home"),
        "RUNTIME_FACTS_HOME": str(tmp_path / "var"),
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__PARALLELISM": "2",
        **extra,
    }


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=2
        ) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def wait_for(predicate, process: subprocess.Popen[bytes], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        if process.poll() is not None:
            return False
        time.sleep(1)
    return False


def live(procs: list[psutil.Process]) -> dict[psutil.Process, str]:
    """The processes still running (not exited, not zombies), with their command lines."""
    out = {}
    for proc in procs:
        try:
            out[proc] = " ".join(proc.cmdline())
        except psutil.NoSuchProcess:  # ZombieProcess included
            continue
    return out


def _connections(proc: psutil.Process) -> list[Any]:
    try:
        return list(proc.net_connections("tcp"))
    except psutil.NoSuchProcess:
        return []


def survivors(procs: list[psutil.Process]) -> list[str]:
    alive = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{proc.pid} {' '.join(proc.cmdline())}")
        except psutil.NoSuchProcess:
            pass
    return alive


def dags_listed_with_only_airflow_home(tmp_path: Path, home: Path) -> set[str]:
    """`AIRFLOW_HOME=<home> airflow dags list --local`, nothing else set."""
    listed = subprocess.run(
        [str(venv_bin() / "airflow"), "dags", "list", "--local", "-o", "json"],
        env={"PATH": PLAIN_PATH, "HOME": str(tmp_path), "AIRFLOW_HOME": str(home)},
        capture_output=True,
        text=True,
        check=True,
        timeout=180,
    )
    rows = next(line for line in listed.stdout.splitlines() if line.startswith("["))
    return {row["dag_id"] for row in json.loads(rows)}


def test_children_get_the_environments_airflow_first_on_path() -> None:
    env = standalone_env({"PATH": "/usr/bin"})

    assert env["PATH"].split(os.pathsep) == [str(venv_bin()), "/usr/bin"]
    assert (venv_bin() / "airflow").exists()
    assert env["AIRFLOW_HOME"] == str(REPO / "airflow-home")
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(REPO / "dags")
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("sqlite:///")
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"


def test_the_data_home_defaults_to_var_of_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    assert standalone_env({"PATH": "/usr/bin"})["RUNTIME_FACTS_HOME"] == str(tmp_path / "var")
    env = standalone_env({"AIRFLOW_HOME": str(tmp_path), "RUNTIME_FACTS_HOME": "/data/rf"})
    assert env["AIRFLOW_HOME"] == str(tmp_path.resolve())
    assert env["RUNTIME_FACTS_HOME"] == "/data/rf"


def test_cfg_values_replace_set_and_commented_lines_in_their_section() -> None:
    text = "[core]\ndags_folder = /old\n# load_examples = True\n\n[api]\nhost = 0.0.0.0\n"

    new = set_cfg_values(
        text,
        {
            ("core", "dags_folder"): "/repo/dags",
            ("core", "load_examples"): "False",
            ("api", "host"): "127.0.0.1",
            ("api", "port"): "8080",
            ("database", "sql_alchemy_conn"): "sqlite:////x.db",
        },
    )

    assert new == (
        "[core]\ndags_folder = /repo/dags\nload_examples = False\n\n"
        "[api]\nport = 8080\nhost = 127.0.0.1\n\n[database]\nsql_alchemy_conn = sqlite:////x.db\n"
    )


def test_the_banner_prints_the_kept_password_at_every_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Airflow's own standalone prints it only when it generates it, on the first start.
    (tmp_path / "simple_auth_manager_passwords.json.generated").write_text('{"admin": "s3cr3t"}')

    print_banner(8080, tmp_path, {"RUNTIME_FACTS_HOME": "/data/rf"})

    out = capsys.readouterr().out
    assert "log in as admin / s3cr3t" in out
    assert "http://localhost:8080" in out
    assert "/data/rf" in out


STUBBORN = """
import os, signal, subprocess, sys, time
from runtime_facts.airflow_standalone import Component, _become_subreaper, stop_tree

IGNORE = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
# A component whose task process runs in its own session and ignores SIGTERM, like a
# LocalExecutor task; the component itself exits on SIGTERM, orphaning it.
SPAWN = (
    "import subprocess, sys, time; "
    f"subprocess.Popen([sys.executable, '-c', {IGNORE!r}], start_new_session=True); "
    "time.sleep(600)"
)
_become_subreaper()
parent = subprocess.Popen([sys.executable, "-c", SPAWN], start_new_session=True)
stubborn = subprocess.Popen([sys.executable, "-c", IGNORE], start_new_session=True)
time.sleep(1.5)
import psutil
print(" ".join(str(p.pid) for p in psutil.Process().children(recursive=True)), flush=True)
stop_tree([Component("parent", parent), Component("stubborn", stubborn)], grace=1.0)
"""


def test_stopping_kills_what_ignores_sigterm_and_what_was_orphaned(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", STUBBORN], cwd=REPO, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stderr
    pids = [int(p) for p in result.stdout.splitlines()[0].split()]
    assert len(pids) == 3  # the component, its task process, the stubborn component
    assert "ignored SIGTERM: killing it" in result.stdout
    assert survivors([psutil.Process(p) for p in pids if psutil.pid_exists(p)]) == []


def test_a_pidfile_counts_only_while_a_launcher_runs_under_it(tmp_path: Path) -> None:
    pidfile = tmp_path / "standalone.pid"
    launcher = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)  # runtime_facts.airflow_standalone"]
    )
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        pidfile.write_text(f"{launcher.pid}\n")
        assert already_running(pidfile) == launcher.pid
        pidfile.write_text(f"{other.pid}\n")  # the pid was reused by something else
        assert already_running(pidfile) is None
    finally:
        launcher.kill()
        other.kill()
        launcher.wait()
        other.wait()
    pidfile.write_text(f"{launcher.pid}\n")  # the launcher was killed and left its file
    assert already_running(pidfile) is None


def test_a_busy_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "runtime_facts.airflow_standalone"],
            env=plain_env(tmp_path, port),
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )

    assert result.returncode == 1
    assert f"port {port} is in use" in result.stdout
    assert not (tmp_path / "airflow-home" / "standalone.pid").exists()


@pytest.mark.slow
def test_make_airflow_from_a_plain_shell_serves_and_stops_every_process(tmp_path: Path) -> None:
    port = free_port()
    make = subprocess.Popen(
        ["make", "--no-print-directory", "airflow"],
        cwd=REPO,
        env=plain_env(tmp_path, port),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        assert wait_for(lambda: healthy(port), make, STARTUP_SECONDS), "API never answered"
        pid = int((tmp_path / "airflow-home" / "standalone.pid").read_text())
        tree = psutil.Process(make.pid).children(recursive=True)
        running = live(tree)  # a short-lived helper may have exited (or be a zombie) by now
        titles = list(running.values())
        for name in ("scheduler", "dag-processor", "triggerer", "api_server"):
            assert any(name in t for t in titles), (name, titles)
        assert any("LocalExecutor" in t for t in titles), titles
        listening = {c.laddr.ip for p in running for c in _connections(p) if c.laddr.port == port}
        assert listening == {"127.0.0.1"}

        os.kill(pid, signal.SIGTERM)
        out, _ = make.communicate(timeout=90)
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait()
    text = out.decode()

    assert make.returncode == 0, text[-3000:]
    assert survivors(tree) == []
    passwords = tmp_path / "airflow-home" / "simple_auth_manager_passwords.json.generated"
    assert f"log in as admin / {json.loads(passwords.read_text())['admin']}" in text
    assert f"data home (RUNTIME_FACTS_HOME): {tmp_path / 'var'}" in text
    assert not (tmp_path / "airflow-home" / "standalone.pid").exists()
    # make setup wrote airflow.cfg and created the DB: Airflow alone finds the same DAGs
    cfg = tmp_path / "airflow-home" / "airflow.cfg"
    assert read_cfg_value(cfg, "core", "dags_folder") == str(DAGS)
    assert read_cfg_value(cfg, "core", "load_examples") == "False"
    assert read_cfg_value(cfg, "api", "host") == "127.0.0.1"
    assert read_cfg_value(cfg, "api_auth", "jwt_secret")  # Airflow's own generated file
    assert dags_listed_with_only_airflow_home(tmp_path, tmp_path / "airflow-home") == {
        "runtime_facts_ingest",
        "runtime_facts_airgap_backfill",
        "reachability_recompute",
        "runtime_facts_retention",
    }


@pytest.mark.slow
def test_a_component_dying_at_start_stops_the_others_and_fails(tmp_path: Path) -> None:
    # A certificate without its key: the API server refuses to start, the rest would run on.
    env = plain_env(tmp_path, free_port(), AIRFLOW__API__SSL_CERT=str(tmp_path / "cert.pem"))
    process = subprocess.Popen(
        [sys.executable, "-m", "runtime_facts.airflow_standalone"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    seen: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while process.poll() is None and time.monotonic() < deadline:
            try:
                seen += psutil.Process(process.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                break
            time.sleep(0.5)
        out, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    text = out.decode()

    assert process.returncode == 1, text[-3000:]
    assert "api-server exited with status" in text
    assert "SSL" in text  # the component's own error is shown
    assert {p.pid for p in seen}, "no component was started"
    assert survivors(seen) == []
