"""Append-only logs on an object store: one immutable segment object per append.

Layout: `<root>/<stream>/<name>`, where a stream is a tenant (or `_none`) and names sort in
append order within their stream (zero-padded sequence numbers). A segment is created with
`If-None-Match: *` (the local store: a hard link), so two writers can never overwrite each
other: the loser learns it and retries with the next name. Nothing is ever rewritten, so the
cost of an append does not grow with the log's history.

A reader keeps, per stream, the last key it has read and lists only the keys after it
(ListObjectsV2 `StartAfter`): a refresh costs one listing of the stream folders, one listing per
stream (or one, for a single stream) and one GET per new segment (up to `READERS` at once).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

READERS = 16  # concurrent GETs when a reader catches up on many segments
NO_TENANT = "_none"  # stream of records without a tenant (tenants start with [a-z0-9])


def stream_name(tenant: str | None) -> str:
    """The folder of a tenant's stream."""
    return NO_TENANT if tenant is None else tenant


def stream_tenant(name: str) -> str | None:
    """The tenant of a stream folder."""
    return None if name == NO_TENANT else name


class SegmentFolders:
    """Per-stream folders of segment objects under one root key, read incrementally."""

    def __init__(self, store: Any, root: str) -> None:
        self.store = store
        self.root = root.rstrip("/")
        self.last_key: dict[str, str] = {}

    def streams(self) -> list[str]:
        """Every stream folder present."""
        return list(self.store.folders(self.root))

    def key(self, stream: str, name: str) -> str:
        """The object key of a segment."""
        return f"{self.root}/{stream}/{name}"

    def create(self, stream: str, name: str, data: bytes) -> bool:
        """Create a segment; False when one of that name exists already (nothing written)."""
        return bool(self.store.put(self.key(stream, name), data, overwrite=False))

    def read_new(self, stream: str) -> list[tuple[str, bytes]]:
        """Segments of a stream not read before, in name order: (name, bytes)."""
        folder = f"{self.root}/{stream}"
        keys = list(self.store.list(folder, start_after=self.last_key.get(stream)))
        if len(keys) > 1 and self.store.local_path(keys[0]) is None:
            with ThreadPoolExecutor(max_workers=min(READERS, len(keys))) as pool:
                bodies = list(pool.map(self.store.get, keys))  # in key order
        else:
            bodies = [self.store.get(key) for key in keys]
        if keys:
            self.last_key[stream] = keys[-1]
        return [(k.rsplit("/", 1)[1], bytes(b)) for k, b in zip(keys, bodies, strict=True)]
