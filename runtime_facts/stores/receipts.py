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

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
            return
        with self.path.open("rb") as handle:
            for line in handle:
                if line.strip():
                    doc = orjson.loads(line)
                    assert isinstance(doc, dict)
                    yield doc

    def count(self) -> int:
        """Number of receipts in the log."""
        return sum(1 for _ in self)


def verify_chain(lines: Iterator[bytes]) -> tuple[int, ChainBreak | None]:
    """Recompute every link. Returns (receipts checked, first break or None)."""
    prev = GENESIS
    count = 0
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
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
        prev = doc["receipt_sha256"]
        count += 1
    return count, None
