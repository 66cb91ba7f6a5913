"""DSSE envelopes (Dead Simple Signing Envelope v1) with Ed25519: sign, verify, build payloads.

An envelope is `{"payload": b64(body), "payloadType": TYPE, "signatures": [{"keyid", "sig"}]}`;
the signature covers PAE(TYPE, body) = `"DSSEv1" SP LEN(TYPE) SP TYPE SP LEN(body) SP body`,
LEN being the ASCII decimal byte length (github.com/secure-systems-lab/dsse, protocol.md).
Base64 is the standard alphabet with padding; `keyid` is the hex sha256 of the raw 32-byte
Ed25519 public key. Bodies are canonical JSON (sorted keys, no whitespace, UTF-8), so the
same checkpoint or statement always has the same bytes.

Two payloads are written, when a site signing key is configured:
- a **checkpoint** of one receipts chain (`CHECKPOINT_TYPE`): which chain (`tenant`, `scope`),
  how many receipts it holds (`count`), the `receipt_sha256` of the last one (`head`), `time`;
- a **provenance statement** per accepted batch: an in-toto Statement v1 (`IN_TOTO_TYPE`)
  whose subject is the batch (`cas://` URI, sha256) and whose predicate gives the receipt,
  counts and table versions it committed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from runtime_facts.stores.offline_kit import private_key_from

CHECKPOINT_TYPE = "application/vnd.runtime-facts.checkpoint+json"
IN_TOTO_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PROVENANCE_PREDICATE = "https://runtime-facts.dev/ingest-provenance/v1"
CHECKPOINT_SCHEMA = "runtime-facts.checkpoint.v1"


def canonical(doc: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8 (the project's canonical JSON)."""
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z)


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: the exact bytes that are signed."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(body), body)


def key_id(key: Ed25519PublicKey) -> str:
    """Hex sha256 of the raw public key bytes."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True)
class Signer:
    """A site signing key (Ed25519) and its key id."""

    key: Ed25519PrivateKey

    @classmethod
    def from_file(cls, path: Path) -> Signer:
        """The key file written by `runtime-facts offline keygen` (or a PEM PKCS#8 key)."""
        return cls(private_key_from(path))

    @property
    def keyid(self) -> str:
        """Key id of the public half."""
        return key_id(self.key.public_key())

    def envelope(self, payload_type: str, body: bytes) -> dict[str, Any]:
        """A signed DSSE envelope over `body`."""
        sig = self.key.sign(pae(payload_type, body))
        return {
            "payload": base64.b64encode(body).decode(),
            "payloadType": payload_type,
            "signatures": [{"keyid": self.keyid, "sig": base64.b64encode(sig).decode()}],
        }


def _b64(text: object) -> bytes | None:
    if not isinstance(text, str):
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        try:  # DSSE allows the URL-safe alphabet too
            return base64.urlsafe_b64decode(text)
        except (binascii.Error, ValueError):
            return None


def payload_of(envelope: dict[str, Any]) -> bytes | None:
    """The envelope's decoded payload bytes (None when malformed)."""
    return _b64(envelope.get("payload"))


def signed_by(envelope: dict[str, Any], key: Ed25519PublicKey) -> bool:
    """True when one of the envelope's signatures verifies with `key` over PAE(type, payload)."""
    body = payload_of(envelope)
    kind = envelope.get("payloadType")
    signatures = envelope.get("signatures")
    if body is None or not isinstance(kind, str) or not isinstance(signatures, list):
        return False
    message = pae(kind, body)
    for entry in signatures:
        sig = _b64(entry.get("sig")) if isinstance(entry, dict) else None
        if sig is None or len(sig) != 64:
            continue
        try:
            key.verify(sig, message)
        except InvalidSignature:
            continue
        return True
    return False


def checkpoint_body(tenant: str | None, scope: str, count: int, head: str, time: str) -> bytes:
    """The canonical checkpoint payload of one chain."""
    doc = {
        "schema": CHECKPOINT_SCHEMA,
        "log": "signals-runtime-ingest.log",
        "scope": scope,
        "tenant": tenant,
        "count": count,
        "head": head,
        "time": time,
    }
    return canonical(doc)


def provenance_statement(receipt: dict[str, Any]) -> bytes:
    """The canonical in-toto Statement v1 of an accepted receipt's batch."""
    predicate = {
        "casUri": receipt.get("cas_uri"),
        "tenant": receipt.get("tenant"),
        "subjectKey": receipt.get("subject_key"),
        "callgraphId": receipt.get("callgraph_id"),
        "source": receipt.get("source"),
        "status": receipt.get("status"),
        "counts": {
            name: receipt.get(f"{name}_count") for name in ("line", "accepted", "rejected", "key")
        },
        "hitCountTotal": receipt.get("hit_count_total"),
        "tableVersions": receipt.get("table_versions") or {},
        "receipt": {
            "sha256": receipt.get("receipt_sha256"),
            "sequence": receipt.get("sequence"),
            "finishedAt": receipt.get("finished_at"),
        },
        "pipelineVersion": receipt.get("pipeline_version"),
    }
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [
            {"name": receipt.get("cas_uri"), "digest": {"sha256": receipt.get("batch_sha256")}}
        ],
        "predicateType": PROVENANCE_PREDICATE,
        "predicate": predicate,
    }
    return canonical(statement)
