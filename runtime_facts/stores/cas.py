"""Content-addressed store (SPEC §3): objects named by the sha256 of their exact bytes."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

import orjson

from runtime_facts.errors import NotFoundError, Reason, RejectedError, UsageError
from runtime_facts.stores.objects import ObjectStore
from runtime_facts.subject import SubjectContext, validate_id, validate_tenant
from runtime_facts.trusted_json import load_trusted

Kind = Literal["runtime", "graphs"]
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_URI_RE = re.compile(r"^cas://reachability/(runtime|graphs)/([0-9a-f]{64})$")
CONTEXT_SUFFIX = ".context.json"


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def cas_uri(kind: Kind, sha: str) -> str:
    """`cas://reachability/<kind>/<sha>`."""
    return f"cas://reachability/{kind}/{sha}"


def parse_cas_uri(uri: str) -> tuple[Kind, str]:
    """Split a CAS URI into kind and digest; UsageError when malformed."""
    match = _URI_RE.fullmatch(uri)
    if not match:
        raise UsageError(Reason.INVALID_CONTEXT, f"not a CAS URI: {uri!r}")
    return match.group(1), match.group(2)  # type: ignore[return-value]


@dataclass(frozen=True)
class PutResult:
    """What `put` did: the address, and whether the bytes were new."""

    uri: str
    sha256: str
    size: int
    created: bool


class CasStore:
    """CAS over any ObjectStore; every read re-verifies the digest."""

    def __init__(self, objects: ObjectStore) -> None:
        self.objects = objects

    @staticmethod
    def _key(kind: Kind, sha: str) -> str:
        if not _SHA_RE.fullmatch(sha):
            raise UsageError(Reason.INVALID_CONTEXT, f"not a sha256 digest: {sha!r}")
        return f"cas/reachability/{kind}/{sha}"

    def put(
        self, kind: Kind, data: bytes, context: SubjectContext | dict[str, str] | None
    ) -> PutResult:
        """Store bytes (atomically, never overwriting) and their context sidecar.

        The first context recorded for some bytes wins, even when several clients stage them
        at once: the sidecar is created only if absent, and a put whose context differs from
        the recorded one is refused (`context_conflict`), since one batch belongs to one
        subject. The same bytes with the same context again is a no-op.
        """
        sha = sha256_hex(data)
        key = self._key(kind, sha)
        if context is not None:
            doc = context.to_json() if isinstance(context, SubjectContext) else context
            sidecar = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
            # Sidecar first: an object without context is never picked up half-staged.
            if not self.objects.put(key + CONTEXT_SUFFIX, sidecar, overwrite=False):
                self._check_same_context(kind, sha, doc)
        created = self.objects.put(key, data, overwrite=False)
        if not created:
            self.get(kind, sha)  # an existing object must still be intact
        return PutResult(cas_uri(kind, sha), sha, len(data), created)

    def _check_same_context(self, kind: Kind, sha: str, doc: Mapping[str, object]) -> None:
        """The sidecar already there must record `doc`; else `context_conflict`."""
        recorded = self.context(kind, sha)
        if recorded != doc:
            raise RejectedError(
                Reason.CONTEXT_CONFLICT,
                f"{cas_uri(kind, sha)} is already staged with another context "
                f"({_describe(recorded)}); not staged for {_describe(doc)}",
                hint="the same bytes cannot belong to two subjects; re-emit the batch",
            )

    def get(self, kind: Kind, sha: str) -> bytes:
        """Read and re-verify; NotFoundError on a miss, RejectedError on a digest mismatch."""
        key = self._key(kind, sha)
        try:
            data = self.objects.get(key)
        except FileNotFoundError as exc:
            raise NotFoundError(Reason.CAS_MISS, f"CAS miss: {cas_uri(kind, sha)}") from exc
        actual = sha256_hex(data)
        if actual != sha:
            raise RejectedError(
                Reason.CAS_DIGEST_MISMATCH,
                f"{cas_uri(kind, sha)} does not hash to its address (got {actual})",
                hint="the object was altered on disk; restore it from the source or re-stage",
            )
        return data

    def exists(self, kind: Kind, sha: str) -> bool:
        """True when the object is present (not verified)."""
        return self.objects.exists(self._key(kind, sha))

    def size(self, kind: Kind, sha: str) -> int:
        """Stored size of an object."""
        return self.objects.size(self._key(kind, sha))

    def _read_sidecar(self, key: str) -> bytes | None:
        try:
            return self.objects.get(key + CONTEXT_SUFFIX)
        except FileNotFoundError:
            return None

    def context(self, kind: Kind, sha: str) -> dict[str, object]:
        """The sidecar document; NotFoundError when the object has none."""
        raw = self._read_sidecar(self._key(kind, sha))
        if raw is None:
            raise NotFoundError(Reason.CAS_MISS, f"no context sidecar for {cas_uri(kind, sha)}")
        try:
            doc = load_trusted(raw, f"the context sidecar of {cas_uri(kind, sha)}")
        except ValueError:
            doc = None
        if not isinstance(doc, dict):  # an altered sidecar is bad data, not a crash
            raise RejectedError(
                Reason.INVALID_CONTEXT,
                f"the context sidecar of {cas_uri(kind, sha)} is not a JSON object",
                hint="the sidecar was altered; restore it or re-stage the batch",
            )
        return doc

    def verify_context(self, kind: Kind, sha: str) -> None:
        """Check an object's sidecar: present, strict JSON, a valid context, in the form staged.

        Raises:
            RejectedError: `context_missing`, `invalid_context`, `duplicate_json_key`, or
                `context_mismatch` (valid, but not what `put` writes for it, e.g. a
                `subjectKey` that is not its subject's key).
        """
        try:
            doc = self.context(kind, sha)
        except NotFoundError as exc:
            raise RejectedError(
                Reason.CONTEXT_MISSING,
                f"{cas_uri(kind, sha)} has no context sidecar",
                hint="re-stage the batch with `runtime-facts cas put` and its context",
            ) from exc
        if kind == "runtime":
            expected: dict[str, object] = SubjectContext.from_json(doc).to_json()
        else:
            validate_tenant(doc.get("tenant"))  # type: ignore[arg-type]
            validate_id("callgraphId", doc.get("callgraphId"))  # type: ignore[arg-type]
            expected = doc
        if expected != doc:
            raise RejectedError(
                Reason.CONTEXT_MISMATCH,
                f"the context sidecar of {cas_uri(kind, sha)} is not the one staged "
                f"(recorded {_describe(doc)}, its subject gives {_describe(expected)})",
                hint="the sidecar was edited; restore it from the source or re-stage the batch",
            )

    def subject_context(self, sha: str) -> SubjectContext:
        """The subject context of a runtime batch."""
        return SubjectContext.from_json(self.context("runtime", sha))

    def list(self, kind: Kind) -> Iterator[str]:
        """Digests of the objects of one kind, sorted."""
        for key in self.objects.list(f"cas/reachability/{kind}"):
            name = key.rsplit("/", 1)[-1]
            if _SHA_RE.fullmatch(name):
                yield name

    def delete(self, kind: Kind, sha: str) -> None:
        """Remove an object and its sidecar (retention only)."""
        key = self._key(kind, sha)
        self.objects.delete(key)
        self.objects.delete(key + CONTEXT_SUFFIX)


def _describe(doc: Mapping[str, object]) -> str:
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS).decode()
