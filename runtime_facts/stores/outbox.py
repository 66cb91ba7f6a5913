"""The events outbox: `signals.fact.updated.v1` envelopes, appended durably, at least once.

`fact_version` is monotonic per tenant + subject_key + fact_kind: `last_version` answers from an
index kept current by reading only what was appended since the last call.

Local home: one NDJSON file, each append one `write()` on an `O_APPEND` descriptor under an
exclusive `flock` of the file (so two tenants appending at once never interleave or glue lines,
and a torn tail is cut first). Object-store home: one segment object per tenant and append,
`outbox/signals.fact.updated.v1.ndjson.d/<tenant>/<n:012d>.ndjson`, created only if absent
(`runtime_facts.stores.segments`); an outbox object written before segments is read first.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from runtime_facts.stores.segments import SegmentFolders, stream_name

EVENT_TYPE = "signals.fact.updated.v1"
_NAMESPACE = uuid.UUID("6f1c1f7e-4b8e-4c55-9d0a-3d3b8f7e9a10")


def event_id(tenant: str, subject_key: str, fact_kind: str, fact_version: int, digest: str) -> str:
    """Deterministic id: a retried emit of the same change gets the same id (consumers dedupe)."""
    name = f"{tenant}|{subject_key}|{fact_kind}|{fact_version}|{digest}"
    return str(uuid.uuid5(_NAMESPACE, name))


def _complete(data: bytes) -> list[dict[str, Any]]:
    out = []
    for line in data.splitlines(keepends=True):
        if line.endswith(b"\n") and line.strip():
            doc = orjson.loads(line)
            assert isinstance(doc, dict)
            out.append(doc)
    return out


class Outbox:
    """NDJSON outbox at `<home>/outbox/signals.fact.updated.v1.ndjson` (or segments on S3)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / f"{EVENT_TYPE}.ndjson"
        self.store: Any = None
        self.key = ""
        self.segments: SegmentFolders | None = None
        self._offset = 0
        self._legacy: list[dict[str, Any]] | None = None
        self._found: list[dict[str, Any]] = []
        self._count: dict[str, int] = {}  # segments per stream
        self._versions: dict[tuple[str, str, str], int] = {}

    @classmethod
    def on_objects(cls, store: Any, key: str) -> Outbox:
        """The outbox on an object store (one segment per tenant and append)."""
        outbox = cls(Path(key).parent)
        outbox.store, outbox.key = store, key
        outbox.segments = SegmentFolders(store, f"{key}.d")
        return outbox

    def _index(self, docs: list[dict[str, Any]]) -> None:
        for e in docs:
            k = (str(e.get("tenant")), str(e.get("subject_key")), str(e.get("fact_kind")))
            self._versions[k] = max(self._versions.get(k, 0), int(e.get("fact_version") or 0))

    def _refresh(self, only: str | None = None) -> None:
        if self.segments is None:
            data = b""
            if self.path.exists():
                with self.path.open("rb") as handle:
                    handle.seek(self._offset)
                    data = handle.read()
            end = data.rfind(b"\n") + 1
            self._offset += end
            self._index(_complete(data[:end]))
            return
        if self._legacy is None:
            try:
                self._legacy = _complete(bytes(self.store.get(self.key)))
            except FileNotFoundError:
                self._legacy = []
            self._index(self._legacy)
        for stream in [only] if only else self.segments.streams():
            for _, data in self.segments.read_new(stream):
                docs = _complete(data)
                self._count[stream] = self._count.get(stream, 0) + 1
                self._found.extend(docs)
                self._index(docs)

    def append(self, events: list[dict[str, Any]]) -> None:
        """Append envelopes (call holding the commit lock of their tenants)."""
        if not events:
            return
        if self.segments is not None:
            by_tenant: dict[str, list[dict[str, Any]]] = {}
            for e in events:
                tenant = e.get("tenant")
                stream = stream_name(tenant if isinstance(tenant, str) else None)
                by_tenant.setdefault(stream, []).append(e)
            for stream, group in by_tenant.items():
                self._append_segment(stream, _payload(group))
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            _cut_torn(fd)
            payload = _payload(events)
            size = os.fstat(fd).st_size
            if os.write(fd, payload) != len(payload):
                os.ftruncate(fd, size)
                raise OSError(f"short write to {self.path}")
            os.fsync(fd)
        finally:
            os.close(fd)

    def _append_segment(self, stream: str, payload: bytes) -> None:
        assert self.segments is not None
        for _ in range(20):
            self._refresh(stream)
            number = self._count.get(stream, 0) + 1
            if self.segments.create(stream, f"{number:012d}.ndjson", payload):
                return
        raise TimeoutError(f"could not append to {self.store.uri}/{self.key}.d/{stream}")

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self.segments is None:
            yield from _complete(self.path.read_bytes() if self.path.exists() else b"")
            return
        self._refresh()
        yield from self._legacy or []
        yield from sorted(self._found, key=lambda e: (str(e.get("emitted_at")), e["event_id"]))

    def last_version(self, tenant: str, subject_key: str, fact_kind: str) -> int:
        """Highest fact_version emitted for a tenant's subject and kind (0 when none)."""
        self._refresh()
        return self._versions.get((tenant, subject_key, fact_kind), 0)


def _payload(events: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(e, option=orjson.OPT_SORT_KEYS) + b"\n" for e in events)


def _cut_torn(fd: int) -> None:
    """Under the file lock: cut a newline-less tail left by a writer that died mid-line."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    with contextlib.suppress(OSError):
        data = os.pread(fd, size, 0)
        os.ftruncate(fd, data.rfind(b"\n") + 1)
