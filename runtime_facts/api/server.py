"""Serve the staging endpoint: uvicorn over h11 with a bounded request head.

uvicorn bounds neither the time a request head may take nor the number of header fields,
and its `limit_concurrency` counts open connections, so clients that never finish their
headers can make every real upload get 503. `BoundedH11Protocol` closes such clients:

- the whole request head must arrive within `serve.header_timeout_seconds` of the
  connection (or of the previous response): 408 `header_timeout`, then close;
- at most `serve.max_header_bytes` of head and `serve.max_header_count` fields: 431
  `headers_too_large` / `too_many_headers`, then close, before reading any more of it;
- at most `serve.max_connections` open connections: past it a new one gets 503
  `too_many_connections` and is closed at once.

The upload limit (`serve.max_concurrency`) is not uvicorn's: it counts only requests whose
head arrived and whose token was accepted (`ApiState.upload_slot`), so unauthenticated or
slow clients cannot take a slot.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Callable
from typing import Any

import h11
import orjson
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from runtime_facts.api.app import create_app
from runtime_facts.config import ServeSettings
from runtime_facts.errors import Reason
from runtime_facts.home import Home

LINGER_SECONDS = 2.0
LINGER_BYTES = 1 << 20
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_PHRASES = {
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


def refusal(status: int, reason: str, message: str, hint: str) -> bytes:
    """A complete `Connection: close` HTTP/1.1 response with the API's JSON error body."""
    body = orjson.dumps(
        {"error": reason, "message": message, "hint": hint, "reasonCodes": [reason], "lines": []}
    )
    head = (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"connection: close\r\n\r\n" % (status, _PHRASES[status], len(body))
    )
    return head + body


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline, a size cap and a field cap on each request head."""

    def __init__(self, *args: Any, serve: ServeSettings, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bounds = serve
        self._head = bytearray()  # the pending head, as received (at most max_header_bytes)
        self._awaiting_head = True
        self._head_timer: asyncio.TimerHandle | None = None
        self._discarding: int | None = None  # bytes dropped since the connection was refused

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.bounds.max_connections:
            self._refuse(
                503,
                Reason.TOO_MANY_CONNECTIONS,
                f"more than {self.bounds.max_connections} connections are open",
                "retry later",
            )
            return
        self._expect_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._discarding is not None:  # refused: drop the rest unread, within the linger cap
            self._discarding += len(data)
            if self._discarding > LINGER_BYTES:
                self.transport.close()
            return
        if self.transport.is_closing():
            return
        if self._awaiting_head and not self._check_head(data):
            return
        super().data_received(data)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # A pipelined request may already have been parsed from h11's buffer; then its body,
        # not a head, comes next.
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._expect_head()

    def _expect_head(self) -> None:
        """Start the clock for the next request head."""
        self._awaiting_head = True
        self._head.clear()
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(
            self.bounds.header_timeout_seconds, self._head_timed_out
        )

    def _check_head(self, data: bytes) -> bool:
        """Account `data` to the pending head; False when the connection was refused."""
        before = len(self._head)
        self._head += data[: self.bounds.max_header_bytes + 4 - before]
        if not before:
            # Blank lines before the request line are allowed (RFC 9112 §2.2), not an empty head.
            blank = len(self._head) - len(self._head.lstrip(b"\r\n"))
            del self._head[:blank]
            if not self._head:
                return True
        # Search from a little before the new bytes: the blank line may straddle two reads.
        end = _HEAD_END.search(self._head, max(0, before - 3))
        head = self._head if end is None else self._head[: end.start()]
        if len(head) > self.bounds.max_header_bytes:
            self._refuse(
                431,
                Reason.HEADERS_TOO_LARGE,
                f"the request head passes {self.bounds.max_header_bytes} bytes",
                "send fewer or shorter headers",
            )
            return False
        # A line feed ends the request line and each field but the last (a trailing one ends a
        # field whose successor has not arrived yet).
        fields = head.count(b"\n") - (1 if end is None and head.endswith(b"\n") else 0)
        if fields > self.bounds.max_header_count:
            self._refuse(
                431,
                Reason.TOO_MANY_HEADERS,
                f"the request has more than {self.bounds.max_header_count} header fields",
                "send fewer headers",
            )
            return False
        if end is not None:
            self._awaiting_head = False
            self._head.clear()
            self._cancel_head_timer()
        return True

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if not self._head:
            self.transport.close()  # nothing was sent: nobody to answer
            return
        self._refuse(
            408,
            Reason.HEADER_TIMEOUT,
            f"the request head did not arrive within {self.bounds.header_timeout_seconds:g} s",
            "send the whole request head at once",
        )

    def _refuse(self, status: int, reason: str, message: str, hint: str) -> None:
        """Answer, then close gracefully: a client still sending must get to read the answer.

        Closing a socket with unread input makes the kernel send a reset, which can destroy
        the answer in the client's buffers; so the write side is shut (FIN) and what still
        arrives is dropped unread, for at most `LINGER_SECONDS` or `LINGER_BYTES`.
        """
        self._cancel_head_timer()
        self._awaiting_head = False
        self._head.clear()
        self._discarding = 0
        self.logger.warning("refused a connection from %s: %s", self.client, message)
        self.transport.write(refusal(status, reason, message, hint))
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None


def server_config(app: Any, serve: ServeSettings, **overrides: Any) -> uvicorn.Config:
    """The uvicorn configuration of the staging endpoint (h11, bounded heads, no websockets)."""

    def protocol(*args: Any, **kwargs: Any) -> BoundedH11Protocol:
        return BoundedH11Protocol(*args, serve=serve, **kwargs)

    options: dict[str, Any] = {
        "host": serve.host,
        "port": serve.port,
        "http": protocol,
        "ws": "none",
        "server_header": False,
        "timeout_keep_alive": serve.keep_alive_seconds,
        # h11's own buffer cap backs ours up for pipelined heads already handed to it.
        "h11_max_incomplete_event_size": serve.max_header_bytes,
        # The upload limit is the app's (ApiState.upload_slot); uvicorn's counts connections.
        "limit_concurrency": None,
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)


def serve(
    home: Home,
    *,
    log_level: str = "info",
    sockets: list[socket.socket] | None = None,
    warn: Callable[[str], None] | None = None,
) -> None:
    """Serve the staging endpoint of `home` until interrupted (what `runtime-facts serve` runs).

    Args:
        home: the home whose settings (`serve.*`, `ingest.*`) and CAS the endpoint uses.
        log_level: uvicorn's log level.
        sockets: already bound sockets to serve on instead of `serve.host`/`serve.port`.
        warn: told, before serving, why protected routes cannot authenticate (no token file).
    """
    app = create_app(home)
    problem = app.state.api.tokens.problem()
    if problem and warn is not None:
        warn(f"{problem}: protected routes will answer 401/503")
    config = server_config(app, home.settings.serve, log_level=log_level)
    uvicorn.Server(config).run(sockets=sockets)
