"""The offline-kit format (SPEC §3, §9): a folder, a manifest listing every file, a signature.

Layout::

    <kit>/manifest.json                      listed files, their sha256, size and subject context
    <kit>/manifest.json.sig                  optional: Ed25519 signature (base64) of manifest.json
    <kit>/reachability/runtime/<scan-id>/<timestamp>-<sha12>.ndjson.gz
    <kit>/receipts/source-receipts.ndjson    optional: the exporting site's receipts, listed too

This module knows the format: parsing and writing manifests, walking a kit tree without
following links, hashing files, and Ed25519 keys and signatures. The verification and
loading workflow lives in `runtime_facts.ops.offline`.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from runtime_facts.errors import Reason, RejectedError, RuntimeFactsError, UsageError
from runtime_facts.stores.cas import cas_uri
from runtime_facts.subject import SubjectContext, validate_tenant
from runtime_facts.trusted_json import load_trusted

MANIFEST = "manifest.json"
SIGNATURE = "manifest.json.sig"
RECEIPTS_FILE = "receipts/source-receipts.ndjson"
SCHEMA_VERSION = 1
KIND = "reachability-runtime"
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_BATCH_PATH_RE = re.compile(r"^reachability/runtime/[^/]+/[^/]+\.ndjson\.gz$")
_RECEIPTS_PATH_RE = re.compile(r"^receipts/[^/]+$")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class KitFile:
    """One listed file: a runtime batch (with its context) or a receipts file (without)."""

    path: str
    sha256: str
    size: int
    context: SubjectContext | None = None

    @property
    def cas_uri(self) -> str:
        """Where the batch lands in CAS."""
        return cas_uri("runtime", self.sha256)

    def to_json(self) -> dict[str, Any]:
        """Manifest entry form."""
        doc: dict[str, Any] = {"path": self.path, "sha256": self.sha256, "size": self.size}
        if self.context is not None:
            doc["callgraphId"] = self.context.callgraph_id
            doc["subject"] = self.context.subject()
        return doc


@dataclass(frozen=True)
class KitManifest:
    """A parsed `manifest.json`."""

    tenant: str
    created_at: str
    files: list[KitFile]
    receipts: list[KitFile] = field(default_factory=list)

    def listed(self) -> dict[str, KitFile]:
        """Every listed file by path."""
        return {f.path: f for f in [*self.files, *self.receipts]}

    def to_json(self) -> dict[str, Any]:
        """The manifest document; files sorted by path."""
        doc: dict[str, Any] = {
            "schemaVersion": SCHEMA_VERSION,
            "kind": KIND,
            "tenant": self.tenant,
            "createdAt": self.created_at,
            "files": [f.to_json() for f in sorted(self.files, key=lambda f: f.path)],
        }
        if self.receipts:
            doc["receipts"] = [f.to_json() for f in sorted(self.receipts, key=lambda f: f.path)]
        return doc

    def dumps(self) -> bytes:
        """The exact manifest bytes (sorted keys, 2-space indent, final newline)."""
        option = orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2
        return orjson.dumps(self.to_json(), option=option) + b"\n"


def _invalid(message: str, hint: str = "") -> RejectedError:
    return RejectedError(
        Reason.KIT_MANIFEST_INVALID,
        f"{MANIFEST}: {message}",
        hint=hint or "re-export the kit; a manifest is written by `runtime-facts offline export`",
    )


def check_kit_path(path: object, where: str) -> str:
    """A listed path must be a clean relative POSIX path inside the kit (`kit_path_escape`)."""
    if not isinstance(path, str) or not path:
        raise _invalid(f"{where}.path must be a non-empty string")
    parts = path.split("/")
    if (
        path.startswith("/")
        or re.match(r"^[A-Za-z]:", path)
        or "\\" in path
        or "\x00" in path
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise RejectedError(
            Reason.KIT_PATH_ESCAPE,
            f"{MANIFEST}: {where}.path {path!r} is not a clean relative path inside the kit",
            hint="a kit lists paths like reachability/runtime/<scan-id>/<file>.ndjson.gz only; "
            "do not load this kit, it may try to write outside its folder",
        )
    return path


def _listed_file(item: object, where: str, pattern: re.Pattern[str]) -> tuple[str, str, int]:
    if not isinstance(item, dict):
        raise _invalid(f"{where} is not an object")
    path = check_kit_path(item.get("path"), where)
    if not pattern.fullmatch(path):
        raise _invalid(f"{where}.path {path!r} does not match {pattern.pattern}")
    sha = item.get("sha256")
    if not isinstance(sha, str) or not _SHA_RE.fullmatch(sha):
        raise _invalid(f"{where}.sha256 must be 64 lower-case hex digits")
    size = item.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise _invalid(f"{where}.size must be a non-negative integer")
    return path, sha, size


def parse_manifest(raw: bytes) -> KitManifest:
    """Parse and check a manifest; every defect has a reason code and names the entry."""
    try:
        doc = load_trusted(raw, MANIFEST, hint="do not load this kit; re-export it at the source")
    except ValueError as exc:
        raise _invalid(f"not valid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise _invalid("the document is not a JSON object")
    for key in ("schemaVersion", "kind", "tenant", "createdAt", "files"):
        if key not in doc:
            raise _invalid(f"missing field {key!r}")
    version, kind = doc["schemaVersion"], doc["kind"]
    if isinstance(version, bool) or version != SCHEMA_VERSION or kind != KIND:
        raise RejectedError(
            Reason.KIT_MANIFEST_UNSUPPORTED,
            f"{MANIFEST}: schemaVersion {version!r} / kind {kind!r} is not supported "
            f"(expected {SCHEMA_VERSION} / {KIND!r})",
            hint="export the kit with a runtime-facts version that writes schemaVersion 1",
        )
    tenant = doc["tenant"]
    try:
        validate_tenant(tenant)
    except UsageError as exc:
        raise _invalid(exc.message) from exc
    created = doc["createdAt"]
    try:
        if not isinstance(created, str) or datetime.fromisoformat(created).tzinfo is None:
            raise ValueError(created)
    except ValueError as exc:
        raise _invalid("createdAt must be an ISO-8601 timestamp with a time zone") from exc
    if not isinstance(doc["files"], list) or not doc["files"]:
        raise _invalid("files must be a non-empty list")
    files: list[KitFile] = []
    by_sha: dict[str, SubjectContext] = {}
    for i, item in enumerate(doc["files"]):
        where = f"files[{i}]"
        path, sha, size = _listed_file(item, where, _BATCH_PATH_RE)
        if item.get("tenant", tenant) != tenant:
            raise _invalid(f"{where}.tenant differs from the kit tenant {tenant!r}")
        try:
            ctx = SubjectContext.from_json({**item, "tenant": tenant})
        except RuntimeFactsError as exc:
            raise _invalid(f"{where}: {exc.message}") from exc
        if by_sha.setdefault(sha, ctx) != ctx:
            raise _invalid(f"{where}: the same bytes ({sha[:12]}…) are listed for two subjects")
        files.append(KitFile(path, sha, size, ctx))
    receipts_doc = doc.get("receipts", [])
    if not isinstance(receipts_doc, list):
        raise _invalid("receipts must be a list")
    receipts = [
        KitFile(*_listed_file(item, f"receipts[{i}]", _RECEIPTS_PATH_RE))
        for i, item in enumerate(receipts_doc)
    ]
    paths = [f.path for f in [*files, *receipts]]
    if len(set(paths)) != len(paths):
        dup = sorted(p for p in set(paths) if paths.count(p) > 1)[0]
        raise _invalid(f"{dup!r} is listed twice")
    return KitManifest(tenant, created, files, receipts)


def scan_tree(root: Path) -> dict[str, int]:
    """Every regular file under the kit (relative POSIX path → size), never following links.

    Raises:
        RejectedError: `kit_symlink`, `kit_hardlink` (a file with more than one link could be
            changed through its other name) or `kit_special_file` (fifo, device, socket).
    """
    found: dict[str, int] = {}
    for rel, st in _walk(root, ""):
        mode = st.st_mode
        if stat.S_ISLNK(mode):
            raise RejectedError(
                Reason.KIT_SYMLINK,
                f"{root / rel} is a symbolic link",
                hint="a kit holds plain files only: copy the real file into the kit",
            )
        if not stat.S_ISREG(mode):
            raise RejectedError(
                Reason.KIT_SPECIAL_FILE,
                f"{root / rel} is not a regular file (mode {stat.filemode(mode)})",
                hint="remove it: a kit holds plain files and folders only",
            )
        if st.st_nlink > 1:
            raise RejectedError(
                Reason.KIT_HARDLINK,
                f"{root / rel} has {st.st_nlink} hard links",
                hint="copy the kit (cp -r, rsync without -H) so every file has a single link",
            )
        found[rel] = st.st_size
    return found


def _walk(root: Path, prefix: str) -> Iterator[tuple[str, os.stat_result]]:
    with os.scandir(root / prefix if prefix else root) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            rel = f"{prefix}/{entry.name}" if prefix else entry.name
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                yield from _walk(root, rel)
            else:
                yield rel, st


def _open_regular(root: Path, rel: str) -> int:
    """Open a listed file without following a link at its last component."""
    try:
        fd = os.open(root.joinpath(*rel.split("/")), os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError as exc:
        raise RejectedError(
            Reason.KIT_FILE_MISSING,
            f"{root / rel} disappeared while the kit was read",
            hint="do not modify a kit while it is verified or loaded; copy it and retry",
        ) from exc
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise RejectedError(
            Reason.KIT_SYMLINK,
            f"{root / rel} is a symbolic link",
            hint="a kit holds plain files only: copy the real file into the kit",
        ) from exc
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
        os.close(fd)
        reason = Reason.KIT_HARDLINK if stat.S_ISREG(st.st_mode) else Reason.KIT_SPECIAL_FILE
        raise RejectedError(
            reason,
            f"{root / rel} changed while the kit was read",
            hint="do not modify a kit while it is verified or loaded; copy it and retry",
        )
    return fd


def hash_file(root: Path, rel: str) -> tuple[int, str]:
    """(size, sha256 hex) of a kit file, streamed."""
    digest = hashlib.sha256()
    size = 0
    with os.fdopen(_open_regular(root, rel), "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def read_file(root: Path, rel: str, limit: int | None = None) -> bytes:
    """The bytes of a kit file (refusing links); `limit` bounds what is read."""
    with os.fdopen(_open_regular(root, rel), "rb") as handle:
        return handle.read() if limit is None else handle.read(limit + 1)


# Keys and signatures ------------------------------------------------------------------


def _b64(text: str | bytes) -> bytes | None:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None


def _key_error(what: str, where: str) -> UsageError:
    return UsageError(
        Reason.KIT_KEY_INVALID,
        f"{where} is not an Ed25519 {what} key",
        hint="use `runtime-facts offline keygen --out DIR` (raw 32-byte keys, base64), "
        "or a PEM Ed25519 key",
    )


def public_key_from(value: str) -> Ed25519PublicKey:
    """A public key from a setting: base64 of the raw 32 bytes, or a path to a key file."""
    raw = _b64(value)
    if raw is not None and len(raw) == 32:
        return Ed25519PublicKey.from_public_bytes(raw)
    path = Path(value.strip()).expanduser()
    if not path.is_file():
        raise _key_error("public", f"offline.public_key {value[:60]!r}")
    data = path.read_bytes()
    if data.lstrip().startswith(b"-----BEGIN"):
        key = serialization.load_pem_public_key(data)
        if isinstance(key, Ed25519PublicKey):
            return key
        raise _key_error("public", str(path))
    raw = data if len(data) == 32 else _b64(data)
    if raw is None or len(raw) != 32:
        raise _key_error("public", str(path))
    return Ed25519PublicKey.from_public_bytes(raw)


def private_key_from(path: Path) -> Ed25519PrivateKey:
    """A private key file: base64 of the raw 32-byte seed, the raw bytes, or PEM (PKCS#8)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(
            Reason.KIT_KEY_INVALID,
            f"cannot read private key {path}: {exc.strerror}",
            hint="pass the file written by `runtime-facts offline keygen`",
        ) from exc
    if data.lstrip().startswith(b"-----BEGIN"):
        key = serialization.load_pem_private_key(data, password=None)
        if isinstance(key, Ed25519PrivateKey):
            return key
        raise _key_error("private", str(path))
    raw = data if len(data) == 32 else _b64(data)
    if raw is None or len(raw) != 32:
        raise _key_error("private", str(path))
    return Ed25519PrivateKey.from_private_bytes(raw)


def raw_b64(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """Base64 of a key's raw bytes (the seed for a private key)."""
    if isinstance(key, Ed25519PrivateKey):
        raw = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
    else:
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def sign_manifest(manifest: bytes, key: Ed25519PrivateKey) -> bytes:
    """The `manifest.json.sig` content: base64 Ed25519 signature of the exact bytes + newline."""
    return base64.b64encode(key.sign(manifest)) + b"\n"


def signature_valid(manifest: bytes, signature: bytes, key: Ed25519PublicKey) -> bool:
    """True when `signature` (base64, surrounding whitespace ignored) signs `manifest`."""
    raw = _b64(signature)
    if raw is None or len(raw) != 64:
        return False
    try:
        key.verify(raw, manifest)
    except InvalidSignature:
        return False
    return True
