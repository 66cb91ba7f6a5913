"""S3-compatible object store: conditional writes for CAS, a lease lock for the commit phase.

Endpoint and credentials come from the standard `AWS_*` variables (`AWS_ENDPOINT_URL`,
`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_SESSION_TOKEN`), so the same
home works against AWS S3, MinIO, Ceph or a local test server.

Safety rests on two S3 primitives every current implementation has: `If-None-Match: *`
(create only if absent: CAS objects are never overwritten, and only one process can hold the
lock) and `If-Match: <etag>` (replace only what was read: appends to shared logs never lose a
concurrent writer's line, and an expired lock is taken over by exactly one process).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import orjson

from runtime_facts.errors import LockLostError, Reason

_PRECONDITION = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}


def split_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/prefix` → (bucket, prefix without slashes)."""
    rest = uri.removeprefix("s3://")
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ValueError(f"not an s3:// URI: {uri!r}")
    return bucket, prefix.strip("/")


def storage_options() -> dict[str, str]:
    """deltalake / object_store options from the standard AWS variables."""
    env = os.environ
    opts: dict[str, str] = {"conditional_put": "etag"}
    mapping = {
        "AWS_ENDPOINT_URL": "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN": "AWS_SESSION_TOKEN",
    }
    for var, key in mapping.items():
        if env.get(var):
            opts[key] = env[var]
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
    opts["AWS_REGION"] = region
    if opts.get("AWS_ENDPOINT_URL", "").startswith("http://"):
        opts["AWS_ALLOW_HTTP"] = "true"
    return opts


def _client() -> Any:
    import boto3
    from botocore.config import Config

    env = os.environ
    return boto3.client(
        "s3",
        endpoint_url=env.get("AWS_ENDPOINT_URL") or None,
        region_name=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
        config=Config(retries={"max_attempts": 5, "mode": "standard"}),
    )


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    error = response.get("Error", {})
    return str(error.get("Code", "")) or str(
        response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
    )


class S3ObjectStore:
    """The ObjectStore protocol over one bucket/prefix."""

    def __init__(self, uri: str, client: Any = None) -> None:
        self.uri = uri.rstrip("/")
        self.bucket, self.prefix = split_s3_uri(uri)
        self.client = client or _client()

    def _key(self, key: str) -> str:
        parts = key.split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"invalid object key {key!r}")
        return f"{self.prefix}/{key}" if self.prefix else key

    def get(self, key: str) -> bytes:
        """Read an object; FileNotFoundError when missing."""
        return self.get_with_etag(key)[0]

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        """Read an object and the ETag it had."""
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except self.client.exceptions.NoSuchKey as exc:
            raise FileNotFoundError(key) from exc
        return response["Body"].read(), str(response["ETag"])

    def read_from(self, key: str, offset: int) -> bytes:
        """Bytes from `offset` to the end (b"" when the object is shorter)."""
        if offset <= 0:
            return self.get(key)
        try:
            response = self.client.get_object(
                Bucket=self.bucket, Key=self._key(key), Range=f"bytes={offset}-"
            )
        except self.client.exceptions.NoSuchKey as exc:
            raise FileNotFoundError(key) from exc
        except Exception as exc:
            if _code(exc) in ("InvalidRange", "416"):
                return b""
            raise
        return bytes(response["Body"].read())

    def etag(self, key: str) -> str:
        """The ETag an object has now; FileNotFoundError when missing."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                raise FileNotFoundError(key) from exc
            raise
        return str(head["ETag"])

    def exists(self, key: str) -> bool:
        """True when the object exists."""
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def size(self, key: str) -> int:
        """Size in bytes; FileNotFoundError when missing."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                raise FileNotFoundError(key) from exc
            raise
        return int(head["ContentLength"])

    def local_path(self, key: str) -> Path | None:
        """Objects in S3 have no local path."""
        return None

    def put(self, key: str, data: bytes, *, overwrite: bool = True) -> bool:
        """Write in one request (atomic); overwrite=False uses If-None-Match. True if written."""
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key), "Body": data}
        if not overwrite:
            args["IfNoneMatch"] = "*"
        try:
            self.client.put_object(**args)
        except Exception as exc:
            if not overwrite and _code(exc) in _PRECONDITION:
                return False
            raise
        return True

    def replace(self, key: str, data: bytes, etag: str | None) -> bool:
        """Compare-and-swap: write only if the object still has `etag` (None: is absent)."""
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key), "Body": data}
        if etag is None:
            args["IfNoneMatch"] = "*"
        else:
            args["IfMatch"] = etag
        try:
            self.client.put_object(**args)
        except Exception as exc:
            if _code(exc) in _PRECONDITION:
                return False
            raise
        return True

    def append(self, key: str, data: bytes) -> None:
        """Append by compare-and-swap on the whole object; a concurrent append is retried."""
        for _ in range(100):
            etag: str | None
            try:
                current, etag = self.get_with_etag(key)
            except FileNotFoundError:
                current, etag = b"", None
            if self.replace(key, current + data, etag):
                return
            time.sleep(0.01)
        raise TimeoutError(f"could not append to {key}: too much contention")

    def delete(self, key: str) -> None:
        """Remove an object if present."""
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def list(self, prefix: str) -> Iterator[str]:
        """Keys directly under a prefix folder, sorted."""
        folder = self._key(prefix.rstrip("/")) + "/"
        paginator = self.client.get_paginator("list_objects_v2")
        keys: list[str] = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=folder, Delimiter="/"):
            keys.extend(item["Key"] for item in page.get("Contents", []))
        base = f"{self.prefix}/" if self.prefix else ""
        for key in sorted(keys):
            yield key.removeprefix(base)


