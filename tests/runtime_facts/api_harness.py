"""A real uvicorn server on 127.0.0.1 (free port, background thread) for API tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import uvicorn

from runtime_facts.api import create_app
from runtime_facts.api.auth import SCOPE_READ, SCOPE_RECOMPUTE, SCOPE_WRITE, hash_token
from runtime_facts.api.server import server_config
from runtime_facts.config import IngestSettings, ServeSettings, Settings
from runtime_facts.home import Home

# name -> (token, tenant, scopes)
TOKENS: dict[str, tuple[str, str, list[str]]] = {
    "all": ("tok-all-acme", "acme", [SCOPE_WRITE, SCOPE_READ, SCOPE_RECOMPUTE]),
    "writer": ("tok-writer-acme", "acme", [SCOPE_WRITE]),
    "reader": ("tok-reader-acme", "acme", [SCOPE_READ]),
    "globex": ("tok-all-globex", "globex", [SCOPE_WRITE, SCOPE_READ, SCOPE_RECOMPUTE]),
}


def auth(name: str = "all") -> dict[str, str]:
    """Authorization header of one of the test tokens."""
    return {"Authorization": f"Bearer {TOKENS[name][0]}"}


def write_token_file(path: Path) -> Path:
    """The test tokens' hashes, in the documented format."""
    doc = {
        "tokens": [
            {"sha256": hash_token(tok), "tenant": tenant, "scopes": scopes, "name": name}
            for name, (tok, tenant, scopes) in TOKENS.items()
        ]
    }
    path.write_bytes(orjson.dumps(doc))
    return path


def make_home(tmp_path: Path, *, ingest: dict[str, Any] | None = None, **serve: Any) -> Home:
    """A home under tmp_path with the test token file and the given setting overrides."""
    settings = Settings.load(str(tmp_path / "home"))
    serve.setdefault("token_file", str(write_token_file(tmp_path / "tokens.json")))
    settings = settings.replace(
        serve=ServeSettings.validate({**settings.serve.to_dict(), **serve}),
        ingest=IngestSettings.validate({**settings.ingest.to_dict(), **(ingest or {})}),
    )
    return Home(settings)


@dataclass
class Live:
    """A running server."""

    url: str
    port: int
    server: uvicorn.Server


@contextmanager
def serve_asgi(app: Any, **config: Any) -> Iterator[Live]:
    """Run an ASGI app with uvicorn on a free loopback port until the block ends."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config.setdefault("log_config", None)
    config.setdefault("log_level", "warning")
    serve = config.pop("serve", None)
    if serve is None:
        server = uvicorn.Server(uvicorn.Config(app, lifespan="on", **config))
    else:  # the staging endpoint's own server configuration
        server = uvicorn.Server(server_config(app, serve, lifespan="on", **config))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield Live(f"http://127.0.0.1:{port}", port, server)
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


@contextmanager
def live_api(home: Home, **config: Any) -> Iterator[Live]:
    """The staging endpoint for `home`, served for real, as `runtime-facts serve` serves it."""
    with serve_asgi(create_app(home), serve=home.settings.serve, **config) as live:
        yield live


def raw_request(
    port: int, head: str, body_parts: Sequence[bytes] = (), *, timeout: float = 10
) -> bytes:
    """Send a request over a plain socket and read until the server closes or times out."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(head.encode("latin-1"))
        for part in body_parts:
            conn.sendall(part)
        return read_response(conn)


def read_response(conn: socket.socket) -> bytes:
    """Bytes until the headers and Content-Length body are in, or the peer closes."""
    data = b""
    while True:
        try:
            chunk = conn.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        data += chunk
        head, sep, rest = data.partition(b"\r\n\r\n")
        if sep:
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length" and len(rest) >= int(value):
                    return data
    return data


def status_of(response: bytes) -> int:
    """Status code of a raw HTTP response."""
    return int(response.split(b" ", 2)[1])
