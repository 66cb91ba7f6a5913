"""Column names and types shared by the transforms and the stores (SPEC §1, §9)."""

from __future__ import annotations

import polars as pl

KEY = ["symbol_id", "code_id", "loader_base"]
SUBJECT = ["tenant", "callgraph_id", "subject_key"]
FACT_KEY = [*SUBJECT, *KEY]
UTC_US = pl.Datetime("us", "UTC")

KNOWN_FIELDS = frozenset(
    {
        "symbolId", "hitCount", "codeId", "loaderBase", "process", "processId", "processName",
        "socketAddress", "containerId", "evidenceUri", "purl", "buildId", "metadata",
        "observedAt", "timestamp",
    }
)  # fmt: skip

# The frame both validation paths build before the shared field rules run.
RAW_SCHEMA: dict[str, pl.DataType] = {
    "line_number": pl.Int64(),
    "symbol_id": pl.String(),
    "hit_count": pl.Int64(),
    "code_id": pl.String(),
    "loader_base": pl.String(),
    "process_name": pl.String(),
    "container_id": pl.String(),
    "evidence_uri": pl.String(),
    "observed_raw": pl.String(),
    "reason_code": pl.String(),
    "detail": pl.String(),
    # checked for refused characters, not kept: the other string fields of an event
    "socket_address": pl.String(),
    "purl": pl.String(),
    "build_id": pl.String(),
    "process_text": pl.String(),  # process.name and processName together
    "metadata_text": pl.String(),  # metadata keys and values (of non-null values) together
}

EVENT_COLUMNS = [
    "symbol_id", "code_id", "loader_base", "hit_count", "observed_at",
    "process_name", "container_id", "evidence_uri",
]  # fmt: skip

REJECTION_SCHEMA: dict[str, pl.DataType] = {
    "line_number": pl.Int64(),
    "reason_code": pl.String(),
    "detail": pl.String(),
}

BATCH_ROW_SCHEMA: dict[str, pl.DataType] = {
    "batch_sha256": pl.String(),
    "cas_uri": pl.String(),
    "tenant": pl.String(),
    "callgraph_id": pl.String(),
    "subject_key": pl.String(),
    "symbol_id": pl.String(),
    "code_id": pl.String(),
    "loader_base": pl.String(),
    "hit_count": pl.Int64(),
    "event_count": pl.Int64(),
    "first_observed_at": UTC_US,
    "last_observed_at": UTC_US,
    "process_names": pl.List(pl.String()),
    "container_ids": pl.List(pl.String()),
    "evidence_uris": pl.List(pl.String()),
    "ingested_at": UTC_US,
}

FACT_SCHEMA: dict[str, pl.DataType] = {
    "tenant": pl.String(),
    "callgraph_id": pl.String(),
    "subject_key": pl.String(),
    "symbol_id": pl.String(),
    "code_id": pl.String(),
    "loader_base": pl.String(),
    "hit_count": pl.Int64(),
    "event_count": pl.Int64(),
    "batch_count": pl.Int64(),
    "first_observed_at": UTC_US,
    "last_observed_at": UTC_US,
    "updated_at": UTC_US,
}

INT64_MAX = 2**63 - 1
