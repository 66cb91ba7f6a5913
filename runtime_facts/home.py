"""The home (SPEC §9): one root holding CAS, lake, receipts, outbox and metrics."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path

from runtime_facts.config import Settings
from runtime_facts.stores.cas import CasStore
from runtime_facts.stores.lake import Lake
from runtime_facts.stores.objects import LocalObjectStore
from runtime_facts.stores.receipts import ReceiptIndex, ReceiptLog

RECEIPTS_LOG = "receipts/signals-runtime-ingest.log"


class Home:
    """Typed access to every store under one home directory."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        if "://" in settings.home:
            raise NotImplementedError(
                "object-store homes are configured through runtime_facts.home_s3"
            )
        self.root = Path(settings.home).resolve()

    @cached_property
    def objects(self) -> LocalObjectStore:
        """Raw objects under the home."""
        return LocalObjectStore(self.root)

    @cached_property
    def cas(self) -> CasStore:
        """The content-addressed store."""
        return CasStore(self.objects)

    @cached_property
    def lake(self) -> Lake:
        """The Delta tables."""
        return Lake(str(self.root / "lake"))

    @cached_property
    def receipts(self) -> ReceiptLog:
        """The receipts log."""
        return ReceiptLog(self.root / RECEIPTS_LOG)

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
        lock_path = self.path("locks", "commit.lock")
        with lock_path.open("a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
