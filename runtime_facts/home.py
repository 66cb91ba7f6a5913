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
from runtime_facts.stores.s3 import S3Lock, S3ObjectStore, storage_options

RECEIPTS_LOG = "receipts/signals-runtime-ingest.log"
OUTBOX_LOG = "outbox/signals.fact.updated.v1.ndjson"
LOCK_KEY = "locks/commit.lock"


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
        """The lake, with every table created (under the lock: creation must not race)."""
        if not self.lake.exists():
            with self.commit_lock():
                self.lake.ensure()
        return self.lake

    @contextlib.contextmanager
    def commit_lock(self) -> Iterator[None]:
        """Serialize the short commit phase across processes (validation runs outside it)."""
        if isinstance(self.objects, S3ObjectStore):
            lock = S3Lock(self.objects, LOCK_KEY)
            lock.acquire()
            try:
                yield
            finally:
                lock.release()
            return
        lock_path = self.path("locks", "commit.lock")
        with lock_path.open("a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
