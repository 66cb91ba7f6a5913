"""The servers of a one-machine distributed Airflow, started as child processes and stopped.

PostgreSQL (Airflow's metadata DB) and Redis (the Celery broker) come from Debian packages
(`scripts/distributed-deps.sh` installs them when missing), the moto S3 server and Airflow
from the project's environment. Every server listens on 127.0.0.1 on a free port, keeps its
data under one work folder, and is stopped with every process it started by `Services.stop`
(the demo calls it in a `finally`, so also on failure or Ctrl-C).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ServiceError(RuntimeError):
    """A server did not start or a command failed; the message ends with its log's tail."""


def free_port() -> int:
    """A TCP port nothing listens on now (127.0.0.1)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log file."""
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


def wait_for(check: Any, what: str, timeout: float, log: Path | None = None) -> None:
    """Poll `check()` until it is true; ServiceError (with the log's tail) after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except ServiceError:
            raise
        except Exception:  # not up yet: refused, reset, 404 ...
            pass
        time.sleep(0.5)
    raise ServiceError(f"{what} not ready after {timeout:.0f}s\n{tail(log) if log else ''}")


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def postgres_bin() -> Path:
    """The folder of the newest PostgreSQL server binaries installed from Debian."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise ServiceError("PostgreSQL is not installed: run scripts/distributed-deps.sh")


