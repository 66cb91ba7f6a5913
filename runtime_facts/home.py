"""The home (SPEC §9): one root holding CAS, lake, receipts, outbox and metrics."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path

from runtime_facts.config import Settings
from runtime_facts.errors import Reason, UsageError
from runtime_facts.stores.cas import CasStore
from runtime_facts.stores.dsse import Signer
from runtime_facts.stores.lake import Lake
from runtime_facts.stores.objects import LocalObjectStore
from runtime_facts.stores.outbox import Outbox
from runtime_facts.stores.receipts import ObjectReceiptLog, ReceiptIndex, ReceiptLog
from runtime_facts.stores.s3 import (
    LOCAL_FENCE,
    Fence,
    MultiFence,
    S3Lock,
    S3ObjectStore,
    storage_options,
)
from runtime_facts.subject import validate_tenant

RECEIPTS_LOG = "receipts/signals-runtime-ingest.log"
OUTBOX_LOG = "outbox/signals.fact.updated.v1.ndjson"
HOME_LOCK_KEY = "locks/home.lock"


class Home:
    """Typed access to every store under one home: a local directory or `s3://bucket/prefix`.

    For an object-store home, `root` is a local working folder (metrics textfile, scratch);
    everything shared (CAS, lake, receipts, outbox, the lock) lives in the bucket.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.remote = settings.home.startswith("s3://")
        if self.remote:
            self.uri = settings.home.rstrip("/")
            digest = hashlib.sha256(self.uri.encode()).hexdigest()[:16]
            local = os.environ.get("RUNTIME_FACTS_LOCAL_DIR")
            base = Path(local) if local else Path.home() / ".cache" / "runtime-facts"
            self.root = (base / digest).resolve()
        elif "://" in settings.home:
            raise UsageError(
                Reason.INVALID_CONTEXT,
                f"unsupported home {settings.home!r}",
                hint="a home is a local directory or s3://bucket/prefix",
            )
        else:
            self.root = Path(settings.home).resolve()
            self.uri = str(self.root)

    @cached_property
    def objects(self) -> LocalObjectStore | S3ObjectStore:
        """Raw objects under the home."""
        if self.remote:
            return S3ObjectStore(self.uri)
        return LocalObjectStore(self.root)

    @cached_property
    def cas(self) -> CasStore:
        """The content-addressed store."""
        return CasStore(self.objects)

    @cached_property
    def lake(self) -> Lake:
        """The Delta tables."""
        if self.remote:
            return Lake(f"{self.uri}/lake", storage_options())
        return Lake(str(self.root / "lake"))

    @cached_property
    def signer(self) -> Signer | None:
        """The site signing key of receipts checkpoints and provenance, when configured."""
        path = self.settings.receipts.signing_key
        return Signer.from_file(Path(path).expanduser()) if path else None

    @cached_property
    def receipts(self) -> ReceiptLog:
        """The receipts log (signed checkpoints and provenance with a signing key)."""
        every = self.settings.receipts.checkpoint_every
        options = {"signer": self.signer, "checkpoint_every": every, "objects": self.objects}
        if self.remote:
            return ObjectReceiptLog(self.objects, RECEIPTS_LOG, **options)
        return ReceiptLog(self.root / RECEIPTS_LOG, **options)

    @cached_property
    def outbox(self) -> Outbox:
        """The events outbox."""
        if self.remote:
            return Outbox.on_objects(self.objects, OUTBOX_LOG)
        return Outbox(self.root / "outbox")

    @cached_property
    def receipt_index(self) -> ReceiptIndex:
        """Per-batch status from the receipts log (refresh under the lock before trusting it)."""
        return ReceiptIndex(self.receipts)

    def path(self, *parts: str) -> Path:
        """A path under the home (created parent folders)."""
        path = self.root.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def ensure_lake(self) -> Lake:
        """The lake, with every table created (under the home lock: creation must not race)."""
        if not self.lake.complete():
            with self.commit_lock():
                self.lake.ensure()
        return self.lake

    def tenants(self) -> list[str]:
        """Tenants with a partition in the lake or a commit domain, sorted."""
        names: set[str] = set()
        if self.lake.exists():
            names.update(self.lake.tenants())
        names.update(self._lock_tenants())
        return sorted(names)

    def _lock_tenants(self) -> list[str]:
        prefix = "locks/tenants"
        if isinstance(self.objects, S3ObjectStore):
            keys = self.objects.list(prefix)
        else:
            folder = self.root / prefix
            keys = (
                iter(sorted(p.name for p in folder.glob("*.lock"))) if folder.exists() else iter(())
            )
        return [k.rsplit("/", 1)[-1].removesuffix(".lock") for k in keys if k.endswith(".lock")]

    @contextlib.contextmanager
    def commit_lock(self, tenant: str | None = None) -> Iterator[Fence]:
        """A commit domain: one tenant's (concurrent with other tenants), or the whole home.

        Tenant commits (batch rows, receipts, fold, states of that tenant) hold that tenant's
        lock; operations that span tenants (table creation, retention, compaction) hold the
        home lock, which waits for every tenant commit in progress and blocks new ones. The
        yielded fence raises `LockLostError` once the lock can no longer be trusted (an S3
        lease that lapsed or was taken over); writers check it before each durable write.
        """
        if tenant is not None:
            validate_tenant(tenant)
        if isinstance(self.objects, S3ObjectStore):
            with self._s3_lock(tenant) as fence, self.lake.pinned():
                yield fence
            return
        with self._local_lock(tenant), self.lake.pinned():
            yield LOCAL_FENCE

    @contextlib.contextmanager
    def _local_lock(self, tenant: str | None) -> Iterator[None]:
        with self.path("locks", "home.lock").open("a") as home_handle:
            # Shared for a tenant commit, exclusive for a home-wide operation.
            fcntl.flock(home_handle.fileno(), fcntl.LOCK_EX if tenant is None else fcntl.LOCK_SH)
            try:
                if tenant is None:
                    yield
                    return
                with self.path("locks", "tenants", f"{tenant}.lock").open("a") as handle:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
                    try:
                        yield
                    finally:
                        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            finally:
                fcntl.flock(home_handle.fileno(), fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _s3_lock(self, tenant: str | None) -> Iterator[Fence]:
        assert isinstance(self.objects, S3ObjectStore)
        lease = self.settings.ingest.lock_lease_seconds
        names = [tenant] if tenant is not None else self.tenants()
        with contextlib.ExitStack() as stack:
            locks = []
            if tenant is None:
                home_lock = S3Lock(self.objects, HOME_LOCK_KEY, lease_seconds=lease)
                stack.enter_context(home_lock)
                locks.append(home_lock)
            else:
                # A home-wide operation in progress holds the home lease: wait for it.
                S3Lock(self.objects, HOME_LOCK_KEY, lease_seconds=lease).wait_free()
            for name in sorted(names):  # one order everywhere: no deadlock between homes' ops
                lock = S3Lock(self.objects, f"locks/tenants/{name}.lock", lease_seconds=lease)
                stack.enter_context(lock)
                locks.append(lock)
            yield MultiFence(locks)
