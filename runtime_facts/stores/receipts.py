"""The receipts log `receipts/signals-runtime-ingest.log`: per-tenant hash chains, append-only.

How receipts are sealed and verified is in `runtime_facts.stores.chain`. The API the pipeline
uses (the same for a local and an `s3://` home):

- `append(draft) -> sealed`: seal the draft onto its tenant's chain (`draft["tenant"]`, None:
  the null chain) and append it durably. Call it holding that tenant's commit lock: two
  tenants may append at the same time from different processes. With a signing key, an
  accepted receipt also gets its DSSE provenance statement (`provenance/<batch>.dsse.json`),
  and every `checkpoint_every` receipts of a chain a signed checkpoint line follows.
- `checkpoint(now=None, tenant=ANY) -> envelopes`: a signed checkpoint for each chain (or one)
  with receipts not yet covered (time: `now`, default the covered receipt's `finished_at`); the
  pipeline calls it at the end of every ingest run. Without a signing key it does nothing.
- `last(tenant=ANY)`: the last receipt of a tenant's chain (`None`: the null chain; `LEGACY`:
  the global chain of a log written before per-tenant chains); without an argument, the last
  receipt appended to the log, whatever its chain.
- `after(tenant, sequence)`: that chain's receipts with a higher sequence number, in order.
- `heads()`: every chain's (count, head sha, checkpointed count).
- `repair()`: cut a torn (newline-less) last line left by a crash; True if something was cut.
- `restore(sealed)`: append an already sealed receipt verbatim (the pipeline's repair of a cut
  or lost log from `ingest_receipts`); `size()`: how far the log reaches (bytes locally).
- iteration: every receipt in log order; `entries()` also yields checkpoints; `lines()` the
  raw lines (what `verify_log` and `export` read); `since(cursor)` what `ReceiptIndex` reads.

**Local home**: one NDJSON file. Each line is written with one `write()` on an `O_APPEND`
descriptor while holding an exclusive `flock` on the log file itself, held only for that
write (not for the fsync that follows): so a line is whole or absent, and a torn last line
(from a crash, or a short write on a full disk, which is rolled back) is cut before the next
line is written, never glued to it. `repair()` takes the same lock, so it never cuts a line
another tenant is appending.

**Object-store home**: the file cannot be appended to, so each append is a new segment object
(`runtime_facts.stores.segments`) under `receipts/signals-runtime-ingest.log.d/<tenant>/`:
`<sequence:012d>-receipt.ndjson` and, for a checkpoint covering receipts 1..n,
`<n:012d>-signed-checkpoint.ndjson`, each one canonical JSON line, created only if absent
(`_none/` holds the null chain). A log object written before segments
(`receipts/signals-runtime-ingest.log`) is read first; checkpoints of its global chain go to
`_global/`.
The stream order is: that object, then the chains merged by (`finished_at`, tenant, sequence),
each chain in its own order; `runtime-facts receipts export` writes it as one NDJSON log.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import heapq
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

import orjson

from runtime_facts.errors import Reason, RuntimeFactsError
from runtime_facts.stores.chain import (
    GENESIS,
    LEGACY,
    SCOPE,
    ChainBreak,
    ChainKey,
    canonical_json,
    chain_of,
    checkpoint_claim,
    is_checkpoint,
    seal_receipt,
    verify_chain,
    verify_log,
)
from runtime_facts.stores.dsse import CHECKPOINT_TYPE, IN_TOTO_TYPE, Signer, checkpoint_body
from runtime_facts.stores.dsse import provenance_statement as _statement
from runtime_facts.stores.segments import SegmentFolders, stream_name, stream_tenant

PROVENANCE = "receipts/provenance"
RECEIPT_SUFFIX = "-receipt.ndjson"
CHECKPOINT_SUFFIX = "-signed-checkpoint.ndjson"
GLOBAL_STREAM = "_global"  # checkpoints of the pre-segment object's global chain

__all__ = [
    "ANY",
    "GENESIS",
    "LEGACY",
    "ChainBreak",
    "ObjectReceiptLog",
    "ReceiptIndex",
    "ReceiptLog",
    "canonical_json",
    "mirror_app",
    "seal_receipt",
    "verify_chain",
    "verify_log",
]


def mirror_app(chain: ChainKey) -> str:
    """The Delta app id recording how far `ingest_receipts` mirrors a chain (its sequence)."""
    if chain == LEGACY:
        return "runtime-facts.receipts"
    return f"runtime-facts.receipts/{stream_name(chain)}"


class _Any(Enum):
    ANY = "any"


ANY = _Any.ANY
Which = ChainKey | _Any


@dataclass
class Head:
    """A chain's end: receipts in it, the last one (and its digest), receipts checkpointed."""

    count: int = 0
    sha: str = GENESIS
    receipt: dict[str, Any] | None = None
    signed: int = 0


