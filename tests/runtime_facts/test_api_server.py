"""The staging endpoint's server bounds request heads: slow, huge or crowded heads are closed.

Real uvicorn on 127.0.0.1 (free port) with the endpoint's own protocol; raw sockets play the
hostile clients. Every loop is bounded in count and time.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest

from runtime_facts.home import Home
from tests.runtime_facts.api_harness import (
    auth,
    live_api,
    make_home,
    raw_request,
    read_response,
    status_of,
)

NDJSON = "/signals/runtime-facts/ndjson"
BATCH = b'{"symbolId":"sym:a","hitCount":1}\n'
HEAD_TIMEOUT = 1.5
SLOW_CLIENTS = 6
DRIBBLE_SECONDS = 0.3
SLOW_CLIENT_CAP_SECONDS = 15.0


def _home(tmp_path: Path, **serve: object) -> Home:
    serve.setdefault("header_timeout_seconds", HEAD_TIMEOUT)
    return make_home(tmp_path, **serve)


def _error(response: bytes) -> str:
    return str(orjson.loads(response.partition(b"\r\n\r\n")[2])["error"])


def _upload(client: httpx.Client, i: int) -> httpx.Response:
    return client.post(
        NDJSON,
        params={"scanId": "s-1"},
        content=b'{"symbolId":"sym:u%d","hitCount":1}\n' % i,
        headers={**auth("writer"), "X-Tenant": "acme", "X-Callgraph-Id": "cg-1"},
    )


class SlowClient(threading.Thread):
    """Sends a request line, then one header line every DRIBBLE_SECONDS, never the blank line."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.closed_after: float | None = None
        self.response = b""

    def run(self) -> None:
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", self.port), timeout=DRIBBLE_SECONDS) as conn:
            conn.sendall(f"POST {NDJSON} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode())
            n = 0
            while time.monotonic() - started < SLOW_CLIENT_CAP_SECONDS:
                try:
                    chunk = conn.recv(65536)
                except TimeoutError:
                    try:
                        conn.sendall(b"X-Dribble-%d: 1\r\n" % n)
                    except OSError:
                        break
                    n += 1
                    continue
                except OSError:
                    break
                if not chunk:
                    break
                self.response += chunk
            self.closed_after = time.monotonic() - started


def test_slow_header_clients_are_closed_in_time_while_uploads_succeed(tmp_path: Path) -> None:
    home = _home(tmp_path, max_concurrency=4)
    with live_api(home) as live, httpx.Client(base_url=live.url, timeout=10) as client:
        slow = [SlowClient(live.port) for _ in range(SLOW_CLIENTS)]
        for c in slow:
            c.start()
        time.sleep(DRIBBLE_SECONDS * 2)  # every slow client is connected and dribbling
        statuses = [_upload(client, i).status_code for i in range(8)]
        for c in slow:
            c.join(SLOW_CLIENT_CAP_SECONDS + 5)
    assert statuses == [202] * 8
    for c in slow:
        assert c.closed_after is not None
        assert c.closed_after < HEAD_TIMEOUT + 3.0  # closed by the server, not by the cap
        assert status_of(c.response) == 408
        assert _error(c.response) == "header_timeout"


def test_the_next_head_on_a_kept_alive_connection_is_bounded_too(tmp_path: Path) -> None:
    home = _home(tmp_path, keep_alive_seconds=30)
    with live_api(home) as live, socket.create_connection(("127.0.0.1", live.port), 10) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status_of(read_response(conn)) == 200
        started = time.monotonic()
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        response = read_response(conn)
        elapsed = time.monotonic() - started
    assert status_of(response) == 408
    assert _error(response) == "header_timeout"
    assert elapsed < HEAD_TIMEOUT + 3.0


def test_an_oversized_head_gets_431_without_being_read(tmp_path: Path) -> None:
    home = _home(tmp_path, max_header_bytes=16 * 1024)
    total = 32 * 1024 * 1024
    chunk = b"X-Big: " + b"a" * (64 * 1024) + b"\r\n"
    sent = 0
    response = b""
    with live_api(home) as live, socket.create_connection(("127.0.0.1", live.port), 10) as conn:
        conn.sendall(f"POST {NDJSON} HTTP/1.1\r\nHost: x\r\n".encode())
        while sent < total:
            if select.select([conn], [], [], 0)[0]:
                response = read_response(conn)
                break
            try:
                conn.sendall(chunk)
            except OSError:
                break
            sent += len(chunk)
        if not response:
            response = read_response(conn)
    assert status_of(response) == 431
    assert _error(response) == "headers_too_large"
    assert sent < 4 * 1024 * 1024  # refused after the cap, not after 32 MiB


@pytest.mark.parametrize(("count", "status"), [(64, 401), (65, 431)])
def test_header_fields_are_capped(tmp_path: Path, count: int, status: int) -> None:
    home = _home(tmp_path, max_header_count=64)
    fields = "".join(f"X-F{i}: v\r\n" for i in range(count - 1))  # plus Host
    with live_api(home) as live:
        response = raw_request(
            live.port, f"GET /signals/reachability/facts HTTP/1.1\r\nHost: x\r\n{fields}\r\n"
        )
    assert status_of(response) == status
    if status == 431:
        assert _error(response) == "too_many_headers"


def test_unauthenticated_clients_never_hold_an_upload_slot(tmp_path: Path) -> None:
    home = _home(tmp_path, max_concurrency=1)
    head = (
        f"POST {NDJSON}?scanId=s-1 HTTP/1.1\r\nHost: x\r\nX-Tenant: acme\r\n"
        "X-Callgraph-Id: cg-1\r\nContent-Length: 1000\r\n\r\n"
    )
    with live_api(home) as live, httpx.Client(base_url=live.url, timeout=10) as client:
        # Five clients without a token send their head, then stall in the body: each is
        # answered 401 at once, and none keeps the one slot from a real upload.
        answers = [raw_request(live.port, head, [b"{"], timeout=5) for _ in range(5)]
        assert [status_of(a) for a in answers] == [401] * 5
        assert _upload(client, 1).status_code == 202


def test_uploads_past_the_limit_get_503_server_busy(tmp_path: Path) -> None:
    home = _home(tmp_path, max_concurrency=1, body_timeout_seconds=5)
    head = (
        f"POST {NDJSON}?scanId=s-1 HTTP/1.1\r\nHost: x\r\nX-Tenant: acme\r\n"
        f"X-Callgraph-Id: cg-1\r\nAuthorization: {auth('writer')['Authorization']}\r\n"
        f"Content-Length: {len(BATCH) + 1}\r\n\r\n"
    )
    with live_api(home) as live, httpx.Client(base_url=live.url, timeout=10) as client:
        holder = socket.create_connection(("127.0.0.1", live.port), 10)
        holder.sendall(head.encode() + BATCH)  # one byte short: holds the slot
        time.sleep(0.5)
        busy = _upload(client, 1)
        holder.sendall(b"\n")
        assert status_of(read_response(holder)) == 202
        holder.close()
        after = _upload(client, 2)
    assert busy.status_code == 503
    assert busy.json()["error"] == "server_busy"
    assert busy.headers["Retry-After"] == "1"
    assert after.status_code == 202


def test_connections_past_the_cap_are_refused_at_once(tmp_path: Path) -> None:
    home = _home(tmp_path, max_connections=3, header_timeout_seconds=10)
    with live_api(home) as live:
        idle = [socket.create_connection(("127.0.0.1", live.port), 10) for _ in range(3)]
        time.sleep(0.3)
        with socket.create_connection(("127.0.0.1", live.port), 5) as extra:
            response = read_response(extra)
        for s in idle:
            s.close()
    assert status_of(response) == 503
    assert _error(response) == "too_many_connections"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_runtime_facts_serve_runs_the_bounded_server(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    port = _free_port()
    env = {**os.environ, "RUNTIME_FACTS__SERVE__MAX_HEADER_COUNT": "8"}
    cmd = [str(Path(sys.executable).parent / "runtime-facts"), "--home", str(home.root), "serve",
           "--port", str(port), "--token-file", str(tmp_path / "tokens.json")]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
                assert time.monotonic() < deadline, "runtime-facts serve did not start"
                time.sleep(0.2)
        fields = "".join(f"X-F{i}: v\r\n" for i in range(9))
        response = raw_request(port, f"GET /healthz HTTP/1.1\r\nHost: x\r\n{fields}\r\n")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stderr:
            proc.stderr.close()
    assert status_of(response) == 431
    assert _error(response) == "too_many_headers"
