"""Verify the receipts audit trail: the log's hash chain, and the table against the log.

The chain alone cannot see a receipt cut from the end of the log, nor a table row edited
in place; so for the home's own log every mirrored receipt must also be in `ingest_receipts`
with the same fields, and every table row must still be in the log. Receipts appended after
the last mirror commit (a crash between the two, or a run in progress) are counted as
`unmirrored`, not as tampering; the next ingest mirrors them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from runtime_facts.errors import NotFoundError, Reason
from runtime_facts.home import Home
from runtime_facts.pipeline.ledger import RECEIPTS_APP, receipts_app
from runtime_facts.stores.receipts import verify_chain

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
    """The first place the audit trail stops verifying."""

    reason_code: str
    reason: str
    line_number: int | None = None
    sequence: int | None = None


@dataclass
class ReceiptsReport:
    """Outcome of `verify_receipts`."""

    log: str
    receipts: int = 0
    table_checked: bool = False
    table_rows: int = 0
    unmirrored: int = 0
    first_break: Finding | None = None

    @property
    def ok(self) -> bool:
        """True when the chain and the table agree with each other and with themselves."""
        return self.first_break is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {**asdict(self), "ok": self.ok}


def _lines(path: Path) -> Iterator[bytes]:
    if not path.exists():
        return
    with path.open("rb") as handle:
        yield from handle


def verify_receipts(home: Home, log_path: Path | None = None) -> ReceiptsReport:
    """Verify a receipts log, and for the home's own log, the `ingest_receipts` table too.

    Args:
        home: the home whose table is compared (and whose log is read by default).
        log_path: another log, e.g. one synced back from an air-gapped site; only its chain
            is checked, since this home's table does not mirror it.

    Returns:
        The report; `first_break` names the line (or sequence) and what is wrong.

    Raises:
        NotFoundError: `log_path` does not exist.
    """
    own = home.receipts.path
    path = log_path if log_path is not None else own
    is_own = path.resolve() == own.resolve()
    if not path.exists() and not is_own:
        raise NotFoundError(
            Reason.RECEIPTS_LOG_MISSING,
            f"no receipts log at {path}",
            hint="pass the synced-back signals-runtime-ingest.log, or omit LOG for this home's",
        )
    report = ReceiptsReport(log=str(path))
    table: list[dict[str, Any]] = []
    mirrored: dict[str | None, int] = {}
    if is_own and home.lake.exists():
        # Table first: the log can then only be ahead of it, never behind, during a live run.
        receipts_table = home.lake.table("ingest_receipts")
        legacy = receipts_table.transaction_version(RECEIPTS_APP) or 0
        mirrored[None] = legacy
        table = home.lake.read("ingest_receipts").select(*COMPARED, "sequence").to_dicts()
        for name in {str(r["tenant"]) for r in table if r.get("tenant")} | set(home.tenants()):
            mirrored[name] = receipts_table.transaction_version(receipts_app(name)) or legacy
        report.table_checked = True
        report.table_rows = len(table)
    count, chain_break = verify_chain(_lines(path))
    report.receipts = count
    if chain_break is not None:
        report.first_break = Finding(
            Reason.RECEIPT_CHAIN_BROKEN, chain_break.reason, line_number=chain_break.line_number
        )
        return report
    if is_own and not report.table_checked and count:
        report.first_break = Finding(
            Reason.RECEIPTS_TABLE_MISMATCH,
            f"the log holds {count} receipts but {home.lake.root} has no ingest_receipts table",
        )
        return report
    if report.table_checked:
        report.first_break = _compare(path, table, mirrored, report)
    return report


def _compare(
    path: Path, table: list[dict[str, Any]], mirrored: dict[str | None, int], report: ReceiptsReport
) -> Finding | None:
    findings: list[Finding] = []
    rows: dict[tuple[str | None, int], dict[str, Any]] = {}
    for entry in table:
        seq = int(entry["sequence"])
        key = (entry.get("tenant"), seq)
        if key in rows:
            findings.append(
                Finding(
                    Reason.RECEIPTS_TABLE_MISMATCH,
                    f"sequence {seq} appears twice in ingest_receipts",
                    sequence=seq,
                )
            )
        rows[key] = entry
    seen: set[tuple[str | None, int]] = set()
    for number, raw in enumerate(_lines(path), start=1):
        if not raw.strip():
            continue
        doc = orjson.loads(raw)
        seq = int(doc["sequence"])
        key = (doc.get("tenant"), seq)
        seen.add(key)
        row = rows.get(key)
        if row is None:
            if seq > mirrored.get(key[0], mirrored.get(None, 0)):
                report.unmirrored += 1
                continue
            findings.append(
                Finding(
                    Reason.RECEIPTS_TABLE_MISMATCH,
                    f"receipt {seq} is in the log but missing from ingest_receipts",
                    line_number=number,
                    sequence=seq,
                )
            )
            continue
        differing = [k for k in COMPARED if row[k] != doc.get(k)]
        if differing:
            findings.append(
                Finding(
                    Reason.RECEIPTS_TABLE_MISMATCH,
                    f"ingest_receipts row {seq} differs from the log in {', '.join(differing)}",
                    line_number=number,
                    sequence=seq,
                )
            )
    for _, seq in sorted(set(rows) - seen, key=lambda k: (k[0] or "", k[1])):
        findings.append(
            Finding(
                Reason.RECEIPTS_TABLE_MISMATCH,
                f"receipt {seq} is in ingest_receipts but not in the log "
                f"(the log has {len(seen)} receipts): a receipt was removed from the log",
                sequence=seq,
            )
        )
    findings.sort(key=lambda f: f.sequence or 0)
    return findings[0] if findings else None