class _Heads:
    """Every chain's head, advanced entry by entry in log order."""

    def __init__(self) -> None:
        self.heads: dict[ChainKey, Head] = {}
        self.last: dict[str, Any] | None = None

    def add(self, doc: dict[str, Any]) -> None:
        if is_checkpoint(doc):
            claim = checkpoint_claim(doc)
            if claim is not None:
                self.heads.setdefault(claim[0], Head()).signed = claim[1]
            return
        head = self.heads.setdefault(chain_of(doc), Head())
        head.count = int(doc.get("sequence") or head.count + 1)
        head.sha = str(doc.get("receipt_sha256"))
        head.receipt = doc
        self.last = doc


def _parse(line: bytes) -> dict[str, Any]:
    doc = orjson.loads(line)
    if not isinstance(doc, dict):
        raise ValueError("a receipts log line is not an object")
    return doc


class _Base:
    """What both layouts share: sealing, checkpoints and provenance; reading via `entries`."""

    def __init__(
        self, *, signer: Signer | None = None, checkpoint_every: int = 0, objects: Any = None
    ) -> None:
        self.signer = signer
        self.checkpoint_every = checkpoint_every
        self.objects = objects  # where provenance statements go (None: not written)
        self._heads = _Heads()

    @property
    def location(self) -> str:
        """Where the log lives, for people."""
        raise NotImplementedError

    def _refresh(self, tenant: Which = ANY) -> None:
        raise NotImplementedError

    def lines(self) -> Iterator[bytes]:
        """The raw lines of the log in stream order."""
        raise NotImplementedError

    def entries(self) -> Iterator[dict[str, Any]]:
        """Receipts and checkpoints, in stream order (a torn last line is not an entry)."""
        for line in self.lines():
            if line.endswith(b"\n") and line.strip():
                yield _parse(line)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for doc in self.entries():
            if not is_checkpoint(doc):
                yield doc

    def count(self) -> int:
        """Number of receipts in the log."""
        return sum(1 for _ in self)

    def heads(self) -> dict[ChainKey, Head]:
        """Every chain's head, current."""
        self._refresh()
        return dict(self._heads.heads)

    def last(self, tenant: Which = ANY) -> dict[str, Any] | None:
        """The last receipt of a chain, or of the whole log; None when there is none."""
        self._refresh(tenant)
        if tenant is ANY:
            return self._heads.last
        head = self._heads.heads.get(tenant)
        return head.receipt if head else None

    def after(self, tenant: ChainKey, sequence: int) -> list[dict[str, Any]]:
        """The chain's receipts with a sequence number above `sequence`, in order."""
        return [r for r in self if chain_of(r) == tenant and int(r.get("sequence") or 0) > sequence]

    def _seal(self, draft: dict[str, Any]) -> tuple[dict[str, Any], ChainKey]:
        tenant = draft.get("tenant")
        chain: ChainKey = tenant if isinstance(tenant, str) else None
        head = self._heads.heads.get(chain, Head())
        body = {**draft, "chain_scope": SCOPE, "sequence": head.count + 1}
        return seal_receipt(body, head.sha), chain

    def _checkpoint_line(self, chain: ChainKey, time: str | None) -> bytes | None:
        """The signed checkpoint of a chain as it is now; None when nothing is uncovered."""
        head = self._heads.heads.get(chain)
        if self.signer is None or head is None or head.count <= head.signed:
            return None
        if time is None:  # the time of the receipt it covers
            time = str((head.receipt or {}).get("finished_at") or "")
        scope = "global" if chain == LEGACY else SCOPE
        tenant = None if chain == LEGACY else chain
        body = checkpoint_body(tenant, scope, head.count, head.sha, time)
        return canonical_json(self.signer.envelope(CHECKPOINT_TYPE, body)) + b"\n"

    def _due(self, chain: ChainKey) -> bool:
        head = self._heads.heads.get(chain)
        every = self.checkpoint_every
        return bool(self.signer and every > 0 and head and head.count - head.signed >= every)

    def _provenance(self, sealed: dict[str, Any]) -> None:
        if self.signer is None or self.objects is None or sealed.get("status") != "accepted":
            return
        envelope = self.signer.envelope(IN_TOTO_TYPE, _statement(sealed))
        key = f"{PROVENANCE}/{sealed['batch_sha256']}.dsse.json"
        self.objects.put(key, canonical_json(envelope) + b"\n")

    def provenance(self, batch_sha256: str) -> dict[str, Any] | None:
        """The stored provenance envelope of a batch, if any."""
        if self.objects is None:
            return None
        try:
            return _parse(bytes(self.objects.get(f"{PROVENANCE}/{batch_sha256}.dsse.json")))
        except FileNotFoundError:
            return None


