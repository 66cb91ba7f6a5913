"""`make airflow`: Airflow's four components on this repo's DAGs, on one machine.

`python -m runtime_facts.airflow_standalone` starts the scheduler (LocalExecutor), the
dag-processor, the triggerer and the API server (UI) as children of this process, with the
environment's `airflow` (`.venv/bin`, whatever PATH says), Airflow's home `<repo>/airflow-home`
(or `AIRFLOW_HOME`), SQLite, the repo's `dags/`, examples off, the UI on
http://localhost:8080 (`AIRFLOW__API__PORT`), bound to 127.0.0.1 only. The data home is
`RUNTIME_FACTS_HOME`, default `./var`, the same as `make demo`'s.

It replaces `airflow standalone`, which finds `airflow` on PATH, keeps running when a component
dies and, stopped, leaves task workers behind. Here: a component that exits stops everything
and the exit status is 1; SIGTERM, SIGINT or SIGHUP (Ctrl-C, `kill $(cat
airflow-home/standalone.pid)`) sends SIGTERM to every process it started, task processes
included, and SIGKILL to whatever is left after a grace period. The admin password is printed
at every start.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

import orjson
import psutil

from runtime_facts.airflow.pools import pool_command
from runtime_facts.airflow_home import (
    API_HOST,
    DEFAULT_AIRFLOW_HOME,
    data_home,
    local_settings,
    venv_bin,
    write_airflow_cfg,
)

COMPONENTS = ("scheduler", "dag-processor", "triggerer", "api-server")
GRACE_SECONDS = 15.0
PR_SET_CHILD_SUBREAPER = 36


def standalone_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment every component is started with."""
    env = dict(os.environ if environ is None else environ)
    airflow_home = Path(env.get("AIRFLOW_HOME") or DEFAULT_AIRFLOW_HOME).resolve()
    env.update(local_settings(airflow_home, env))
    env["AIRFLOW__CORE__EXECUTOR"] = "LocalExecutor"
    scripts = str(venv_bin())
    rest = [p for p in env.get("PATH", os.defpath).split(os.pathsep) if p and p != scripts]
    env["PATH"] = os.pathsep.join([scripts, *rest])
    env["RUNTIME_FACTS_HOME"] = data_home(env.get("RUNTIME_FACTS_HOME"))
    return env


def say(line: str, name: str = "standalone") -> None:
    """One line of output, prefixed by the component it comes from."""
    sys.stdout.write(f"{name:13} | {line}\n")
    sys.stdout.flush()


@dataclass
class Component:
    """One running Airflow component and the last lines it wrote."""

    name: str
    process: subprocess.Popen[bytes]
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=15))

    def pump(self, stream: IO[bytes]) -> None:
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip()
            self.tail.append(line)
            say(line, self.name)


def _become_subreaper() -> None:
    # Task processes start their own process groups, and a worker whose parent dies is
    # re-parented: as a subreaper this process stays their ancestor, so stop() finds them all.
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _reap() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def _alive(proc: psutil.Process) -> bool:
    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def stop_tree(components: list[Component], grace: float = GRACE_SECONDS) -> None:
    """SIGTERM to each component's group and every descendant, SIGKILL after `grace` s."""
    me = psutil.Process()
    procs = me.children(recursive=True)
    for component in components:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(component.process.pid, signal.SIGTERM)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p) for p in procs):
        time.sleep(0.2)
        _reap()  # orphans re-parented to this process exit as its zombies
    for proc in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            say(f"pid {proc.pid} ({proc.name()}) ignored SIGTERM: killing it")
            proc.kill()
    for component in components:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(component.process.pid, signal.SIGKILL)
        component.process.wait()
    psutil.wait_procs(me.children(recursive=True), timeout=5)
    _reap()


def port_in_use(port: int) -> bool:
    """True when something already listens on 127.0.0.1:port."""
    with socket.socket() as sock:
        try:
            sock.bind((API_HOST, port))
        except OSError:
            return True
    return False


def healthy(port: int) -> bool:
    """True when the API server answers its health endpoint."""
    url = f"http://{API_HOST}:{port}/api/v2/monitor/health"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def admin_password(airflow_home: Path) -> str | None:
    """The generated admin password (SimpleAuthManager keeps it in Airflow's home)."""
    path = airflow_home / "simple_auth_manager_passwords.json.generated"
    try:
        return str(orjson.loads(path.read_bytes())["admin"])
    except (OSError, KeyError, orjson.JSONDecodeError):
        return None