class Fence(Protocol):
    """What a commit checks before each durable write: is the lock still ours?"""

    def check(self) -> None:
        """Raise `LockLostError` when the lock can no longer be trusted."""


class _LocalFence:
    """An flock cannot lapse while its process lives."""

    def check(self) -> None:
        return None


LOCAL_FENCE: Fence = _LocalFence()


class MultiFence:
    """Several leases held together (a home-wide operation): all must still be ours."""

    def __init__(self, locks: list[S3Lock]) -> None:
        self.locks = locks

    def check(self) -> None:
        for lock in self.locks:
            lock.check()


class S3Lock:
    """A lease lock object, renewed while held, that fences a holder whose lease lapsed.

    Acquire creates the object with If-None-Match (or takes over an expired one with If-Match).
    While held, a daemon thread renews the lease every third of its length by compare-and-swap
    on the ETag it last wrote, so a commit may take longer than one lease. `check()` refuses
    (raises `LockLostError`) once the lease can no longer be trusted: a renewal found another
    owner, or no renewal succeeded within the lease less a safety margin (a holder that was
    paused, or cut off from the store, must assume it was taken over). Writers call it right
    before each durable write, so a lapsed holder commits nothing.
    """

    def __init__(self, store: S3ObjectStore, key: str, *, lease_seconds: float = 120.0) -> None:
        self.store = store
        self.key = key
        self.lease = lease_seconds
        self.owner = uuid.uuid4().hex
        self._etag: str | None = None
        self._valid_until = 0.0
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _body(self) -> bytes:
        return orjson.dumps({"owner": self.owner, "expires_at": time.time() + self.lease})

    def __enter__(self) -> S3Lock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _take(self, etag: str | None) -> bool:
        started = time.monotonic()
        if not self.store.replace(self.key, self._body(), etag):
            return False
        self._etag = self.store.etag(self.key)
        # The margin keeps a holder from writing in the last quarter of its lease.
        self._valid_until = started + self.lease * 0.75
        return True

    def acquire(self, timeout: float = 600.0) -> None:
        """Block until the lock is ours (polling with backoff), then keep renewing it."""
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            if self._take(None):
                break
            with contextlib.suppress(FileNotFoundError):
                raw, etag = self.store.get_with_etag(self.key)
                holder = orjson.loads(raw)
                if float(holder.get("expires_at", 0)) < time.time() and self._take(etag):
                    break  # the previous holder died or stalled; its lease ran out
            if time.monotonic() > deadline:
                raise TimeoutError(f"commit lock {self.key} still held after {timeout:.0f}s")
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
        self._lost = None
        self._stop.clear()
        self._thread = threading.Thread(target=self._renew, name=f"lease:{self.key}", daemon=True)
        self._thread.start()

    def wait_free(self, timeout: float = 600.0) -> None:
        """Block while another process holds a live lease on this key."""
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            try:
                holder = orjson.loads(self.store.get(self.key))
            except FileNotFoundError:
                return
            if float(holder.get("expires_at", 0)) < time.time():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"lock {self.key} still held after {timeout:.0f}s")
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def _renew(self) -> None:
        while not self._stop.wait(self.lease / 3):
            try:
                if not self._take(self._etag):
                    self._lost = "another process took the lock over after its lease ran out"
                    return
            except Exception as exc:  # the store is unreachable: the lease will lapse
                self._lost = f"the lease could not be renewed: {exc}"
                return

    def check(self) -> None:
        """Raise `LockLostError` unless the lease is still ours and has time left."""
        if self._lost is None and time.monotonic() > self._valid_until:
            self._lost = f"the lease of {self.lease:.0f}s lapsed before it was renewed"
        if self._lost is not None:
            raise LockLostError(
                Reason.COMMIT_LOCK_LOST,
                f"commit lock {self.key} is no longer held: {self._lost}; nothing was written",
                hint="another worker may be committing the same tenant; the run can be retried",
            )

    def release(self) -> None:
        """Stop renewing and give the lock back if we still hold it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._lost is None and self._etag is not None:
            # Delete only the object we wrote: a takeover since then has another ETag.
            with contextlib.suppress(FileNotFoundError):
                if self.store.etag(self.key) == self._etag:
                    self.store.delete(self.key)
        self._etag = None
