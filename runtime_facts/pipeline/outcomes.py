"""What flows between the stages: run options, a prepared batch, outcomes and run totals."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from runtime_facts import __version__
from runtime_facts.errors import BatchRejected
from runtime_facts.stores.cas import cas_uri
from runtime_facts.stores.receipts import canonical_json
from runtime_facts.subject import SubjectContext, validate_tenant

if TYPE_CHECKING:
    import polars as pl

    from runtime_facts.config import IngestSettings

Clock = Callable[[], datetime]
MAX_LINES_IN_RECEIPT = 1000
OUTCOME_FIELDS = (
    "batch_sha256",
    "cas_uri",
    "source",
    "status",
    "tenant",
    "subject_key",
    "callgraph_id",
    "line_count",
    "accepted_count",
    "rejected_count",
    "key_count",
    "reason_codes",
    "detail",
    "duration_ms",
    "sequence",
    "receipt_sha256",
)


def utc_now() -> datetime:
    """The wall clock, UTC (the pipeline reads it; transforms are handed `now`)."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class IngestOptions:
    """Per-run choices of an ingest (CLI flags, DAG Params), resolved against the settings.

    Settings are the floor: `sealed=True` turns sealed mode on for a run, but nothing a run
    passes can turn it off when the settings have it on. `allow_partial` picks the line
    policy of the run (None: the settings'), except that sealed mode is always strict about
    evidence, not about lines (SPEC §1, §3).
    """

    source: str = "cas"
    tenant: str | None = None
    allow_partial: bool | None = None
    sealed: bool | None = None

    def __post_init__(self) -> None:
        if self.tenant is not None:
            validate_tenant(self.tenant)
        if self.source not in ("cas", "offline-kit"):
            raise ValueError(f"unknown source {self.source!r}")

    def partial(self, settings: IngestSettings) -> bool:
        """Quarantine bad lines (True) or reject the whole batch (False)."""
        return settings.allow_partial if self.allow_partial is None else self.allow_partial

    def sealed_mode(self, settings: IngestSettings) -> bool:
        """Sealed mode: on when the settings or the run say so (a run can only tighten)."""
        return settings.sealed or bool(self.sealed)


@dataclass
class Prepared:
    """A batch validated and deduped, ready to commit (or already known to be rejected)."""

    sha: str
    source: str
    started_at: datetime
    context: SubjectContext | None = None
    compressed_bytes: int = 0
    decompressed_bytes: int = 0
    line_count: int = 0
    rows: pl.DataFrame | None = None
    rejections: pl.DataFrame | None = None
    unknown_fields: dict[str, int] = field(default_factory=dict)
    error: BatchRejected | None = None
    prepare_seconds: float = 0.0
    hit_total: int = 0

    @property
    def tenant(self) -> str | None:
        """The batch's tenant, when its context could be read."""
        return self.context.tenant if self.context else None

    def reject(self, error: BatchRejected) -> None:
        """Mark the batch rejected: nothing of it may be committed."""
        self.error = error
        self.rows = None

    def receipt(self, status: str, finished_at: datetime, **extra: Any) -> dict[str, Any]:
        """The receipt draft for this attempt (sealed later onto the tenant's chain)."""
        lines = (
            self.error.lines if self.error and self.error.lines else rejected_lines(self.rejections)
        )
        reasons = sorted({r for _, r, _ in lines} | ({self.error.reason} if self.error else set()))
        accepted = 0 if status == "rejected" else self.line_count - len(lines)
        ctx = self.context
        receipt: dict[str, Any] = {
            "batch_sha256": self.sha,
            "cas_uri": cas_uri("runtime", self.sha),
            "source": self.source,
            "tenant": ctx.tenant if ctx else None,
            "subject_key": ctx.subject_key if ctx else None,
            "callgraph_id": ctx.callgraph_id if ctx else None,
            "context_sha256": (
                hashlib.sha256(canonical_json(ctx.to_json())).hexdigest() if ctx else None
            ),
            "status": status,
            "line_count": self.line_count,
            "accepted_count": accepted if status == "accepted" else 0,
            "rejected_count": len(lines),
            "key_count": self.rows.height if self.rows is not None and status == "accepted" else 0,
            "reason_codes": reasons,
            "detail": self.error.message if self.error else None,
            "rejected_lines": [
                {"line": n, "reason": r, "detail": d} for n, r, d in lines[:MAX_LINES_IN_RECEIPT]
            ],
            "unknown_fields": self.unknown_fields,
            "compressed_bytes": self.compressed_bytes,
            "decompressed_bytes": self.decompressed_bytes,
            "started_at": self.started_at.isoformat(),
            "finished_at": finished_at.isoformat(),
            "duration_ms": round((finished_at - self.started_at).total_seconds() * 1000, 3),
            "table_versions": {},
            "hit_count_total": str(self.hit_total) if status == "accepted" else "0",
            "pipeline_version": __version__,
        }
        receipt.update(extra)
        return receipt


@dataclass
class BatchOutcome:
    """What happened to one batch attempt."""

    batch_sha256: str
    status: str
    tenant: str | None
    subject_key: str | None
    callgraph_id: str | None
    line_count: int
    accepted_count: int
    rejected_count: int
    key_count: int
    reason_codes: list[str]
    detail: str | None
    receipt_sha256: str

    @classmethod
    def from_receipt(cls, receipt: dict[str, Any]) -> BatchOutcome:
        """Project a sealed receipt."""
        names = cls.__dataclass_fields__
        return cls(**{k: receipt.get(k) for k in names})  # type: ignore[arg-type]


@dataclass
class IngestSummary:
    """Totals of one ingest run."""

    batches: int = 0
    accepted: int = 0
    rejected: int = 0
    duplicate: int = 0
    events: int = 0
    keys: int = 0
    rejected_lines: int = 0
    facts_version: int | None = None
    states_changed: int = 0
    repaired_receipts: int = 0
    touched_subjects: list[tuple[str, str, str]] = field(default_factory=list)
    outcomes: list[BatchOutcome] = field(default_factory=list)

    def add(self, outcome: BatchOutcome) -> None:
        """Count one batch outcome."""
        self.batches += 1
        self.outcomes.append(outcome)
        if outcome.status == "accepted":
            self.accepted += 1
            self.events += outcome.accepted_count
            self.keys += outcome.key_count
        elif outcome.status == "duplicate":
            self.duplicate += 1
        else:
            self.rejected += 1
        self.rejected_lines += outcome.rejected_count

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return asdict(self)


def project_receipt(receipt: dict[str, Any]) -> dict[str, Any]:
    """The XCom-sized part of a sealed receipt (no per-line findings, no frames)."""
    out = {name: receipt.get(name) for name in OUTCOME_FIELDS}
    out["reason_codes"] = list(out["reason_codes"] or [])
    return out


def rejected_lines(rejections: pl.DataFrame | None) -> list[tuple[int, str, str]]:
    """(line, reason, detail) of quarantined or refused lines."""
    if rejections is None or rejections.is_empty():
        return []
    return [
        (int(n), str(r), str(d or ""))
        for n, r, d in rejections.select("line_number", "reason_code", "detail").iter_rows()
    ]


def receipt_json(receipt: dict[str, Any]) -> str:
    """Pretty JSON of a receipt for people."""
    return orjson.dumps(receipt, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