class ReceiptLog(_Base):
    """The log as one local NDJSON file (see the module docstring for the write protocol)."""

    def __init__(self, path: Path, **options: Any) -> None:
        super().__init__(**options)
        self.path = path
        self._offset = 0

    @property
    def location(self) -> str:
        """Where the log lives, for people."""
        return str(self.path)

    def read_from(self, offset: int) -> bytes:
        """The log's bytes from `offset` to its end."""
        if not self.path.exists():
            return b""
        with self.path.open("rb") as handle:
            handle.seek(offset)
            return handle.read()

    def lines(self) -> Iterator[bytes]:
        """The raw lines of the file (a torn last line included, for verification to see)."""
        if not self.path.exists():
            return
        with self.path.open("rb") as handle:
            yield from handle

    def since(self, cursor: int, tenant: Which = ANY) -> tuple[list[dict[str, Any]], int]:
        """Entries complete after byte offset `cursor`, and the new cursor."""
        data = self.read_from(cursor)
        end = data.rfind(b"\n") + 1  # a torn last line is not an entry yet
        docs = [_parse(line) for line in data[:end].splitlines() if line.strip()]
        return docs, cursor + end

    def size(self) -> int:
        """The log's length in bytes (0 when it does not exist)."""
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def _refresh(self, tenant: Which = ANY) -> None:
        if self._offset and self.size() < self._offset:  # cut or replaced: read it again
            self._heads, self._offset = _Heads(), 0
        docs, self._offset = self.since(self._offset)
        for doc in docs:
            self._heads.add(doc)

    def after(self, tenant: ChainKey, sequence: int) -> list[dict[str, Any]]:
        """The chain's receipts with a sequence number above `sequence`, read from the end."""
        out: list[dict[str, Any]] = []
        for doc in self._backwards():
            if is_checkpoint(doc) or chain_of(doc) != tenant:
                continue
            if int(doc.get("sequence") or 0) <= sequence:
                break
            out.append(doc)
        return out[::-1]

    def _backwards(self) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
            return
        with self.path.open("rb") as handle:
            pos = handle.seek(0, os.SEEK_END)
            carry = b""
            torn = True  # the first line from the end may be torn (no newline yet)
            while pos > 0:
                step = min(pos, 1 << 20)
                pos -= step
                handle.seek(pos)
                lines = (handle.read(step) + carry).split(b"\n")
                carry = lines[0] if pos > 0 else b""
                rest = lines[1:] if pos > 0 else lines
                if torn:
                    rest, torn = rest[:-1], False  # after the last newline: empty or torn
                for line in reversed(rest):
                    if line.strip():
                        yield _parse(line)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[int]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)  # releases the flock

    def _cut_torn(self, fd: int) -> bool:
        """Under the file lock: cut a newline-less tail (its writer is gone)."""
        size = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return False
        pos = size
        while pos > 0:
            start = max(0, pos - (1 << 16))
            found = os.pread(fd, pos - start, start).rfind(b"\n")
            if found >= 0:
                os.ftruncate(fd, start + found + 1)
                break
            pos = start
        else:
            os.ftruncate(fd, 0)
        self._offset = min(self._offset, os.fstat(fd).st_size)
        return True

    def repair(self) -> bool:
        """Cut a torn (newline-less) last line left by a crash. True if something was cut."""
        if not self.path.exists():
            return False
        with self._locked() as fd:
            cut = self._cut_torn(fd)
        if cut:
            with self.path.open("rb") as handle:
                os.fsync(handle.fileno())
        return cut

    def _write(self, fd: int, line: bytes) -> None:
        size = os.fstat(fd).st_size
        try:
            written = os.write(fd, line)
        except OSError:
            os.ftruncate(fd, size)
            raise
        if written != len(line):  # a short write (disk full): leave no partial line behind
            os.ftruncate(fd, size)
            raise OSError(errno.ENOSPC, f"short write to {self.path}", str(self.path))
        self._offset = size + written
        self._heads.add(_parse(line))

    def append(self, receipt: dict[str, Any]) -> dict[str, Any]:
        """Seal a receipt onto its tenant's chain and append it durably; returns it sealed."""
        with self._locked() as fd:
            self._cut_torn(fd)
            self._refresh()
            sealed, chain = self._seal(receipt)
            self._write(fd, canonical_json(sealed) + b"\n")
            if self._due(chain):
                line = self._checkpoint_line(chain, str(sealed.get("finished_at") or ""))
                if line is not None:
                    self._write(fd, line)
            os.fsync(fd)
        self._provenance(sealed)
        return sealed

    def restore(self, sealed: dict[str, Any]) -> None:
        """Append an already sealed receipt verbatim (a repair from the lake's mirror)."""
        with self._locked() as fd:
            self._cut_torn(fd)
            self._refresh()
            self._write(fd, canonical_json(sealed) + b"\n")
            os.fsync(fd)

    def checkpoint(self, now: datetime | None = None, tenant: Which = ANY) -> list[dict[str, Any]]:
        """Append a signed checkpoint for every chain (or one) with uncovered receipts."""
        if self.signer is None:
            return []
        written = []
        with self._locked() as fd:
            self._cut_torn(fd)
            self._refresh()
            chains = list(self._heads.heads) if tenant is ANY else [tenant]
            for chain in chains:
                line = self._checkpoint_line(chain, _iso(now))
                if line is not None:
                    self._write(fd, line)
                    written.append(_parse(line))
            if written:
                os.fsync(fd)
        return written


