"""Request bodies: read as a bounded stream with a stall timeout; canonical NDJSON."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request

from runtime_facts.api.errors import ApiError
from runtime_facts.errors import Reason

_DIGITS = re.compile(r"[0-9]{1,20}")


def is_gzip_encoded(content_encoding: str | None) -> bool:
    """True for `gzip`, False for none/`identity`; 415 for anything else."""
    value = (content_encoding or "").strip().lower()
    if value in ("", "identity"):
        return False
    if value in ("gzip", "x-gzip"):
        return True
    raise ApiError.of(
        Reason.UNSUPPORTED_CONTENT_ENCODING,
        f"Content-Encoding {value!r} is not supported",
        hint="send the body plain or with Content-Encoding: gzip",
    )


def _too_large(count: str, cap: int) -> ApiError:
    return ApiError.of(
        Reason.BATCH_TOO_LARGE,
        f"request body is {count} bytes; the limit is {cap} bytes",
        hint="split the batch into smaller chunks (or gzip it)",
    )


async def read_body(request: Request, *, cap: int, timeout: float) -> bytes:
    """Read the body, never holding more than `cap` bytes.

    Raises:
        ApiError: 413 when Content-Length or the bytes received pass `cap` (nothing more is
            read), 408 when no bytes arrive for `timeout` seconds, 400 on a bad Content-Length
            or when the client goes away.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        if not _DIGITS.fullmatch(declared.strip()):
            raise ApiError(400, Reason.INVALID_REQUEST, "Content-Length is not a number")
        if int(declared) > cap:
            raise _too_large(declared.strip(), cap)
    chunks: list[bytes] = []
    total = 0
    stream = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), timeout)
        except StopAsyncIteration:
            break
        except TimeoutError as exc:
            raise ApiError.of(
                Reason.BODY_TIMEOUT,
                f"no body bytes for {timeout:g} s after {total} bytes; closing",
            ) from exc
        except ClientDisconnect as exc:
            raise ApiError.of(Reason.CLIENT_DISCONNECTED, "client went away mid-body") from exc
        total += len(chunk)
        if total > cap:
            raise _too_large(f"more than {cap}", cap)
        if chunk:
            chunks.append(chunk)
    return b"".join(chunks)


def canonical_ndjson(events: list[Any]) -> bytes:
    """One event per line, keys sorted, compact, newline-terminated."""
    return b"".join(orjson.dumps(e, option=orjson.OPT_SORT_KEYS) + b"\n" for e in events)