def already_running(pidfile: Path) -> int | None:
    """The pid of a live launcher named in `pidfile`, else None (missing, stale or reused)."""
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        cmdline = " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return None  # gone: a stale file from a launcher that was killed
    return pid if pid != os.getpid() and "airflow_standalone" in cmdline else None


def run(env: dict[str, str]) -> int:
    """Start the components, supervise them, stop them all; returns the exit status."""
    airflow = venv_bin() / "airflow"
    airflow_home = Path(env["AIRFLOW_HOME"])
    port = int(env["AIRFLOW__API__PORT"])
    pidfile = airflow_home / "standalone.pid"
    if not airflow.exists():
        say(f"{airflow} is missing: run `make setup` first")
        return 1
    if (pid := already_running(pidfile)) is not None:
        say(f"already running (pid {pid}); stop it with: kill {pid}")
        return 1
    if port_in_use(port):
        say(f"port {port} is in use: stop what listens there, or set AIRFLOW__API__PORT")
        return 1
    settings = local_settings(airflow_home, env)
    say(f"Airflow home: {write_airflow_cfg(airflow_home, settings).parent}")
    say(f"runtime-facts home: {env['RUNTIME_FACTS_HOME']}")
    say(f"DAGs folder: {env['AIRFLOW__CORE__DAGS_FOLDER']}")
    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        say(f"{signal.Signals(signum).name}: stopping every component")
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    _become_subreaper()
    pidfile.write_text(f"{os.getpid()}\n")
    try:
        return _supervise(airflow, env, port, airflow_home, stop)
    finally:
        pidfile.unlink(missing_ok=True)


def _supervise(
    airflow: Path, env: dict[str, str], port: int, airflow_home: Path, stop: threading.Event
) -> int:
    say("migrating the metadata DB")
    migrate = subprocess.run(
        [str(airflow), "db", "migrate"], env=env, capture_output=True, text=True, check=False
    )
    if migrate.returncode != 0:
        for line in (migrate.stdout + migrate.stderr).splitlines()[-15:]:
            say(line, "db migrate")
        say(f"`airflow db migrate` failed (exit {migrate.returncode})")
        return 1
    pool = subprocess.run(
        pool_command(str(airflow)), env=env, capture_output=True, text=True, check=False
    )
    if pool.returncode != 0:
        say(f"`airflow pools set` failed (exit {pool.returncode}): {pool.stderr.strip()[-300:]}")
        return 1
    components = []
    for name in COMPONENTS:
        process = subprocess.Popen(
            [str(airflow), name],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        components.append(Component(name, process))
    pumps = []
    for component in components:
        assert component.process.stdout is not None
        pumps.append(threading.Thread(target=component.pump, args=(component.process.stdout,)))
        pumps[-1].daemon = True
        pumps[-1].start()
    status, ready = 0, False
    while not stop.wait(0.5):
        dead = next((c for c in components if c.process.poll() is not None), None)
        if dead is not None:
            say(f"{dead.name} exited with status {dead.process.returncode}; stopping the others")
            status = 1
            break
        if not ready and healthy(port):
            ready = True
            print_banner(port, airflow_home, env)
    stop_tree(components)
    for pump in pumps:
        pump.join(timeout=2)  # the components' last lines
    say("stopped" if status == 0 else "stopped after a component failed (its output is above)")
    return status


def print_banner(port: int, airflow_home: Path, env: dict[str, str]) -> None:
    """What a newcomer needs once the UI answers: address, login, homes, how to stop."""
    password = admin_password(airflow_home)
    say("")
    say(f"Airflow is ready: http://localhost:{port}  (listening on {API_HOST} only)")
    if password is None:
        say(f"log in as admin; the password is in {airflow_home} (simple auth manager)")
    else:
        say(f"log in as admin / {password}")
        say(f"  (kept in {airflow_home / 'simple_auth_manager_passwords.json.generated'})")
    say(f"data home (RUNTIME_FACTS_HOME): {env['RUNTIME_FACTS_HOME']}")
    say(f"stop: Ctrl-C, or kill {os.getpid()} (also in {airflow_home / 'standalone.pid'})")
    say("")


def main() -> None:
    """Entry point of `make airflow`."""
    sys.exit(run(standalone_env()))


if __name__ == "__main__":
    main()
