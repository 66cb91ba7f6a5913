"""The receipts hash chains: how a receipt is sealed, and how a whole log is verified.

A log is one stream of lines, each the canonical JSON (sorted keys, no whitespace) of either a
**receipt** or a **signed checkpoint** (a DSSE envelope, recognised by its `payloadType`).

Receipts form one chain per tenant (`"chain_scope": "tenant"`): `prev_receipt_sha256` is the
`receipt_sha256` of the previous receipt *of the same tenant* (the first one links to 64
zeros), `sequence` counts that tenant's receipts from 1, and `receipt_sha256` is the sha256 of
the canonical JSON of every other field. Receipts without a tenant (a batch whose context could
not be read) form their own chain, the `null` chain. The chains are interleaved in the log in
the order they were appended; each is verified on its own in the same pass.

Logs written before per-tenant chains (receipts without `chain_scope`) hold one **global**
chain over every tenant: those lines are verified as that chain (key `LEGACY`), wherever
they are in the stream, so an existing home keeps verifying after the upgrade.

A checkpoint claims, for one chain, `count` receipts ending in `head` at `time`; it must match
the chain's state at its own position in the stream (a checkpoint is written right after the
receipt it covers). With a public key, its signature must verify too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from runtime_facts.errors import Reason
from runtime_facts.stores.dsse import CHECKPOINT_SCHEMA, CHECKPOINT_TYPE, payload_of, signed_by

GENESIS = "0" * 64
SCOPE = "tenant"
LEGACY = "*"  # the chain key of a pre-per-tenant log's global chain (never a valid tenant)
ChainKey = str | None


def canonical_json(doc: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the bytes every digest in this project is taken over."""
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z)


def seal_receipt(receipt: dict[str, Any], prev_sha: str) -> dict[str, Any]:
    """Link a receipt to its predecessor: `receipt_sha256` covers every other field."""
    body = {k: v for k, v in receipt.items() if k != "receipt_sha256"}
    body["prev_receipt_sha256"] = prev_sha
    body["receipt_sha256"] = hashlib.sha256(canonical_json(body)).hexdigest()
    return body


def is_checkpoint(doc: dict[str, Any]) -> bool:
    """True for a checkpoint line (a DSSE envelope), False for a receipt."""
    return "payloadType" in doc


def chain_of(doc: dict[str, Any]) -> ChainKey:
    """The chain a receipt belongs to: its tenant (None: the null chain), or `LEGACY`."""
    if doc.get("chain_scope") != SCOPE:
        return LEGACY
    tenant = doc.get("tenant")
    return tenant if isinstance(tenant, str) else None


def checkpoint_claim(doc: dict[str, Any]) -> tuple[ChainKey, int, str, dict[str, Any]] | None:
    """(chain, count, head, payload) of a checkpoint envelope; None when it is malformed."""
    if doc.get("payloadType") != CHECKPOINT_TYPE:
        return None
    body = payload_of(doc)
    try:
        claim = orjson.loads(body) if body is not None else None
    except orjson.JSONDecodeError:
        return None
    if not isinstance(claim, dict) or claim.get("schema") != CHECKPOINT_SCHEMA:
        return None
    count, head, tenant = claim.get("count"), claim.get("head"), claim.get("tenant")
    if type(count) is not int or not isinstance(head, str):
        return None
    if claim.get("scope") == "global":
        return LEGACY, count, head, claim
    if claim.get("scope") != SCOPE or not (tenant is None or isinstance(tenant, str)):
        return None
    return tenant, count, head, claim


@dataclass(frozen=True)
class ChainBreak:
    """Where a receipts log stops verifying."""

    line_number: int
    reason: str
    reason_code: str = Reason.RECEIPT_CHAIN_BROKEN
    tenant: ChainKey = None


@dataclass
class ChainState:
    """One chain as verified so far."""

    count: int = 0
    head: str = GENESIS
    signed: int = 0  # receipts covered by the last valid checkpoint


@dataclass
class LogVerification:
    """What `verify_log` found."""

    receipts: int = 0
    checkpoints: int = 0
    chains: dict[ChainKey, ChainState] = field(default_factory=dict)
    first_break: ChainBreak | None = None
    signatures_checked: bool = False

    def unsigned_tail(self) -> dict[str, int]:
        """Receipts after each chain's last valid checkpoint (chain name → count)."""
        return {_name(k): s.count - s.signed for k, s in self.chains.items() if s.count > s.signed}


