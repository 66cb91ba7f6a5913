"""Offline kits (air gap): export from CAS, verify completely, load into CAS, ingest.

Nothing from a kit reaches CAS or the tables before the whole kit has verified: tree (no
links, no special files), manifest (well-formed, signed when required), listing (no missing,
no unlisted file, no path escaping the kit) and content (every size and sha256).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from runtime_facts.errors import NotFoundError, Reason, RejectedError, UsageError
from runtime_facts.home import Home
from runtime_facts.pipeline.ingest import ingest
from runtime_facts.pipeline.outcomes import (
    BatchOutcome,
    Clock,
    IngestOptions,
    IngestSummary,
    utc_now,
)
from runtime_facts.stores.cas import sha256_hex
from runtime_facts.stores.offline_kit import (
    MANIFEST,
    MAX_MANIFEST_BYTES,
    RECEIPTS_FILE,
    SIGNATURE,
    KitFile,
    KitManifest,
    hash_file,
    parse_manifest,
    private_key_from,
    public_key_from,
    raw_b64,
    read_file,
    scan_tree,
    sign_manifest,
    signature_valid,
)
from runtime_facts.stores.receipts import canonical_json
from runtime_facts.subject import SubjectContext, validate_id, validate_tenant

Progress = Callable[[str], None]
PRIVATE_KEY_FILE = "offline-kit.key"
PUBLIC_KEY_FILE = "offline-kit.pub"
_NO_STAMP = "00000000T000000Z"

_UNSAFE = re.compile(r"[^A-Za-z0-9._@-]")


@dataclass
class KitReport:
    """A kit that verified: what it holds and how it was checked."""

    kit: str
    tenant: str
    created_at: str
    files: list[KitFile]
    receipts: list[KitFile] = field(default_factory=list)
    total_bytes: int = 0
    signed: bool = False
    sealed: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "kit": self.kit,
            "tenant": self.tenant,
            "createdAt": self.created_at,
            "signed": self.signed,
            "sealed": self.sealed,
            "totalBytes": self.total_bytes,
            "files": [
                {
                    **f.to_json(),
                    "casUri": f.cas_uri,
                    "subjectKey": f.context.subject_key if f.context else None,
                }
                for f in self.files
            ],
            "receipts": [f.to_json() for f in self.receipts],
        }


def _kit_root(kit_path: Path) -> Path:
    if not kit_path.exists():
        raise NotFoundError(
            Reason.KIT_NOT_FOUND,
            f"no offline kit at {kit_path}",
            hint="pass the kit folder, the one holding manifest.json",
        )
    if not kit_path.is_dir():
        raise UsageError(
            Reason.KIT_NOT_A_DIRECTORY,
            f"{kit_path} is not a folder",
            hint="unpack the kit first; pass the folder holding manifest.json",
        )
    return kit_path.resolve()


def _check_signature(root: Path, raw: bytes, signed: bool, key: str | None, sealed: bool) -> bool:
    if not signed:
        if sealed:
            raise RejectedError(
                Reason.SEALED_MODE_EVIDENCE_INVALID,
                f"{root / MANIFEST} is not signed; sealed mode accepts signed kits only",
                hint="sign the kit at the exporting site: runtime-facts offline sign KIT --key KEY",
            )
        return False
    if key is None:
        reason = Reason.SEALED_MODE_EVIDENCE_INVALID if sealed else Reason.KIT_PUBLIC_KEY_MISSING
        error = RejectedError if sealed else UsageError
        raise error(
            reason,
            f"{root / SIGNATURE} cannot be checked: no public key is configured",
            hint="set RUNTIME_FACTS__OFFLINE__PUBLIC_KEY (base64 or key file) or --public-key",
        )
    if not signature_valid(raw, read_file(root, SIGNATURE, limit=4096), public_key_from(key)):
        raise RejectedError(
            Reason.SEALED_MODE_EVIDENCE_INVALID if sealed else Reason.KIT_SIGNATURE_INVALID,
            f"{root / SIGNATURE} does not verify against the configured public key",
            hint="the manifest was changed after signing, or signed with another key: "
            "get an intact kit from the exporting site; do not load this one",
        )
    return True


def verify_kit(
    home: Home,
    kit_path: Path,
    *,
    tenant: str | None = None,
    sealed: bool = False,
    public_key: str | None = None,
    on_file: Progress | None = None,
) -> KitReport:
    """Verify a kit completely, reading nothing into the home.

    Args:
        home: supplies settings (public key, sealed mode); never written.
        kit_path: the kit folder.
        tenant: when given, the kit must belong to this tenant.
        sealed: sealed mode (also on when the home's settings say so): a valid signature
            is required.
        public_key: overrides `settings.offline.public_key`.
        on_file: called with each file's path once it is hashed (progress).

    Returns:
        What the kit holds.

    Raises:
        RejectedError: one reason code per defect (`kit_*`, `sealed_mode_evidence_invalid`).
        NotFoundError: no kit at `kit_path`.
        UsageError: not a folder, or a signed kit and no public key to check it.
    """
    sealed = sealed or home.settings.ingest.sealed
    key = public_key or home.settings.offline.public_key
    if tenant is not None:
        validate_tenant(tenant)
    root = _kit_root(kit_path)
    tree = scan_tree(root)
    if MANIFEST not in tree:
        raise RejectedError(
            Reason.KIT_MANIFEST_MISSING,
            f"{root} has no {MANIFEST}",
            hint="pass the kit folder itself (the one holding manifest.json)",
        )
    raw = read_file(root, MANIFEST, limit=MAX_MANIFEST_BYTES)
    if len(raw) > MAX_MANIFEST_BYTES:
        raise RejectedError(Reason.KIT_MANIFEST_INVALID, f"{root / MANIFEST} is too large")
    signed = _check_signature(root, raw, SIGNATURE in tree, key, sealed)
    manifest = parse_manifest(raw)
    if tenant is not None and manifest.tenant != tenant:
        raise RejectedError(
            Reason.KIT_TENANT_MISMATCH,
            f"{root / MANIFEST} belongs to tenant {manifest.tenant!r}, not {tenant!r}",
            hint="load the kit for its own tenant, or ask for the right tenant's kit",
        )
    _check_listing(root, manifest, tree)
    for entry in [*manifest.files, *manifest.receipts]:
        _check_content(root, entry, tree[entry.path])
        if on_file is not None:
            on_file(entry.path)
    return KitReport(
        kit=str(root),
        tenant=manifest.tenant,
        created_at=manifest.created_at,
        files=sorted(manifest.files, key=lambda f: f.path),
        receipts=manifest.receipts,
        total_bytes=sum(f.size for f in manifest.files),
        signed=signed,
        sealed=sealed,
    )


def _check_listing(root: Path, manifest: KitManifest, tree: dict[str, int]) -> None:
    listed = manifest.listed()
    missing = sorted(set(listed) - set(tree))
    if missing:
        raise RejectedError(
            Reason.KIT_FILE_MISSING,
            f"{len(missing)} listed file(s) missing from {root}, first: {missing[0]}",
            hint="the kit was copied incompletely; copy it again from the exporting site",
        )
    unlisted = sorted(set(tree) - set(listed) - {MANIFEST, SIGNATURE})
    if unlisted:
        raise RejectedError(
            Reason.KIT_FILE_UNLISTED,
            f"{len(unlisted)} file(s) in {root} are not in the manifest, first: {unlisted[0]}",
            hint="a kit holds exactly what its manifest lists: remove the extra files "
            "(or re-export the kit if they belong in it)",
        )
    for path, entry in sorted(listed.items()):
        if tree[path] != entry.size:
            raise RejectedError(
                Reason.KIT_SIZE_MISMATCH,
                f"{root / path} is {tree[path]} bytes, the manifest says {entry.size}",
                hint="the file was truncated or changed in transit; copy the kit again",
            )


def _check_content(root: Path, entry: KitFile, listed_size: int) -> None:
    size, sha = hash_file(root, entry.path)
    if size != listed_size:
        raise RejectedError(
            Reason.KIT_SIZE_MISMATCH, f"{root / entry.path} changed size while being verified"
        )
    if sha != entry.sha256:
        raise RejectedError(
            Reason.KIT_DIGEST_MISMATCH,
            f"{root / entry.path} has sha256 {sha}, the manifest says {entry.sha256}",
            hint="the file was altered or corrupted in transit; copy the kit again",
        )


def load_kit(
    home: Home,
    kit_path: Path,
    *,
    tenant: str | None = None,
    sealed: bool = False,
    public_key: str | None = None,
    on_file: Progress | None = None,
) -> list[str]:
    """Verify a kit, then put every batch into CAS with its subject context.

    Returns:
        The batch digests, sorted.

    Raises:
        RejectedError: the kit failed verification (nothing was loaded), or a batch is already
            staged with another context (`context_conflict`, nothing was loaded). A file that
            changes between verification and load stops the load at that file; the batches
            put before it had verified and stay staged.
    """
    report = verify_kit(home, kit_path, tenant=tenant, sealed=sealed, public_key=public_key)
    root = Path(report.kit)
    for entry in report.files:
        assert entry.context is not None
        _check_no_conflict(home, entry.sha256, entry.context)
    for entry in report.files:
        data = read_file(root, entry.path)
        if sha256_hex(data) != entry.sha256:  # changed between verification and load
            raise RejectedError(
                Reason.KIT_DIGEST_MISMATCH,
                f"{root / entry.path} changed after verification",
                hint="do not modify a kit while it is loaded; copy it again and retry",
            )
        home.cas.put("runtime", data, entry.context)
        if on_file is not None:
            on_file(entry.path)
    return sorted({f.sha256 for f in report.files})


def _check_no_conflict(home: Home, sha: str, context: SubjectContext) -> None:
    if not home.cas.exists("runtime", sha):
        return
    try:
        staged = home.cas.context("runtime", sha)
    except NotFoundError:
        return
    if staged != context.to_json():
        raise RejectedError(
            Reason.CONTEXT_CONFLICT,
            f"cas://reachability/runtime/{sha} is already staged for another subject",
            hint="the same bytes cannot belong to two subjects; check the kit's manifest",
        )


def ingest_kit(
    home: Home,
    kit_path: Path,
    *,
    tenant: str | None = None,
    sealed: bool = False,
    allow_partial: bool | None = None,
    public_key: str | None = None,
    clock: Clock = utc_now,
    on_batch: Callable[[BatchOutcome], None] | None = None,
) -> IngestSummary:
    """Verify and load a kit, then ingest its batches with `source="offline-kit"`.

    Re-ingesting a kit changes nothing: its batches come back as `duplicate` receipts.
    """
    shas = load_kit(home, kit_path, tenant=tenant, sealed=sealed, public_key=public_key)
    return ingest(
        home,
        shas,
        tenant=tenant,
        source="offline-kit",
        allow_partial=allow_partial,
        sealed=(sealed or home.settings.ingest.sealed) or None,
        clock=clock,
        on_batch=on_batch,
    )


def _first_stamp(data: bytes) -> str:
    """The first observedAt of a batch as `YYYYMMDDTHHMMSSZ` (file names come from the data)."""
    try:
        text = zlib.decompressobj(31).decompress(data, 1 << 20)
    except zlib.error:
        return _NO_STAMP
    for line in text.split(b"\n"):
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        value = doc.get("observedAt", doc.get("timestamp")) if isinstance(doc, dict) else None
        if isinstance(value, str):
            try:
                ts = datetime.fromisoformat(value)
            except ValueError:
                continue
            ts = ts if ts.tzinfo else ts.replace(tzinfo=UTC)
            return ts.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return _NO_STAMP


def kit_folder(subject_key: str) -> str:
    """The kit folder of a subject's batches: the scan id for `scan:` subjects (SPEC §3),
    else the subject key with every character outside `[A-Za-z0-9._@-]` replaced by `-`."""
    kind, _, value = subject_key.partition(":")
    if kind == "scan" and value:
        return value
    return _UNSAFE.sub("-", subject_key)


def export_kit(
    home: Home,
    *,
    tenant: str,
    scan_id: str | None = None,
    subject_key: str | None = None,
    out: Path,
    include_receipts: bool = False,
    private_key: Path | None = None,
    now: datetime,
) -> Path:
    """Write every CAS batch of one subject into a new kit folder (same data, same bytes).

    Args:
        home: the source home.
        tenant: the batches' tenant.
        scan_id: the subject's scanId (the same as `subject_key="scan:<id>"`).
        subject_key: any subject key: `image:<digest>`, `scan:<id>`, `component:<n>@<v>`.
        out: the kit folder to create (must not exist, or be empty).
        include_receipts: add this home's receipts for the exported batches.
        private_key: sign the manifest with this Ed25519 key.
        now: `createdAt`.

    Returns:
        The kit folder.

    Raises:
        NotFoundError: no staged batch for that tenant and subject.
        UsageError: `out` exists and is not empty, or not exactly one of `scan_id` and
            `subject_key` was given.
    """
    validate_tenant(tenant)
    if (scan_id is None) == (subject_key is None):
        raise UsageError(Reason.INVALID_CONTEXT, "give exactly one of scan_id or subject_key")
    if scan_id is not None:
        subject_key = f"scan:{validate_id('scanId', scan_id)}"
    assert subject_key is not None
    folder = kit_folder(subject_key)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(
            Reason.KIT_OUTPUT_EXISTS,
            f"{out} already exists",
            hint="choose a new folder: a kit is never written over another",
        )
    key = private_key_from(private_key) if private_key is not None else None
    files: dict[str, tuple[KitFile, bytes]] = {}
    for sha in home.cas.list("runtime"):
        try:
            ctx = home.cas.subject_context(sha)
        except (NotFoundError, UsageError):
            continue  # not staged with a context: nothing to say whose it is
        if ctx.tenant != tenant or ctx.subject_key != subject_key:
            continue
        data = home.cas.get("runtime", sha)
        path = f"reachability/runtime/{folder}/{_first_stamp(data)}-{sha[:12]}.ndjson.gz"
        files[path] = (KitFile(path, sha, len(data), ctx), data)
    if not files:
        raise NotFoundError(
            Reason.UNKNOWN_SUBJECT,
            f"no staged batch for tenant {tenant!r} and subject {subject_key!r} under {home.uri}",
            hint="check the subject; `runtime-facts cas put ... --scan-id` (or --image-digest, "
            "--component/--version) stages batches",
        )
    receipts: list[KitFile] = []
    receipts_bytes = b""
    if include_receipts:
        shas = {f.sha256 for f, _ in files.values()}
        lines = [canonical_json(r) + b"\n" for r in home.receipts if r.get("batch_sha256") in shas]
        if lines:
            receipts_bytes = b"".join(lines)
            receipts.append(
                KitFile(RECEIPTS_FILE, sha256_hex(receipts_bytes), len(receipts_bytes), None)
            )
    manifest = KitManifest(
        tenant=tenant,
        created_at=now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        files=[f for f, _ in files.values()],
        receipts=receipts,
    )
    raw = manifest.dumps()
    parse_manifest(raw)  # what a verifying site will check, before anything is written
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    try:
        for path, (_, data) in sorted(files.items()):
            _write(tmp, path, data)
        if receipts:
            _write(tmp, RECEIPTS_FILE, receipts_bytes)
        _write(tmp, MANIFEST, raw)
        if key is not None:
            _write(tmp, SIGNATURE, sign_manifest(raw, key))
        tmp.chmod(0o755)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def _write(root: Path, rel: str, data: bytes) -> None:
    path = root.joinpath(*rel.split("/"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


@dataclass(frozen=True)
class KeyPair:
    """Files written by `keygen` and the public key to configure on verifying sites."""

    private_key: Path
    public_key: Path
    public_key_b64: str


def keygen(out_dir: Path, *, force: bool = False) -> KeyPair:
    """Create an Ed25519 key pair: base64 of the raw bytes, private key mode 0600."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private_path, public_path = out_dir / PRIVATE_KEY_FILE, out_dir / PUBLIC_KEY_FILE
    for path in (private_path, public_path):
        if path.exists() and not force:
            raise UsageError(
                Reason.KIT_OUTPUT_EXISTS,
                f"{path} already exists",
                hint="choose another --out folder, or pass --force to replace the key pair",
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    public = raw_b64(key.public_key())
    with contextlib.suppress(FileNotFoundError):
        private_path.unlink()
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(raw_b64(key) + "\n")
    public_path.write_text(public + "\n")
    return KeyPair(private_path, public_path, public)


def sign_kit(kit_path: Path, private_key: Path) -> tuple[Path, str]:
    """Sign a kit's manifest in place; returns the signature file and the signer's public key."""
    root = _kit_root(kit_path)
    key = private_key_from(private_key)
    if MANIFEST not in scan_tree(root):
        raise RejectedError(Reason.KIT_MANIFEST_MISSING, f"{root} has no {MANIFEST}")
    raw = read_file(root, MANIFEST, limit=MAX_MANIFEST_BYTES)
    parse_manifest(raw)  # never sign something that would not verify
    sig_path = root / SIGNATURE
    tmp = root / f".{SIGNATURE}.tmp"
    try:
        tmp.write_bytes(sign_manifest(raw, key))
        tmp.replace(sig_path)
    finally:
        tmp.unlink(missing_ok=True)
    return sig_path, raw_b64(key.public_key())


def verify_kit_task(home: Home, options: IngestOptions, kit_path: Path) -> dict[str, Any]:
    """`verify_kit` for a DAG task: a bad kit fails the run without retries (no retry helps);
    the per-file listing goes to the task log, the XCom carries the kit's identity only."""
    import logging

    from airflow.sdk.exceptions import AirflowFailException

    from runtime_facts.pipeline.publish import to_jsonable

    sealed = options.sealed_mode(home.settings.ingest)
    try:
        report = verify_kit(home, kit_path, tenant=options.tenant, sealed=sealed)
    except (NotFoundError, RejectedError, UsageError) as exc:
        raise AirflowFailException(str(exc)) from exc
    doc: dict[str, Any] = to_jsonable(report)
    log = logging.getLogger("airflow.task")
    for entry in doc.get("files") or []:
        log.info("verified %s sha256=%s", entry.get("path"), entry.get("sha256"))
    return {**doc, "files": len(doc.get("files") or []), "receipts": len(doc.get("receipts") or [])}


def load_kit_task(
    home: Home, options: IngestOptions, kit_path: Path, max_chunks: int
) -> list[list[str]]:
    """`load_kit` for a DAG task: the kit's batches in chunks for mapping."""
    from airflow.sdk.exceptions import AirflowFailException

    from runtime_facts.pipeline.ingest import plan_chunks

    sealed = options.sealed_mode(home.settings.ingest)
    try:
        shas = load_kit(home, kit_path, tenant=options.tenant, sealed=sealed)
    except (NotFoundError, RejectedError, UsageError) as exc:
        raise AirflowFailException(str(exc)) from exc
    return plan_chunks(sorted(set(shas)), max_chunks)
