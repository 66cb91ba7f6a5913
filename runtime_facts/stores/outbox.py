"""The events outbox: `signals.fact.updated.v1` envelopes, appended durably, at least once."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

EVENT_TYPE = "signals.fact.updated.v1"
_NAMESPACE = uuid.UUID("6f1c1f7e-4b8e-4c55-9d0a-3d3b8f7e9a10")


def event_id(tenant: str, subject_key: str, fact_kind: str, fact_version: int, digest: str) -> str:
    """Deterministic id: a retried emit of the same change gets the same id (consumers dedupe)."""
    name = f"{tenant}|{subject_key}|{fact_kind}|{fact_version}|{digest}"
    return str(uuid.uuid5(_NAMESPACE, name))


class Outbox:
    """NDJSON outbox at `<home>/outbox/signals.fact.updated.v1.ndjson`; writes are durable."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / f"{EVENT_TYPE}.ndjson"
        self.store: Any = None
        self.key = ""

    @classmethod
    def on_objects(cls, store: Any, key: str) -> Outbox:
        """The outbox kept as one object in an object store (appends are compare-and-swap)."""
        outbox = cls(Path(key).parent)
        outbox.store, outbox.key = store, key
        return outbox

    def append(self, events: list[dict[str, Any]]) -> None:
        """Append envelopes (call under the commit lock)."""
        if not events:
            return
        payload = b"".join(orjson.dumps(e, option=orjson.OPT_SORT_KEYS) + b"\n" for e in events)
        if self.store is not None:
            self.store.append(self.key, payload)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())

    def _data(self) -> bytes:
        if self.store is not None:
            try:
                return bytes(self.store.get(self.key))
            except FileNotFoundError:
                return b""
        return self.path.read_bytes() if self.path.exists() else b""

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for line in self._data().splitlines(keepends=True):
            if line.endswith(b"\n") and line.strip():
                doc = orjson.loads(line)
                assert isinstance(doc, dict)
                yield doc

    def last_version(self, subject_key: str, fact_kind: str) -> int:
        """Highest fact_version emitted for a subject and kind (0 when none)."""
        return max(
            (
                int(e["fact_version"])
                for e in self
                if e.get("subject_key") == subject_key and e.get("fact_kind") == fact_kind
            ),
            default=0,
        )