def _name(chain: ChainKey) -> str:
    return (
        "null"
        if chain is None
        else ("global (before per-tenant chains)" if chain == LEGACY else chain)
    )


def verify_log(
    lines: Iterable[bytes], public_key: Ed25519PublicKey | None = None
) -> LogVerification:
    """Verify every chain of a log in one pass over its lines (see the module docstring).

    The digests cover the parsed receipt, so each line's bytes must also be exactly its
    canonical form: an edit that parses the same (`2.0` → `2e0`, a space, a blank line) still
    breaks the chain. Blank lines are tolerated only at the end. With `public_key`, every
    checkpoint must be signed by it, and every chain holding receipts needs at least one.
    """
    result = LogVerification(signatures_checked=public_key is not None)
    blank = 0
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            blank = blank or number
            continue
        if blank:
            result.first_break = ChainBreak(blank, "blank line inside the log (the log was edited)")
            return result
        found = _check_line(raw, number, result, public_key)
        if found is not None:
            result.first_break = found
            return result
    if public_key is not None:
        for chain, state in result.chains.items():
            if state.count and not state.signed:
                result.first_break = ChainBreak(
                    0,
                    f"chain {_name(chain)!r} has {state.count} receipts and no signed checkpoint",
                    Reason.RECEIPT_CHECKPOINT_MISSING,
                    chain,
                )
                return result
    return result


def _check_line(
    raw: bytes, number: int, result: LogVerification, public_key: Ed25519PublicKey | None
) -> ChainBreak | None:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return ChainBreak(number, "line is not valid JSON")
    if not isinstance(doc, dict):
        return ChainBreak(number, "line is not a receipt object")
    canonical = (raw[:-1] if raw.endswith(b"\n") else raw) == canonical_json(doc)
    edited = ChainBreak(number, "line is not in canonical form (bytes were edited)")
    if is_checkpoint(doc):
        return _check_checkpoint(doc, number, result, public_key) if canonical else edited
    chain = chain_of(doc)
    state = result.chains.setdefault(chain, ChainState())
    if doc.get("prev_receipt_sha256") != state.head:
        return ChainBreak(
            number, "prev_receipt_sha256 does not match the chain's previous receipt", tenant=chain
        )
    if seal_receipt(doc, state.head)["receipt_sha256"] != doc.get("receipt_sha256"):
        return ChainBreak(
            number, "receipt_sha256 does not match the receipt's content", tenant=chain
        )
    if doc.get("sequence") != state.count + 1:
        return ChainBreak(
            number, "sequence number out of order (a receipt is missing)", tenant=chain
        )
    if not canonical:
        return ChainBreak(number, edited.reason, tenant=chain)
    state.head = str(doc["receipt_sha256"])
    state.count += 1
    result.receipts += 1
    return None


def _check_checkpoint(
    doc: dict[str, Any], number: int, result: LogVerification, public_key: Ed25519PublicKey | None
) -> ChainBreak | None:
    claim = checkpoint_claim(doc)
    if claim is None:
        return ChainBreak(
            number, "checkpoint envelope or payload is malformed", Reason.RECEIPT_CHECKPOINT_INVALID
        )
    chain, count, head, _ = claim
    if public_key is not None and not signed_by(doc, public_key):
        return ChainBreak(
            number,
            "checkpoint is not signed by the given public key (another key, or altered)",
            Reason.RECEIPT_CHECKPOINT_INVALID,
            chain,
        )
    state = result.chains.setdefault(chain, ChainState())
    if (state.count, state.head) != (count, head):
        return ChainBreak(
            number,
            f"checkpoint of chain {_name(chain)!r} says {count} receipts ending in {head[:16]}…, "
            f"the log has {state.count} ending in {state.head[:16]}… (receipts were rewritten "
            "or removed)",
            Reason.RECEIPT_CHECKPOINT_MISMATCH,
            chain,
        )
    state.signed = count
    result.checkpoints += 1
    return None


def verify_chain(lines: Iterable[bytes]) -> tuple[int, ChainBreak | None]:
    """Recompute every link (signatures unchecked). Returns (receipts checked, first break)."""
    result = verify_log(lines)
    return result.receipts, result.first_break