def _iso(now: datetime | None) -> str | None:
    return None if now is None else now.isoformat()


class ObjectReceiptLog(ReceiptLog):
    """The log on an object store: one segment object per append (see the module docstring)."""

    def __init__(self, store: Any, key: str, **options: Any) -> None:
        _Base.__init__(self, **options)
        self.path = Path(key)
        self._offset = 0
        self.store = store
        self.key = key
        self.segments = SegmentFolders(store, f"{key}.d")
        self._legacy: list[bytes] | None = None
        self._chains: dict[str, list[tuple[str, bytes, dict[str, Any]]]] = {}
        self._found: list[dict[str, Any]] = []  # entries in the order this process found them

    @property
    def location(self) -> str:
        """Where the log lives, for people."""
        return f"{self.store.uri}/{self.key}.d/ (and {self.key})"

    def _take(self, line: bytes, stream: str | None, name: str) -> None:
        doc = _parse(line)
        self._heads.add(doc)
        self._found.append(doc)
        if stream is not None:
            self._chains.setdefault(stream, []).append((name, line, doc))

    def _refresh(self, tenant: Which = ANY) -> None:
        if self._legacy is None:
            try:
                data = bytes(self.store.get(self.key))
            except FileNotFoundError:
                data = b""
            self._legacy = [ln for ln in data.splitlines(keepends=True) if ln.endswith(b"\n")]
            for line in self._legacy:
                if line.strip():
                    self._take(line, None, "")
        streams = self.segments.streams() if tenant is ANY else [_stream(tenant)]
        for stream in streams:
            for name, data in self.segments.read_new(stream):
                self._take(data, stream, name)

    def since(self, cursor: int, tenant: Which = ANY) -> tuple[list[dict[str, Any]], int]:
        """Entries this process found after position `cursor`, and the new cursor."""
        self._refresh(tenant)
        return self._found[cursor:], len(self._found)

    def read_from(self, offset: int) -> bytes:
        """The stream's bytes from `offset` (of the exported form) to its end."""
        return b"".join(self.lines())[offset:]

    def lines(self) -> Iterator[bytes]:
        """The stream: the pre-segment object, then the chains merged (module docstring)."""
        self._refresh()
        yield from self._legacy or []

        def keyed(stream: str) -> Iterator[tuple[str, str, str, bytes]]:
            stamp = ""
            for name, line, doc in self._chains[stream]:
                stamp = str(doc.get("finished_at") or stamp)
                yield stamp, stream, name, line

        for _, _, _, line in heapq.merge(*(keyed(s) for s in sorted(self._chains))):
            yield line

    def after(self, tenant: ChainKey, sequence: int) -> list[dict[str, Any]]:
        """The chain's receipts with a sequence number above `sequence`, in order."""
        if tenant == LEGACY:
            return super().after(tenant, sequence)
        self._refresh(tenant)
        return [
            doc
            for _, _, doc in self._chains.get(_stream(tenant), [])
            if not is_checkpoint(doc) and int(doc.get("sequence") or 0) > sequence
        ]

    def repair(self) -> bool:
        """Nothing to repair: a segment is created whole or not at all."""
        return False

    def size(self) -> int:
        """Entries found so far (segments are never removed by the product, so never less)."""
        self._refresh()
        return len(self._found)

    def restore(self, sealed: dict[str, Any]) -> None:
        """Create an already sealed receipt's segment again, verbatim (if it is absent)."""
        stream = _stream(chain_of(sealed))
        name = f"{int(sealed['sequence']):012d}{RECEIPT_SUFFIX}"
        line = canonical_json(sealed) + b"\n"
        if self.segments.create(stream, name, line):
            self._saw(stream, name, line)

    def append(self, receipt: dict[str, Any]) -> dict[str, Any]:
        """Seal onto the tenant's chain and create its segment (if absent: never overwrites)."""
        tenant = receipt.get("tenant")
        stream = stream_name(tenant if isinstance(tenant, str) else None)
        for _ in range(20):
            self._refresh(stream_tenant(stream))
            sealed, chain = self._seal(receipt)
            line = canonical_json(sealed) + b"\n"
            name = f"{sealed['sequence']:012d}{RECEIPT_SUFFIX}"
            if self.segments.create(stream, name, line):
                self._saw(stream, name, line)
                if self._due(chain):
                    self._put_checkpoint(chain, str(sealed.get("finished_at") or ""))
                self._provenance(sealed)
                return sealed
        raise RuntimeFactsError(
            Reason.RECEIPT_APPEND_CONFLICT,
            f"could not append to {self.location}: another writer holds the same sequence",
            hint="two processes append for one tenant without holding its commit lock",
        )

    def _put_checkpoint(self, chain: ChainKey, time: str | None) -> dict[str, Any] | None:
        line = self._checkpoint_line(chain, time)
        if line is None:
            return None
        count = self._heads.heads[chain].count
        name = f"{count:012d}{CHECKPOINT_SUFFIX}"
        if not self.segments.create(_stream(chain), name, line):
            self._refresh(chain)  # another process checkpointed this count already
            return None
        self._saw(_stream(chain), name, line)
        return _parse(line)

    def _saw(self, stream: str, name: str, line: bytes) -> None:
        """Take a segment this process just created, without reading it back."""
        self._take(line, stream, name)
        self.segments.last_key[stream] = self.segments.key(stream, name)

    def checkpoint(self, now: datetime | None = None, tenant: Which = ANY) -> list[dict[str, Any]]:
        """Create a signed checkpoint segment for every chain (or one) with uncovered receipts."""
        if self.signer is None:
            return []
        self._refresh(tenant)
        chains = list(self._heads.heads) if tenant is ANY else [tenant]
        written = [self._put_checkpoint(chain, _iso(now)) for chain in chains]
        return [doc for doc in written if doc is not None]


