"""Verify the receipts audit trail: the chains, checkpoints, the table, provenance, the lake.

The chains alone cannot see a receipt cut from the end of a chain, nor a table row edited in
place; so for the home's own log every mirrored receipt must also be in `ingest_receipts` with
the same fields, and every table row must still be in the log. Receipts appended after a
chain's last mirror commit (a crash between the two, or a run in progress) are counted as
`unmirrored`, not as tampering; the next ingest mirrors them.

With a public key (`--public-key`), every checkpoint must be signed by it and every chain
holding receipts needs one; receipts after a chain's last checkpoint are counted as
`unsigned_tail` (docs/airgap.md says what a checkpoint can and cannot prove about them). On a
home, each stored provenance statement must be signed by that key and match its receipt.

On a home, the lake must still hold what the receipts say (`runtime_facts.ops.lake_audit`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from runtime_facts.errors import NotFoundError, Reason, UsageError
from runtime_facts.home import Home
from runtime_facts.ops.lake_audit import audit_lake
from runtime_facts.stores.chain import chain_of, is_checkpoint, verify_log
from runtime_facts.stores.dsse import IN_TOTO_TYPE, payload_of, provenance_statement, signed_by
from runtime_facts.stores.receipts import PROVENANCE, canonical_json, mirror_app

# Fields the log and `ingest_receipts` both hold verbatim.
COMPARED = (
    "batch_sha256",
    "status",
    "tenant",
    "subject_key",
    "callgraph_id",
    "line_count",
    "accepted_count",
    "rejected_count",
    "key_count",
    "prev_receipt_sha256",
    "receipt_sha256",
)


@dataclass(frozen=True)
class Finding:
    """A place the audit trail stops verifying."""

    reason_code: str
    reason: str
    line_number: int | None = None
    sequence: int | None = None
    tenant: str | None = None


@dataclass
class ReceiptsReport:
    """Outcome of `verify_receipts`."""

    log: str
    receipts: int = 0
    chains: int = 0
    checkpoints: int = 0
    signatures_checked: bool = False
    unsigned_tail: dict[str, int] = field(default_factory=dict)
    table_checked: bool = False
    table_rows: int = 0
    unmirrored: int = 0
    provenance_checked: int = 0
    lake_checked: bool = False
    findings: list[Finding] = field(default_factory=list)

    @property
    def first_break(self) -> Finding | None:
        """The first finding (None when everything verifies)."""
        return self.findings[0] if self.findings else None

    @property
    def ok(self) -> bool:
        """True when nothing was found."""
        return not self.findings

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            **asdict(self),
            "first_break": self.first_break and asdict(self.first_break),
            "ok": self.ok,
        }


def _file_lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        yield from handle


def verify_receipts(
    home: Home, log_path: Path | None = None, *, public_key: Ed25519PublicKey | None = None
) -> ReceiptsReport:
    """Verify a receipts log; for the home's own log also the table, provenance and the lake.

    Args:
        home: the home whose table and lake are compared (and whose log is read by default).
        log_path: another log, e.g. one synced back from an air-gapped site (or made by
            `receipts export`); only its chains and checkpoints are checked.
        public_key: the site's Ed25519 public key; checkpoints (and provenance) must be signed.

    Returns:
        The report; `findings` name the line, sequence, table or subject and what is wrong.

    Raises:
        NotFoundError: `log_path` does not exist.
    """
    own = home.receipts
    is_own = log_path is None or (not home.remote and log_path.resolve() == own.path.resolve())
    if log_path is not None and not log_path.exists():
        raise NotFoundError(
            Reason.RECEIPTS_LOG_MISSING,
            f"no receipts log at {log_path}",
            hint="pass the synced-back signals-runtime-ingest.log, or omit LOG for this home's",
        )
    report = ReceiptsReport(log=own.location if is_own else str(log_path))
    table: list[dict[str, Any]] = []
    mirrored: dict[str | None, int] = {}
    if is_own and home.lake.exists():
        # Table first: the log can then only be ahead of it, never behind, during a live run.
        delta = home.lake.table("ingest_receipts")
        table = home.lake.read("ingest_receipts").select(*COMPARED, "sequence").to_dicts()
        chains = {chain_of({"chain_scope": "tenant", "tenant": r["tenant"]}) for r in table}
        for chain in [*chains, *own.heads()]:
            mirrored[chain] = delta.transaction_version(mirror_app(chain)) or 0
        report.table_checked = True
        report.table_rows = len(table)
    lines = own.lines() if is_own else _file_lines(log_path)  # type: ignore[arg-type]
    result = verify_log(lines, public_key)
    report.receipts = result.receipts
    report.chains = len(result.chains)
    report.checkpoints = result.checkpoints
    report.signatures_checked = result.signatures_checked
    report.unsigned_tail = result.unsigned_tail()
    if result.first_break is not None:
        found = result.first_break
        report.findings.append(
            Finding(
                found.reason_code,
                found.reason,
                line_number=found.line_number or None,
                tenant=found.tenant,
            )
        )
        return report
    if not is_own:
        return report
    receipts = list(own)
    if not report.table_checked and receipts:
        report.findings.append(
            Finding(
                Reason.RECEIPTS_TABLE_MISMATCH,
                f"the log holds {len(receipts)} receipts but {home.lake.root} has no "
                "ingest_receipts table",
            )
        )
        return report
    if report.table_checked:
        report.findings.extend(_compare(receipts, table, mirrored, report))
    if public_key is not None:
        report.findings.extend(_check_provenance(home, receipts, public_key, report))
    if home.lake.exists():
        report.lake_checked = True
        report.findings.extend(
            Finding(f.reason_code, f.reason, tenant=f.tenant) for f in audit_lake(home, receipts)
        )
    return report


def _compare(
    receipts: list[dict[str, Any]],
    table: list[dict[str, Any]],
    mirrored: dict[str | None, int],
    report: ReceiptsReport,
) -> list[Finding]:
    findings: list[Finding] = []
    rows: dict[str, dict[str, Any]] = {}
    for entry in table:
        sha = str(entry["receipt_sha256"])
        if sha in rows:
            findings.append(
                Finding(
                    Reason.RECEIPTS_TABLE_MISMATCH,
                    f"receipt {sha[:16]}… appears twice in ingest_receipts",
                    sequence=entry["sequence"],
                    tenant=entry["tenant"],
                )
            )
        rows[sha] = entry
    seen: set[str] = set()
    for number, doc in enumerate(receipts, start=1):
        sha, seq, chain = str(doc["receipt_sha256"]), int(doc["sequence"]), chain_of(doc)
        seen.add(sha)
        row = rows.get(sha)
        if row is None:
            if seq > mirrored.get(chain, 0):
                report.unmirrored += 1
                continue
            findings.append(
                Finding(
                    Reason.RECEIPTS_TABLE_MISMATCH,
                    f"receipt {seq} of tenant {doc.get('tenant')} is in the log but missing "
                    "from ingest_receipts",
                    line_number=number,
                    sequence=seq,
                    tenant=doc.get("tenant"),
                )
            )
            continue
        differing = [k for k in (*COMPARED, "sequence") if row[k] != doc.get(k)]
        if differing:
            findings.append(
                Finding(
                    Reason.RECEIPTS_TABLE_MISMATCH,
                    f"ingest_receipts row {seq} of tenant {doc.get('tenant')} differs from the "
                    f"log in {', '.join(differing)}",
                    line_number=number,
                    sequence=seq,
                    tenant=doc.get("tenant"),
                )
            )
    for sha in sorted(
        set(rows) - seen, key=lambda s: (str(rows[s]["tenant"]), rows[s]["sequence"])
    ):
        row = rows[sha]
        findings.append(
            Finding(
                Reason.RECEIPTS_TABLE_MISMATCH,
                f"receipt {row['sequence']} of tenant {row['tenant']} is in ingest_receipts but "
                f"not in the log (the log has {len(seen)} receipts): a receipt was removed "
                "from the log",
                sequence=row["sequence"],
                tenant=row["tenant"],
            )
        )
    findings.sort(key=lambda f: (f.line_number is None, f.line_number or 0, f.sequence or 0))
    return findings


def _check_provenance(
    home: Home, receipts: list[dict[str, Any]], key: Ed25519PublicKey, report: ReceiptsReport
) -> list[Finding]:
    """Each stored statement: signed by `key`, and exactly the statement of its receipt."""
    by_sha = {r["receipt_sha256"]: r for r in receipts if r.get("status") == "accepted"}
    findings = []
    for name in home.objects.list(PROVENANCE):
        if not name.endswith(".dsse.json"):
            continue
        batch = name.rsplit("/", 1)[1].removesuffix(".dsse.json")
        report.provenance_checked += 1
        problem = _provenance_problem(home.objects.get(name), batch, by_sha, key)
        if problem:
            findings.append(
                Finding(Reason.RECEIPT_PROVENANCE_INVALID, f"{home.uri}/{name}: {problem}")
            )
    return findings


def _provenance_problem(
    data: bytes, batch: str, by_sha: dict[str, dict[str, Any]], key: Ed25519PublicKey
) -> str | None:
    try:
        envelope = orjson.loads(data)
    except orjson.JSONDecodeError:
        return "not JSON"
    if not isinstance(envelope, dict) or envelope.get("payloadType") != IN_TOTO_TYPE:
        return "not a DSSE envelope of an in-toto statement"
    if not signed_by(envelope, key):
        return "not signed by the given public key (another key, or altered)"
    try:
        statement = orjson.loads(payload_of(envelope) or b"null")
        receipt_sha = statement["predicate"]["receipt"]["sha256"]
    except (orjson.JSONDecodeError, TypeError, KeyError):
        return "the statement is malformed"
    receipt = by_sha.get(receipt_sha) if isinstance(receipt_sha, str) else None
    if receipt is None or receipt.get("batch_sha256") != batch:
        return "names no accepted receipt of this batch in the log"
    if canonical_json(statement) != provenance_statement(receipt):
        return "differs from the receipt it names"
    return None


def export_log(home: Home, out: Path) -> dict[str, Any]:
    """Write the home's receipts log as one NDJSON file (the stream of every chain, in order).

    For an object-store home this joins the segments (module docstring of
    `runtime_facts.stores.receipts`); for a local home it copies the complete lines. The
    result is what an air-gapped site carries back: `receipts verify OUT --public-key KEY`.
    """
    if out.exists():
        raise UsageError(
            Reason.KIT_OUTPUT_EXISTS, f"{out} already exists", hint="choose a new file name"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    receipts = checkpoints = 0
    with tmp.open("wb") as handle:
        for line in home.receipts.lines():
            if not line.endswith(b"\n") or not line.strip():
                continue  # a torn last line (a crash) is not part of the log
            handle.write(line)
            if b'"payloadType"' in line and is_checkpoint(orjson.loads(line)):
                checkpoints += 1
            else:
                receipts += 1
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(out)
    return {"path": str(out), "receipts": receipts, "checkpoints": checkpoints}
