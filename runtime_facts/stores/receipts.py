"""The hash-chained receipts log `receipts/signals-runtime-ingest.log` (NDJSON, append-only)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

GENESIS = "0" * 64


def canonical_json(doc: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the bytes every digest in this project is taken over."""
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z)


def seal_receipt(receipt: dict[str, Any], prev_sha: str) -> dict[str, Any]:
    """Link a receipt to its predecessor: `receipt_sha256` covers every other field."""
    body = {k: v for k, v in receipt.items() if k != "receipt_sha256"}
    body["prev_receipt_sha256"] = prev_sha
    body["receipt_sha256"] = hashlib.sha256(canonical_json(body)).hexdigest()
    return body


@dataclass(frozen=True)
class ChainBreak:
    """Where a receipts chain stops verifying."""

    line_number: int
    reason: str


class ReceiptLog:
    """Append-only NDJSON log; appends are fsynced, a torn last line is repaired on open."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def location(self) -> str:
        """Where the log lives, for people."""
        return str(self.path)

    def size(self) -> int:
        """The log's length in bytes (0 when it does not exist)."""
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def read_from(self, offset: int) -> bytes:
        """The log's bytes from `offset` to its end."""
        if not self.path.exists():
            return b""
        with self.path.open("rb") as handle:
            handle.seek(offset)
            return handle.read()

    def repair(self) -> bool:
        """Cut a torn (newline-less) last line left by a crash. True if something was cut."""
        if not self.path.exists():
            return False
        with self.path.open("rb+") as handle:
            size = handle.seek(0, os.SEEK_END)
            if size == 0:
                return False
            handle.seek(size - 1)
            if handle.read(1) == b"\n":
                return False
            data = self.path.read_bytes()
            keep = data.rfind(b"\n") + 1
            handle.truncate(keep)
            handle.flush()
            os.fsync(handle.fileno())
            return True

    def last(self) -> dict[str, Any] | None:
        """The last receipt, or None for an empty log."""
        if not self.path.exists():
            return None
        with self.path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            block = 1 << 16
            start = max(0, size - block)
            while True:
                handle.seek(start)
                tail = handle.read(size - start).rstrip(b"\n")
                if b"\n" in tail or start == 0:
                    line = tail.rsplit(b"\n", 1)[-1]
                    break
                start = max(0, start - block)
        if not line.strip():
            return None
        doc = orjson.loads(line)
        assert isinstance(doc, dict)
        return doc

    def append(self, receipt: dict[str, Any]) -> dict[str, Any]:
        """Seal a receipt onto the chain and append it durably; returns the sealed receipt."""
        last = self.last()
        prev = last["receipt_sha256"] if last else GENESIS
        sequence = (last["sequence"] + 1) if last else 1
        sealed = seal_receipt({**receipt, "sequence": sequence}, prev)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as handle:
            handle.write(canonical_json(sealed) + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        return sealed

    def restore(self, sealed: dict[str, Any]) -> None:
        """Append an already sealed receipt verbatim (repair from the lake's mirror)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as handle:
            handle.write(canonical_json(sealed) + b"\n")
            handle.flush()
            os.fsync(handle.fileno())

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
            return
        with self.path.open("rb") as handle:
            for line in handle:
                if line.strip():
                    doc = orjson.loads(line)
                    assert isinstance(doc, dict)
                    yield doc

    def after(self, sequence: int) -> list[dict[str, Any]]:
        """Receipts with a sequence number above `sequence`, read backwards from the end."""
        if not self.path.exists():
            return []
        out: list[dict[str, Any]] = []
        with self.path.open("rb") as handle:
            pos = handle.seek(0, os.SEEK_END)
            carry = b""
            while pos > 0:
                step = min(pos, 1 << 20)
                pos -= step
                handle.seek(pos)
                chunk = handle.read(step) + carry
                lines = chunk.split(b"\n")
                carry = lines[0] if pos > 0 else b""
                for line in reversed(lines[1:] if pos > 0 else lines):
                    if not line.strip():
                        continue
                    doc = orjson.loads(line)
                    if doc["sequence"] <= sequence:
                        return out[::-1]
                    out.append(doc)
        return out[::-1]

    def count(self) -> int:
        """Number of receipts in the log."""
        return sum(1 for _ in self)


class ObjectReceiptLog(ReceiptLog):
    """The same log kept as one object in an object store (one PUT per append: never torn)."""

    def __init__(self, store: Any, key: str) -> None:
        super().__init__(Path(key))
        self.store = store
        self.key = key

    @property
    def location(self) -> str:
        """Where the log lives, for people."""
        return f"{self.store.uri}/{self.key}"

    def _data(self) -> bytes:
        try:
            return bytes(self.store.get(self.key))
        except FileNotFoundError:
            return b""

    def size(self) -> int:
        """The log's length in bytes (0 when it does not exist)."""
        try:
            return int(self.store.size(self.key))
        except FileNotFoundError:
            return 0

    def read_from(self, offset: int) -> bytes:
        """The log's bytes from `offset` to its end."""
        try:
            return bytes(self.store.read_from(self.key, offset))
        except FileNotFoundError:
            return b""

    def repair(self) -> bool:
        """Nothing to repair: an object is replaced whole or not at all."""
        return False

    def _lines(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self._data().splitlines() if line.strip()]

    def last(self) -> dict[str, Any] | None:
        """The last receipt, or None for an empty log."""
        lines = self._lines()
        return lines[-1] if lines else None

    def append(self, receipt: dict[str, Any]) -> dict[str, Any]:
        """Seal onto the chain and append (compare-and-swap: a concurrent append is retried)."""
        for _ in range(100):
            try:
                data, etag = self.store.get_with_etag(self.key)
            except FileNotFoundError:
                data, etag = b"", None
            lines = data.rstrip(b"\n").rsplit(b"\n", 1)
            last = orjson.loads(lines[-1]) if data.strip() else None
            prev = last["receipt_sha256"] if last else GENESIS
            sequence = (last["sequence"] + 1) if last else 1
            sealed = seal_receipt({**receipt, "sequence": sequence}, prev)
            if self.store.replace(self.key, data + canonical_json(sealed) + b"\n", etag):
                return sealed
        raise TimeoutError(f"could not append to {self.location}: too much contention")

    def restore(self, sealed: dict[str, Any]) -> None:
        """Append an already sealed receipt verbatim (repair from the lake's mirror)."""
        self.store.append(self.key, canonical_json(sealed) + b"\n")

    def __iter__(self) -> Iterator[dict[str, Any]]:
        yield from self._lines()

    def after(self, sequence: int) -> list[dict[str, Any]]:
        """Receipts with a sequence number above `sequence`."""
        return [r for r in self._lines() if r["sequence"] > sequence]


def verify_chain(lines: Iterator[bytes]) -> tuple[int, ChainBreak | None]:
    """Recompute every link. Returns (receipts checked, first break or None).

    The digests cover the parsed receipt, so the line's bytes must also be exactly its
    canonical form: an edit that parses the same (`2.0` → `2e0`, a space, a blank line) still
    breaks the chain. Blank lines are tolerated only at the end of the file.
    """
    prev = GENESIS
    count = 0
    blank = 0
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            blank = blank or number
            continue
        if blank:
            return count, ChainBreak(blank, "blank line inside the log (the log was edited)")
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return count, ChainBreak(number, "line is not valid JSON")
        if not isinstance(doc, dict):
            return count, ChainBreak(number, "line is not a receipt object")
        if doc.get("prev_receipt_sha256") != prev:
            return count, ChainBreak(number, "prev_receipt_sha256 does not match the line before")
        if seal_receipt(doc, prev)["receipt_sha256"] != doc.get("receipt_sha256"):
            return count, ChainBreak(number, "receipt_sha256 does not match the receipt's content")
        if doc.get("sequence") != count + 1:
            return count, ChainBreak(number, "sequence number out of order (a receipt is missing)")
        if (raw[:-1] if raw.endswith(b"\n") else raw) != canonical_json(doc):
            return count, ChainBreak(number, "line is not in canonical form (bytes were edited)")
        prev = doc["receipt_sha256"]
        count += 1
    return count, None


class ReceiptIndex:
    """What the receipts log says about each batch, kept current by reading only new bytes.

    The log is append-only, so a byte offset is a stable bookmark: `refresh()` (called under
    the commit lock) reads what other processes appended since, and nothing else.
    """

    def __init__(self, log: ReceiptLog) -> None:
        self.log = log
        self.offset = 0
        self.status: dict[str, str] = {}
        self.tenant_of: dict[str, str] = {}
        self.tenant_hits: dict[str, int] = {}
        self.last_sequence: dict[str | None, int] = {}
        self.last: dict[str, Any] | None = None

    def refresh(self) -> ReceiptIndex:
        """Read receipts appended since the last refresh (from the start if the log shrank:
        it was cut or replaced, and the repair must see what is really there)."""
        if self.offset and self.log.size() < self.offset:
            self.__init__(self.log)  # type: ignore[misc]
        data = self.log.read_from(self.offset)
        end = data.rfind(b"\n") + 1  # a torn last line is not a receipt yet
        for line in data[:end].splitlines():
            if line.strip():
                self._add(orjson.loads(line))
        self.offset += end
        return self

    def _add(self, receipt: dict[str, Any]) -> None:
        sha = receipt.get("batch_sha256")
        status = receipt.get("status")
        self.last = receipt
        tenant_key = receipt.get("tenant")
        if isinstance(receipt.get("sequence"), int):
            self.last_sequence[tenant_key if isinstance(tenant_key, str) else None] = int(
                receipt["sequence"]
            )
        if not isinstance(sha, str) or not isinstance(status, str):
            return
        if self.status.get(sha) != "accepted":  # accepted is final whatever follows
            self.status[sha] = status
        tenant = receipt.get("tenant")
        if isinstance(tenant, str):
            self.tenant_of[sha] = tenant
            if status == "accepted":
                total = int(receipt.get("hit_count_total") or 0)
                self.tenant_hits[tenant] = self.tenant_hits.get(tenant, 0) + total

    def accepted(self, sha: str) -> bool:
        """True when an accepted receipt exists for the batch."""
        return self.status.get(sha) == "accepted"

    def done(self, sha: str, *, retry_rejected: bool = False) -> bool:
        """True when the batch needs no further attempt."""
        status = self.status.get(sha)
        return status in ("accepted", "duplicate") or (status == "rejected" and not retry_rejected)