def _stream(tenant: Which) -> str:
    if tenant == LEGACY:
        return GLOBAL_STREAM
    return stream_name(tenant if isinstance(tenant, str) else None)


class ReceiptIndex:
    """What the receipts log says about each batch, kept current by reading only what is new.

    The log is append-only, so a cursor (a byte offset locally, a position among the segments
    found on an object store) is a stable bookmark: `refresh()` (called under the commit lock)
    reads what other processes appended since, and nothing else.
    """

    def __init__(self, log: ReceiptLog | ObjectReceiptLog) -> None:
        self.log = log
        self.offset = 0
        self.status: dict[str, str] = {}
        self.tenant_of: dict[str, str] = {}
        self.tenant_hits: dict[str, int] = {}
        self.last_sequence: dict[ChainKey, int] = {}  # per chain (`LEGACY` for an old log)
        self.last: dict[str, Any] | None = None

    def refresh(self, tenant: Which = ANY) -> ReceiptIndex:
        """Read receipts appended since the last refresh (on S3, of one tenant if given).

        From the start again if the log shrank: it was cut or replaced, and a repair must see
        what is really there.
        """
        if self.offset and self.log.size() < self.offset:
            self.__init__(self.log)  # type: ignore[misc]
        docs, self.offset = self.log.since(self.offset, tenant)
        for doc in docs:
            if not is_checkpoint(doc):
                self._add(doc)
        return self

    def _add(self, receipt: dict[str, Any]) -> None:
        sha = receipt.get("batch_sha256")
        status = receipt.get("status")
        self.last = receipt
        if isinstance(receipt.get("sequence"), int):
            self.last_sequence[chain_of(receipt)] = int(receipt["sequence"])
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
