"""Stage one uploaded batch through the staging job (`runtime_facts.pipeline.stage`).

Runs in a worker thread (decompression, validation and fsync block). The job refuses what
ingest would refuse before writing anything, so a rejected upload leaves no trace in CAS.
The endpoint's policy is strict: any invalid line refuses the upload (422, with every line).
"""

from __future__ import annotations

from typing import Any

import orjson

from runtime_facts.api.body import canonical_ndjson
from runtime_facts.api.errors import ApiError, lines_summary
from runtime_facts.errors import Reason, RuntimeFactsError
from runtime_facts.home import Home
from runtime_facts.pipeline.stage import LinesRejected, StagedBatch, stage_bytes
from runtime_facts.stores.airflow_api import RUNTIME_ASSET, announce_staged
from runtime_facts.stores.cas import cas_uri, sha256_hex
from runtime_facts.subject import SubjectContext
from transforms.decompress import gunzip_bounded


def accepted_document(staged: StagedBatch) -> dict[str, Any]:
    """The 202 document."""
    return {
        "casUri": staged.uri,
        "sha256": staged.sha256,
        "ingestId": staged.ingest_id,
        "created": staged.created,
        "tenant": staged.context.tenant,
        "callgraphId": staged.context.callgraph_id,
        "subjectKey": staged.context.subject_key,
        "lineCount": staged.line_count,
        "size": staged.size,
    }


def sealed_refusal(message: str) -> ApiError:
    """403 `sealed-mode evidence invalid`."""
    return ApiError.of(
        Reason.SEALED_MODE_EVIDENCE_INVALID,
        f"sealed-mode evidence invalid: {message}",
        hint="send X-Reachability-Cas-Uri: cas://reachability/runtime/<sha256 of the body>",
    )


def check_proof(proof: str | None, raw: bytes, stored: bytes) -> None:
    """The proof must name the body as sent, or the object as stored."""
    if proof is None:
        raise sealed_refusal("X-Reachability-Cas-Uri is required in sealed mode")
    accepted = {cas_uri("runtime", sha256_hex(raw))}
    if stored is not raw:
        accepted.add(cas_uri("runtime", sha256_hex(stored)))
    if proof.strip() not in accepted:
        raise sealed_refusal("X-Reachability-Cas-Uri does not match the uploaded bytes")


def _gunzip(home: Home, data: bytes) -> bytes:
    cfg = home.settings.ingest
    return gunzip_bounded(
        data, max_output=cfg.max_decompressed_bytes, max_ratio=cfg.max_compression_ratio
    )


def _stage(
    home: Home, raw: bytes, text: bytes, ctx: SubjectContext, proof: str | None
) -> StagedBatch:
    """`text` (the body, or its canonical NDJSON) through the staging job, strictly."""

    def sealed(stored: bytes) -> None:
        if home.settings.ingest.sealed:
            check_proof(proof, raw, stored)

    try:
        staged = stage_bytes(
            home, text, ctx, where="the request body", allow_partial=False, check=sealed
        )
    except LinesRejected as exc:
        raise ApiError.of(
            Reason.INVALID_LINES,
            lines_summary(exc.lines, exc.line_count),
            hint="fix the probe output and post the batch again; nothing was staged",
            lines=exc.lines,
        ) from exc
    except RuntimeFactsError as exc:
        raise ApiError.from_runtime(exc) from exc
    if staged.created:  # wake the scheduled ingest (no-op unless an Airflow is configured)
        extra = {"source": "staging endpoint", "tenant": ctx.tenant, "casUris": [staged.uri]}
        announce_staged(home.settings.airflow, RUNTIME_ASSET, extra)
    return staged


def stage_ndjson(
    home: Home, raw: bytes, *, gzipped: bool, ctx: SubjectContext, proof: str | None
) -> StagedBatch:
    """Stage an NDJSON body (gzip kept as sent, plain gzipped deterministically)."""
    if not raw:
        raise ApiError.of(Reason.EMPTY_BATCH, "the request body is empty")
    if gzipped and not raw.startswith(b"\x1f\x8b"):
        raise ApiError.of(
            Reason.INVALID_GZIP, "Content-Encoding is gzip but the body is not a gzip stream"
        )
    return _stage(home, raw, raw, ctx, proof)


def parse_envelope(
    home: Home, raw: bytes, *, gzipped: bool, tenant: str
) -> tuple[SubjectContext, bytes]:
    """`{subject, callgraphId, events}` → its context and canonical NDJSON."""
    if not raw:
        raise ApiError.of(Reason.EMPTY_BATCH, "the request body is empty")
    try:
        doc = orjson.loads(_gunzip(home, raw) if gzipped else raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError.of(Reason.INVALID_REQUEST, f"the body is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ApiError.of(Reason.INVALID_REQUEST, "the body must be a JSON object")
    subject, callgraph_id, events = doc.get("subject"), doc.get("callgraphId"), doc.get("events")
    if subject is None or callgraph_id is None:
        raise ApiError.of(
            Reason.INVALID_CONTEXT, "subject and callgraphId are required in the body"
        )
    if not isinstance(subject, dict) or not all(isinstance(v, str) for v in subject.values()):
        raise ApiError.of(Reason.INVALID_CONTEXT, "subject must be an object of strings")
    if not isinstance(callgraph_id, str):
        raise ApiError.of(Reason.INVALID_CONTEXT, "callgraphId must be a string")
    ctx = SubjectContext.from_json(
        {"tenant": tenant, "callgraphId": callgraph_id, "subject": subject}
    )
    if not isinstance(events, list):
        raise ApiError.of(Reason.INVALID_REQUEST, "events must be an array of event objects")
    if not events:
        raise ApiError.of(Reason.EMPTY_BATCH, "events is empty")
    try:
        return ctx, canonical_ndjson(events)
    except orjson.JSONEncodeError as exc:
        raise ApiError.of(Reason.NESTING_TOO_DEEP, f"an event cannot be re-encoded: {exc}") from exc


def stage_envelope(
    home: Home, raw: bytes, *, gzipped: bool, tenant: str, proof: str | None
) -> StagedBatch:
    """Stage a JSON body as canonical NDJSON.gz (stable digest for the same events)."""
    try:
        ctx, text = parse_envelope(home, raw, gzipped=gzipped, tenant=tenant)
    except RuntimeFactsError as exc:
        raise ApiError.from_runtime(exc) from exc
    return _stage(home, raw, text, ctx, proof)
