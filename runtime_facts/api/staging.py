"""Stage one uploaded batch: sealed-mode proof, the ingest's own validation, then CAS.

Runs in a worker thread (decompression, validation and fsync block). Nothing is written
unless every check passes, so a rejected upload leaves no trace in CAS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from runtime_facts.api.body import canonical_ndjson, gzip_deterministic
from runtime_facts.api.errors import ApiError, lines_summary
from runtime_facts.errors import Reason, RuntimeFactsError
from runtime_facts.home import Home
from runtime_facts.stores.cas import cas_uri, sha256_hex
from runtime_facts.subject import SubjectContext
from transforms.decompress import gunzip_bounded
from transforms.validate import Limits, validate_events

INGEST_ID_HEX = 32


@dataclass(frozen=True)
class StagedBatch:
    """A batch now in CAS."""

    uri: str
    sha256: str
    ingest_id: str
    created: bool
    context: SubjectContext
    line_count: int
    size: int

    def to_json(self) -> dict[str, Any]:
        """The 202 document."""
        return {
            "casUri": self.uri,
            "sha256": self.sha256,
            "ingestId": self.ingest_id,
            "created": self.created,
            "tenant": self.context.tenant,
            "callgraphId": self.context.callgraph_id,
            "subjectKey": self.context.subject_key,
            "lineCount": self.line_count,
            "size": self.size,
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


def _limits(home: Home) -> Limits:
    cfg = home.settings.ingest
    return Limits(cfg.max_line_bytes, cfg.max_nesting_depth, cfg.max_number_digits)


def _gunzip(home: Home, data: bytes) -> bytes:
    cfg = home.settings.ingest
    return gunzip_bounded(
        data, max_output=cfg.max_decompressed_bytes, max_ratio=cfg.max_compression_ratio
    )


def _validate(home: Home, text: bytes) -> int:
    """Strict policy, as in ingest: any invalid line rejects the upload (422)."""
    result = validate_events(text, _limits(home))
    if result.rejections.height:
        lines = [
            (int(n), str(r), str(d or ""))
            for n, r, d in result.rejections.select(
                "line_number", "reason_code", "detail"
            ).iter_rows()
        ]
        raise ApiError.of(
            Reason.INVALID_LINES,
            lines_summary(lines, result.line_count),
            hint="fix the probe output and post the batch again; nothing was staged",
            lines=lines,
        )
    return result.line_count


def _put(home: Home, stored: bytes, ctx: SubjectContext, line_count: int) -> StagedBatch:
    limit = home.settings.ingest.max_batch_bytes
    if len(stored) > limit:
        raise ApiError.of(
            Reason.BATCH_TOO_LARGE,
            f"the batch is {len(stored)} bytes gzip-compressed; the limit is {limit}",
            hint="split the batch into smaller chunks",
        )
    put = home.cas.put("runtime", stored, ctx)
    return StagedBatch(
        put.uri, put.sha256, put.sha256[:INGEST_ID_HEX], put.created, ctx, line_count, put.size
    )


def stage_ndjson(
    home: Home, raw: bytes, *, gzipped: bool, ctx: SubjectContext, proof: str | None
) -> StagedBatch:
    """Stage an NDJSON body (gzip as sent, plain ones gzipped deterministically)."""
    try:
        if not raw:
            raise ApiError.of(Reason.EMPTY_BATCH, "the request body is empty")
        if gzipped:
            stored, text = raw, None
        else:
            if raw.isspace():
                raise ApiError.of(Reason.EMPTY_BATCH, "the request body has no events")
            if len(raw) > home.settings.ingest.max_decompressed_bytes:
                raise ApiError.of(Reason.DECOMPRESSED_TOO_LARGE, "the body passes the batch cap")
            stored, text = gzip_deterministic(raw), raw
        if home.settings.ingest.sealed:
            check_proof(proof, raw, stored)
        if text is None:
            text = _gunzip(home, stored)
        return _put(home, stored, ctx, _validate(home, text))
    except RuntimeFactsError as exc:
        raise ApiError.from_runtime(exc) from exc


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
        stored = gzip_deterministic(text)
        if home.settings.ingest.sealed:
            check_proof(proof, raw, stored)
        return _put(home, stored, ctx, _validate(home, text))
    except RuntimeFactsError as exc:
        raise ApiError.from_runtime(exc) from exc
