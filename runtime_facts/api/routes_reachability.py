"""GET /signals/reachability/facts and POST /signals/reachability/recompute."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Query, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import ValidationError
from starlette.responses import Response

from runtime_facts.api.auth import SCOPE_READ, SCOPE_RECOMPUTE
from runtime_facts.api.body import read_body
from runtime_facts.api.errors import ApiError, json_response
from runtime_facts.api.models import ErrorBody, FactsPage, RecomputeRequest, RecomputeResult
from runtime_facts.api.state import ApiState, api_state, authorize, bearer
from runtime_facts.errors import Reason, RuntimeFactsError
from runtime_facts.subject import validate_id, validate_tenant

log = logging.getLogger("Reachability.Runtime")
router = APIRouter(tags=["reachability"])
Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]
DAG_ID = "reachability_recompute"
MAX_RECOMPUTE_BODY = 64 * 1024


def _error(text: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": text}


def _check_ids(tenant: str | None, **ids: str | None) -> str:
    """400 for a missing or malformed tenant / id."""
    try:
        if not tenant:
            raise ApiError.of(Reason.INVALID_CONTEXT, "tenant is required")
        validate_tenant(tenant)
        for name, value in ids.items():
            if value is not None:
                validate_id(name, value, allow_slash=True)
    except RuntimeFactsError as exc:
        raise ApiError.from_runtime(exc) from exc
    return tenant


@router.get(
    "/signals/reachability/facts",
    responses={
        200: {"model": FactsPage, "description": "The cumulative facts of the subject."},
        400: _error("Missing or malformed tenant or subject."),
        401: _error("No bearer token, or an unknown one."),
        403: _error("Wrong scope or another tenant."),
        404: _error("Unknown subject, or nothing ingested yet."),
        422: _error("Malformed query string."),
    },
    summary="List the cumulative runtime facts of one subject",
)
async def get_facts(
    request: Request,
    credentials: Credentials,
    tenant: Annotated[str | None, Query(description="Tenant (required).")] = None,
    subject: Annotated[
        str | None, Query(description="Subject key (required), e.g. scan:s-42.")
    ] = None,
) -> Response:
    """Read `runtime_facts` for (tenant, subject key), sorted by key."""
    from runtime_facts.ops.facts import list_facts

    state = api_state(request)
    principal = authorize(request, credentials, SCOPE_READ)
    tenant = _check_ids(tenant, subjectKey=subject)
    principal.require(SCOPE_READ, tenant)
    if not subject:
        raise ApiError.of(Reason.INVALID_CONTEXT, "subject is required (a subject key)")
    try:
        facts = await run_in_threadpool(list_facts, state.home, tenant, subject)
    except RuntimeFactsError as exc:
        raise ApiError.from_runtime(exc) from exc
    rows = facts.to_dicts()
    return json_response(
        {"tenant": tenant, "subjectKey": subject, "count": len(rows), "facts": rows}
    )


async def _trigger_dag(state: ApiState, req: RecomputeRequest) -> dict[str, Any]:
    serve = state.home.settings.serve
    assert serve.airflow_api_url is not None
    url = f"{serve.airflow_api_url.rstrip('/')}/api/v2/dags/{DAG_ID}/dagRuns"
    headers = {}
    if serve.airflow_token is not None:
        headers["Authorization"] = f"Bearer {serve.airflow_token.get_secret_value()}"
    conf = {"tenant": req.tenant, "callgraph_id": req.callgraphId, "subject_key": req.subjectKey}
    try:
        resp = await state.airflow().post(
            url, json={"logical_date": None, "conf": conf}, headers=headers
        )
    except httpx.HTTPError as exc:
        log.warning("Airflow API unreachable: %s", type(exc).__name__)
        raise ApiError.of(
            Reason.AIRFLOW_UNAVAILABLE, f"the Airflow API is unreachable ({type(exc).__name__})"
        ) from exc
    if resp.status_code >= 300:
        raise ApiError.of(
            Reason.AIRFLOW_UNAVAILABLE,
            f"the Airflow API answered {resp.status_code} to the trigger of {DAG_ID}",
        )
    try:
        doc = resp.json()
    except ValueError:
        doc = {}
    doc = doc if isinstance(doc, dict) else {}
    return {"mode": "airflow", "dagRunId": doc.get("dag_run_id"), "state": doc.get("state")}


@router.post(
    "/signals/reachability/recompute",
    responses={
        200: {"model": RecomputeResult, "description": "Recomputed in-process."},
        202: {"model": RecomputeResult, "description": "A reachability_recompute run is queued."},
        400: _error("Malformed tenant, callgraphId or subjectKey."),
        401: _error("No bearer token, or an unknown one."),
        403: _error("Wrong scope or another tenant."),
        408: _error("The client stalled while sending the body."),
        413: _error("The body is too large."),
        422: _error("The body is not a valid request."),
        502: _error("Airflow is configured but did not accept the trigger."),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": RecomputeRequest.model_json_schema()}},
        }
    },
    summary="Recompute reachability states (Airflow DAG when configured, else in-process)",
)
async def post_recompute(request: Request, credentials: Credentials) -> Response:
    """Triggers `reachability_recompute` in Airflow, or runs the job here."""
    from runtime_facts.pipeline.outcomes import utc_now
    from runtime_facts.pipeline.score import recompute

    state = api_state(request)
    principal = authorize(request, credentials, SCOPE_RECOMPUTE)
    raw = await read_body(
        request, cap=MAX_RECOMPUTE_BODY, timeout=state.home.settings.serve.body_timeout_seconds
    )
    request.state.body_read = True
    try:
        req = RecomputeRequest.model_validate_json(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        raise ApiError.of(Reason.INVALID_REQUEST, f"invalid recompute request: {problems}") from exc
    _check_ids(req.tenant, callgraphId=req.callgraphId, subjectKey=req.subjectKey)
    principal.require(SCOPE_RECOMPUTE, req.tenant)
    if state.home.settings.serve.airflow_api_url:
        return json_response(await _trigger_dag(state, req), 202)
    try:
        result = await run_in_threadpool(
            recompute, state.home, req.tenant, req.callgraphId, req.subjectKey, utc_now()
        )
    except RuntimeFactsError as exc:
        raise ApiError.from_runtime(exc) from exc
    doc = {
        "mode": "in-process",
        "subjects": result.subjects,
        "changed": result.changed,
        "events": len(result.events),
    }
    return json_response(doc)