@dataclass
class Service:
    """One started server or worker."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    stop_signal: int = signal.SIGTERM


@dataclass
class Services:
    """Everything started under `workdir`, in start order (stopped in reverse)."""

    workdir: Path
    started: list[Service] = field(default_factory=list)

    def path(self, *parts: str) -> Path:
        """A folder under the work folder (created)."""
        path = self.workdir.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def start(
        self,
        name: str,
        args: list[str],
        env: dict[str, str] | None = None,
        *,
        user: int | None = None,
        stop_signal: int = signal.SIGTERM,
    ) -> Service:
        """Start a process in a session of its own, output to `<workdir>/logs/<name>.log`."""
        log = self.path("logs") / f"{name}.log"
        extra: dict[str, Any] = {}
        if user is not None:
            entry = pwd.getpwuid(user)
            extra = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        with log.open("ab") as out:
            proc = subprocess.Popen(
                args,
                env=env,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **extra,
            )
        service = Service(name, proc, log, stop_signal)
        self.started.append(service)
        return service

    def run(self, name: str, args: list[str], env: dict[str, str] | None, timeout: float) -> None:
        """Run a command to completion; ServiceError with its log's tail if it fails."""
        service = self.start(name, args, env)
        try:
            rc = service.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = None
        finally:
            self._stop(service)
            self.started.remove(service)
        if rc != 0:
            raise ServiceError(f"{name} failed ({rc}):\n{tail(service.log)}")

    def check_alive(self) -> None:
        """ServiceError naming the first long-running process that has exited."""
        for service in self.started:
            if service.proc.poll() is not None:
                raise ServiceError(
                    f"{service.name} exited with {service.proc.returncode}:\n{tail(service.log)}"
                )

    def listening(self) -> set[tuple[str, int]]:
        """(address, port) of every listening TCP socket of the started processes' trees."""
        import psutil

        found: set[tuple[str, int]] = set()
        for service in self.started:
            with suppress(psutil.NoSuchProcess):
                root = psutil.Process(service.proc.pid)
                for proc in [root, *root.children(recursive=True)]:
                    with suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                        for conn in proc.net_connections(kind="tcp"):
                            if conn.status == psutil.CONN_LISTEN:
                                found.add((str(conn.laddr.ip), int(conn.laddr.port)))
        return found

    def stop(self) -> None:
        """Stop everything started, last first, each with every process it started."""
        while self.started:
            self._stop(self.started.pop())

    @staticmethod
    def _stop(service: Service, timeout: float = 20.0) -> None:
        import psutil

        try:
            root = psutil.Process(service.proc.pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            tree = []
        # Task processes start sessions of their own: collect them before their parent exits.
        if tree:
            with suppress(psutil.NoSuchProcess):
                tree[0].send_signal(service.stop_signal)
        _, alive = psutil.wait_procs(tree[:1], timeout=timeout)
        for proc in tree[1:] + alive:
            with suppress(psutil.NoSuchProcess):
                proc.terminate()
        _, alive = psutil.wait_procs(tree, timeout=5)
        for proc in alive:
            with suppress(psutil.NoSuchProcess):
                proc.kill()
        with suppress(subprocess.TimeoutExpired):
            service.proc.wait(timeout=5)

    # -- the servers ---------------------------------------------------------------------

    def start_postgres(self, data_root: Path) -> str:
        """A fresh cluster in `data_root` with database and role `airflow`; its SQLAlchemy URL.

        Run as the `postgres` user when this process is root (PostgreSQL refuses root).
        Durability is off (fsync, synchronous commit): the metadata DB of a demo is disposable.
        """
        import psycopg2

        binaries = postgres_bin()
        user = pwd.getpwnam("postgres").pw_uid if os.geteuid() == 0 else None
        data_root.mkdir(parents=True, exist_ok=True)
        data = data_root / "data"
        superuser_password = secrets.token_hex(16)
        password_file = data_root / "superuser-password"
        password_file.write_text(superuser_password + "\n")
        if user is not None:
            for path in (data_root, password_file):
                os.chown(path, user, -1)
        password_file.chmod(0o600)
        initdb = [str(binaries / "initdb"), "-D", str(data), "-U", "postgres"]
        initdb += ["-A", "scram-sha-256", "--pwfile", str(password_file), "-E", "UTF8"]
        initdb += ["--locale=C", "--no-sync"]
        service = self.start("postgres-initdb", initdb, user=user)
        if service.proc.wait(timeout=180) != 0:
            raise ServiceError(f"initdb failed:\n{tail(service.log)}")
        self.started.remove(service)
        port = free_port()
        server = [str(binaries / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port)]
        server += ["-k", "", "-c", "fsync=off", "-c", "synchronous_commit=off"]
        server += ["-c", "full_page_writes=off", "-c", "max_connections=200"]
        pg = self.start("postgres", server, user=user, stop_signal=signal.SIGINT)

        def connect() -> Any:
            return psycopg2.connect(
                host="127.0.0.1",
                port=port,
                user="postgres",
                password=superuser_password,
                dbname="postgres",
                connect_timeout=3,
            )

        wait_for(lambda: connect().close() is None, "postgres", 120, pg.log)
        password = secrets.token_hex(16)
        conn = connect()
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE ROLE airflow LOGIN PASSWORD %s", [password])
            cur.execute("CREATE DATABASE airflow OWNER airflow")
        conn.close()
        return f"postgresql+psycopg2://airflow:{password}@127.0.0.1:{port}/airflow"

    def start_redis(self) -> str:
        """A Redis without persistence on 127.0.0.1; its broker URL."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServiceError("redis-server is not installed: run scripts/distributed-deps.sh")
        port = free_port()
        args = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
        args += ["--appendonly", "no", "--dir", str(self.path("redis")), "--daemonize", "no"]
        redis = self.start("redis", args)

        def pong() -> bool:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")

        wait_for(pong, "redis", 60, redis.log)
        return f"redis://127.0.0.1:{port}/0"

    def start_moto(self) -> str:
        """The moto S3 server on 127.0.0.1; its endpoint URL."""
        binary = Path(sys.executable).with_name("moto_server")
        port = free_port()
        moto = self.start("moto", [str(binary), "-H", "127.0.0.1", "-p", str(port)])
        wait_for(lambda: _listening(port), "moto_server", 60, moto.log)
        return f"http://127.0.0.1:{port}"
