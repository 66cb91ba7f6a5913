"""Request and response documents of the staging endpoint (they make /openapi.json)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from runtime_facts.subject import ID_RULE


class LineFinding(BaseModel):
    """One rejected line."""

    line: int = Field(description="1-based line number (event index + 1 for JSON bodies).")
    reason: str = Field(description="Stable reason code, e.g. missing_symbol_id.")
    message: str = Field(description="Runbook wording, e.g. `missing symbolId`.")
    detail: str = Field(description="What exactly was wrong.")


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer."""

    error: str = Field(description="Reason code of the whole request.")
    message: str
    hint: str | None = None
    reasonCodes: list[str] = Field(default_factory=list)
    lines: list[LineFinding] = Field(default_factory=list)


class Staged(BaseModel):
    """A batch staged in CAS (202)."""

    casUri: str = Field(description="cas://reachability/runtime/<sha256>")
    sha256: str
    ingestId: str = Field(description="First 32 hex digits of sha256: stable across re-posts.")
    created: bool = Field(description="False when the same bytes were already staged.")
    tenant: str
    callgraphId: str
    subjectKey: str
    lineCount: int
    size: int = Field(description="Stored (gzip) size in bytes.")


class FactRow(BaseModel):
    """One cumulative fact (the `runtime_facts` columns)."""

    tenant: str
    callgraph_id: str
    subject_key: str
    symbol_id: str
    code_id: str | None
    loader_base: str | None
    hit_count: int
    event_count: int
    batch_count: int
    first_observed_at: str | None
    last_observed_at: str | None
    updated_at: str | None


class FactsPage(BaseModel):
    """The facts of one subject."""

    tenant: str
    subjectKey: str
    count: int
    facts: list[FactRow]


class RecomputeRequest(BaseModel):
    """What to recompute."""

    model_config = ConfigDict(extra="forbid")

    tenant: str = Field(description="Tenant, lower-case [a-z0-9][a-z0-9._-]{0,63}.")
    callgraphId: str
    subjectKey: str | None = Field(default=None, description="One subject (default: all).")


class RecomputeResult(BaseModel):
    """The outcome: done in-process (200), or a DAG run queued in Airflow (202)."""

    mode: Literal["in-process", "airflow"]
    subjects: int | None = None
    changed: list[str] = Field(default_factory=list)
    events: int | None = None
    dagRunId: str | None = None
    state: str | None = None


class Health(BaseModel):
    """Liveness / readiness."""

    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)


ENVELOPE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["subject", "callgraphId", "events"],
    "properties": {
        "subject": {
            "type": "object",
            "description": "imageDigest, or scanId, or component + version. Every id: "
            + ID_RULE
            + "; component may hold '/', version may not hold '@'.",
            "properties": {
                "imageDigest": {"type": "string"},
                "scanId": {"type": "string"},
                "component": {"type": "string"},
                "version": {"type": "string"},
            },
        },
        "callgraphId": {"type": "string", "description": "An id: " + ID_RULE + "."},
        "events": {
            "type": "array",
            "description": "Runtime fact events (SPEC §1), validated like NDJSON lines.",
            "items": {
                "type": "object",
                "required": ["symbolId", "hitCount"],
                "properties": {
                    "symbolId": {"type": "string", "minLength": 1},
                    "hitCount": {"type": "integer", "minimum": 1},
                    "codeId": {"type": "string"},
                    "loaderBase": {"type": "string"},
                    "observedAt": {"type": "string", "format": "date-time"},
                },
            },
        },
    },
}
