"""S3-compatible object store: conditional writes for CAS, a lease lock for the commit phase.

Endpoint and credentials come from the standard `AWS_*` variables (`AWS_ENDPOINT_URL`,
`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_SESSION_TOKEN`), so the same
home works against AWS S3, MinIO, Ceph or a local test server; inside Airflow, from the
Connection named by `s3.aws_conn_id` (`RUNTIME_FACTS__S3__AWS_CONN_ID`) when it is set.

Safety rests on two S3 primitives every current implementation has: `If-None-Match: *`
(create only if absent: CAS objects and log segments are never overwritten, and only one
process can hold the lock) and `If-Match: <etag>` (replace only what was read: an expired lock
is taken over by exactly one process). Shared logs are never rewritten: each append is a new
segment object (`runtime_facts.stores.segments`), so its cost does not grow with history.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson

from runtime_facts.errors import LockLostError, Reason, UsageError

DEFAULT_REGION = "us-east-1"
_PRECONDITION = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}


def split_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/prefix` → (bucket, prefix without slashes)."""
    rest = uri.removeprefix("s3://")
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ValueError(f"not an s3:// URI: {uri!r}")
    return bucket, prefix.strip("/")


@dataclass(frozen=True)
class S3Credentials:
    """Endpoint and credentials of the object store, and where they came from."""

    endpoint_url: str | None
    access_key_id: str | None
    secret_access_key: str | None = field(repr=False)
    session_token: str | None = field(repr=False)
    region: str
    source: str
    """`environment`, or `connection:<conn id>` (`via hook` when the Amazon provider read it)."""


def _from_environment() -> S3Credentials:
    env = os.environ
    return S3Credentials(
        endpoint_url=env.get("AWS_ENDPOINT_URL") or None,
        access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
        secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
        session_token=env.get("AWS_SESSION_TOKEN") or None,
        region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or DEFAULT_REGION,
        source="environment",
    )


def _from_amazon_hook(conn_id: str, fallback: S3Credentials) -> S3Credentials | None:
    """The Amazon provider's reading of the Connection (profiles, role assumption...)."""
    try:
        from airflow.providers.amazon.aws.hooks.base_aws import AwsGenericHook
    except ImportError:
        return None
    hook = AwsGenericHook(aws_conn_id=conn_id, client_type="s3")
    config = hook.conn_config
    region = getattr(config, "region_name", None) or fallback.region
    creds = hook.get_credentials(region_name=region)
    return S3Credentials(
        endpoint_url=getattr(config, "endpoint_url", None) or fallback.endpoint_url,
        access_key_id=creds.access_key,
        secret_access_key=creds.secret_key,
        session_token=creds.token,
        region=region,
        source=f"connection:{conn_id} via hook",
    )


def _from_connection(conn_id: str) -> S3Credentials:
    """An Airflow Connection: the Amazon provider's hook if installed, else its fields.

    A field the Connection leaves empty falls back to its `AWS_*` variable, as boto3 does.
    """
    fallback = _from_environment()
    try:
        from airflow.sdk import Connection
        from airflow.sdk.exceptions import AirflowNotFoundException
    except ImportError as exc:
        raise UsageError(
            Reason.AWS_CONNECTION_UNAVAILABLE,
            f"s3.aws_conn_id is {conn_id!r} but Airflow is not installed here",
            hint="unset RUNTIME_FACTS__S3__AWS_CONN_ID outside Airflow (the AWS_* variables "
            "are used then), or install runtime-facts[airflow]",
        ) from exc
    try:
        via_hook = _from_amazon_hook(conn_id, fallback)
        if via_hook is not None:
            return via_hook
        conn = Connection.get(conn_id)
    except AirflowNotFoundException as exc:
        raise UsageError(
            Reason.AWS_CONNECTION_NOT_FOUND,
            f"Airflow Connection {conn_id!r} (s3.aws_conn_id) is not defined",
            hint=f"create it (UI, `airflow connections add {conn_id} --conn-type aws ...`, or "
            f"AIRFLOW_CONN_{conn_id.upper()}) or fix RUNTIME_FACTS__S3__AWS_CONN_ID",
        ) from exc
    extra: dict[str, Any] = dict(conn.extra_dejson or {})
    return S3Credentials(
        endpoint_url=extra.get("endpoint_url") or fallback.endpoint_url,
        access_key_id=conn.login or fallback.access_key_id,
        secret_access_key=conn.password or fallback.secret_access_key,
        session_token=extra.get("aws_session_token") or fallback.session_token,
        region=extra.get("region_name") or fallback.region,
        source=f"connection:{conn_id}",
    )


def resolve_credentials(aws_conn_id: str | None = None) -> S3Credentials:
    """Credentials from the Airflow Connection `aws_conn_id` (default: the `s3.aws_conn_id`
    setting) when one is named, else from the standard `AWS_*` variables."""
    if aws_conn_id is None:
        from runtime_facts.config import Settings

        aws_conn_id = Settings.load().s3.aws_conn_id
    if aws_conn_id:
        return _from_connection(aws_conn_id)
    return _from_environment()


def storage_options(credentials: S3Credentials | None = None) -> dict[str, str]:
    """deltalake / object_store options (credentials default to `resolve_credentials()`)."""
    creds = credentials or resolve_credentials()
    opts: dict[str, str] = {"conditional_put": "etag"}
    for key, value in {
        "AWS_ENDPOINT_URL": creds.endpoint_url,
        "AWS_ACCESS_KEY_ID": creds.access_key_id,
        "AWS_SECRET_ACCESS_KEY": creds.secret_access_key,
        "AWS_SESSION_TOKEN": creds.session_token,
    }.items():
        if value:
            opts[key] = value
    opts["AWS_REGION"] = creds.region
    if (creds.endpoint_url or "").startswith("http://"):
        opts["AWS_ALLOW_HTTP"] = "true"
    return opts


def _client(credentials: S3Credentials | None = None) -> Any:
    import boto3
    from botocore.config import Config

    creds = credentials or resolve_credentials()
    return boto3.client(
        "s3",
        endpoint_url=creds.endpoint_url,
        region_name=creds.region,
        aws_access_key_id=creds.access_key_id,
        aws_secret_access_key=creds.secret_access_key,
        aws_session_token=creds.session_token,
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
