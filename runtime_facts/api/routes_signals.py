"""POST /signals/runtime-facts(/ndjson): stage a probe's batch in CAS (202) or say why not."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials
from starlette.responses import Response

from runtime_facts.api.auth import SCOPE_WRITE
from runtime_facts.api.body import is_gzip_encoded, read_body
from runtime_facts.api.errors import ApiError, json_response
from runtime_facts.api.models import ENVELOPE_SCHEMA, ErrorBody, Staged
from runtime_facts.api.staging import (
    accepted_document,
    sealed_refusal,
    stage_envelope,
    stage_ndjson,
)
from runtime_facts.api.state import ApiState, api_state, authorize, bearer
from runtime_facts.errors import Reason, UsageError
from runtime_facts.pipeline.stage import StagedBatch
from runtime_facts.subject import SubjectContext, validate_tenant

log = logging.getLogger("Reachability.Runtime")
router = APIRouter(tags=["signals"])

Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]
Tenant = Annotated[str | None, Header(alias="X-Tenant", description="Tenant of the batch.")]
CasProof = Annotated[
    str | None,
    Header(
        alias="X-Reachability-Cas-Uri",
        description="Sealed mode: cas://reachability/runtime/<sha256 of the body>.",
    ),
]
Encoding = Annotated[
    str | None, Header(alias="Content-Encoding", description="`gzip`, or absent for plain.")
]

_ERRORS = {
    400: "Missing tenant, callgraphId or subject, or an empty body.",
    401: "No bearer token, or an unknown one.",
    403: "Wrong scope, another tenant, or sealed-mode evidence invalid.",
    408: "The client stalled while sending the body.",
    409: "The same bytes are already staged for another subject.",
    413: "The body passes the batch size cap.",
    415: "Unsupported Content-Encoding.",
    503: "Every upload slot is taken (server_busy); retry after Retry-After.",
    422: "Invalid gzip or invalid lines (strict policy): reason codes and line numbers.",
}
RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {
        "model": Staged,
        "description": "Staged in CAS.",
        "headers": {
            "Content-SHA256": {"schema": {"type": "string"}, "description": "sha256 of the object"},
            "X-Ingest-Id": {"schema": {"type": "string"}, "description": "stable ingest id"},
        },
    },
    **{code: {"model": ErrorBody, "description": text} for code, text in _ERRORS.items()},
}


def _tenant(x_tenant: str | None) -> str:
    if not x_tenant:
        raise ApiError.of(Reason.INVALID_CONTEXT, "the X-Tenant header is required")
    try:
        return validate_tenant(x_tenant)
    except UsageError as exc:
        raise ApiError.from_runtime(exc) from exc


def _accepted(state: ApiState, staged: StagedBatch, endpoint: str) -> Response:
    state.metrics.staged.labels(endpoint, str(staged.created).lower()).inc()
    log.info(
        "staged via the API" if staged.created else "already staged (API re-post)",
        extra={
            "casUri": staged.uri,
            "tenant": staged.context.tenant,
            "callgraphId": staged.context.callgraph_id,
            "subjectKey": staged.context.subject_key,
            "eventCount": staged.line_count,
        },
    )
    headers = {"Content-SHA256": staged.sha256, "X-Ingest-Id": staged.ingest_id}
    return json_response(accepted_document(staged), 202, headers)


async def _read(request: Request, state: ApiState, gzipped: bool) -> bytes:
    settings = state.home.settings
    if settings.ingest.sealed and request.headers.get("x-reachability-cas-uri") is None:
        raise sealed_refusal("X-Reachability-Cas-Uri is required in sealed mode")
    cap = settings.ingest.max_batch_bytes if gzipped else settings.serve.max_plain_bytes
    raw = await read_body(request, cap=cap, timeout=settings.serve.body_timeout_seconds)
    request.state.body_read = True
    return raw


@router.post(
    "/signals/runtime-facts/ndjson",
    status_code=202,
    responses=RESPONSES,
    summary="Stage an NDJSON batch (plain or gzip) in CAS",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
        }
    },
)
async def post_ndjson(
    request: Request,
    credentials: Credentials,
    x_tenant: Tenant = None,
    x_callgraph_id: Annotated[str | None, Header(alias="X-Callgraph-Id")] = None,
    callgraph_id: Annotated[str | None, Query(alias="callgraphId")] = None,
    scan_id: Annotated[str | None, Query(alias="scanId")] = None,
    image_digest: Annotated[str | None, Query(alias="imageDigest")] = None,
    component: Annotated[str | None, Query()] = None,
    version: Annotated[str | None, Query()] = None,
    content_encoding: Encoding = None,
    proof: CasProof = None,
) -> Response:
    """Body: NDJSON events, one per line; the subject comes from the query string."""
    state = api_state(request)
    try:
        principal = authorize(request, credentials, SCOPE_WRITE)
        tenant = _tenant(x_tenant)
        principal.require(SCOPE_WRITE, tenant)
        graph = x_callgraph_id or callgraph_id
        if not graph:
            raise ApiError.of(
                Reason.INVALID_CONTEXT,
                "callgraphId is required (X-Callgraph-Id header or callgraphId query parameter)",
            )
        try:
            ctx = SubjectContext(tenant, graph, image_digest, scan_id, component, version)
        except UsageError as exc:
            raise ApiError.from_runtime(exc) from exc
        gzipped = is_gzip_encoded(content_encoding)
        async with state.upload_slot():
            raw = await _read(request, state, gzipped)
            staged = await run_in_threadpool(
                stage_ndjson, state.home, raw, gzipped=gzipped, ctx=ctx, proof=proof
            )
    except ApiError as exc:
        state.metrics.rejected.labels(exc.reason).inc()
        raise
    return _accepted(state, staged, "ndjson")


@router.post(
    "/signals/runtime-facts",
    status_code=202,
    responses=RESPONSES,
    summary="Stage a JSON batch {subject, callgraphId, events} in CAS",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ENVELOPE_SCHEMA}},
        }
    },
)
async def post_json(
    request: Request,
    credentials: Credentials,
    x_tenant: Tenant = None,
    content_encoding: Encoding = None,
    proof: CasProof = None,
) -> Response:
    """Stored as canonical NDJSON.gz (sorted keys, gzip mtime 0): same events, same digest."""
    state = api_state(request)
    try:
        principal = authorize(request, credentials, SCOPE_WRITE)
        tenant = _tenant(x_tenant)
        principal.require(SCOPE_WRITE, tenant)
        gzipped = is_gzip_encoded(content_encoding)
        async with state.upload_slot():
            raw = await _read(request, state, gzipped)
            staged = await run_in_threadpool(
                stage_envelope, state.home, raw, gzipped=gzipped, tenant=tenant, proof=proof
            )
    except ApiError as exc:
        state.metrics.rejected.labels(exc.reason).inc()
        raise
    return _accepted(state, staged, "json")
