"""S3-compatible object store: conditional writes for CAS, a lease lock for the commit phase.

Endpoint and credentials come from the standard `AWS_*` variables (`AWS_ENDPOINT_URL`,
`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_SESSION_TOKEN`), so the same
home works against AWS S3, MinIO, Ceph or a local test server.

Safety rests on two S3 primitives every current implementation has: `If-None-Match: *`
(create only if absent: CAS objects and log segments are never overwritten, and only one
process can hold the lock) and `If-Match: <etag>` (replace only what was read: an expired lock
is taken over by exactly one process). Shared logs are never rewritten: each append is a new
segment object (`runtime_facts.stores.segments`), so its cost does not grow with history.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

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

    def delete(self, key: str) -> None:
        """Remove an object if present."""
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def list(self, prefix: str, *, start_after: str | None = None) -> Iterator[str]:
        """Keys directly under a prefix folder, sorted; only those after `start_after`.

        `start_after` is passed to the server (ListObjectsV2 `StartAfter`), so an incremental
        reader of an append-only folder lists only what is new.
        """
        folder = self._key(prefix.rstrip("/")) + "/"
        args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": folder, "Delimiter": "/"}
        if start_after is not None:
            args["StartAfter"] = self._key(start_after)
        paginator = self.client.get_paginator("list_objects_v2")
        keys: list[str] = []
        for page in paginator.paginate(**args):
            keys.extend(item["Key"] for item in page.get("Contents", []))
        base = f"{self.prefix}/" if self.prefix else ""
        for key in sorted(keys):
            yield key.removeprefix(base)

    def folders(self, prefix: str) -> tuple[str, ...]:
        """Names of the folders (common prefixes) directly under a prefix folder, sorted."""
        folder = self._key(prefix.rstrip("/")) + "/"
        paginator = self.client.get_paginator("list_objects_v2")
        names: list[str] = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=folder, Delimiter="/"):
            names.extend(
                p["Prefix"][len(folder) :].rstrip("/") for p in page.get("CommonPrefixes", [])
            )
        return tuple(sorted(names))


class S3Lock:
    """A lease lock object: created with If-None-Match, taken over with If-Match when expired."""

    def __init__(self, store: S3ObjectStore, key: str, *, lease_seconds: float = 120.0) -> None:
        self.store = store
        self.key = key
        self.lease = lease_seconds
        self.owner = uuid.uuid4().hex

    def _body(self) -> bytes:
        return orjson.dumps({"owner": self.owner, "expires_at": time.time() + self.lease})

    def acquire(self, timeout: float = 600.0) -> None:
        """Block until the lock is ours (polling with backoff)."""
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            if self.store.replace(self.key, self._body(), None):
                return
            with contextlib.suppress(FileNotFoundError):
                raw, etag = self.store.get_with_etag(self.key)
                holder = orjson.loads(raw)
                if float(holder.get("expires_at", 0)) < time.time() and self.store.replace(
                    self.key, self._body(), etag
                ):
                    return  # the previous holder died; its lease ran out
            if time.monotonic() > deadline:
                raise TimeoutError(f"commit lock {self.key} still held after {timeout:.0f}s")
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def release(self) -> None:
        """Give the lock back if we still hold it."""
        with contextlib.suppress(FileNotFoundError):
            raw, _ = self.store.get_with_etag(self.key)
            if orjson.loads(raw).get("owner") == self.owner:
                self.store.delete(self.key)
