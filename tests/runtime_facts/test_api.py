"""The staging endpoint over a real uvicorn server: status codes, streaming, auth, ingest."""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import polars as pl
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from typer.testing import CliRunner

from runtime_facts.api.auth import SCOPE_WRITE, add_token, hash_token
from runtime_facts.api.body import canonical_ndjson
from runtime_facts.cli.main import app as cli_app
from runtime_facts.home import Home
from runtime_facts.pipeline.ingest import ingest
from runtime_facts.pipeline.stage import gzip_deterministic
from runtime_facts.stores.cas import cas_uri
from tests.runtime_facts.api_harness import (
    TOKENS,
    Live,
    auth,
    live_api,
    make_home,
    raw_request,
    read_response,
    serve_asgi,
    status_of,
    write_token_file,
)

NDJSON = "/signals/runtime-facts/ndjson"
JSON = "/signals/runtime-facts"
FACTS = "/signals/reachability/facts"
RECOMPUTE = "/signals/reachability/recompute"
SUBJECT = {"scanId": "s-1"}
CONTEXT = {"X-Tenant": "acme", "X-Callgraph-Id": "cg-1"}
BODY = b'{"symbolId":"sym:a","hitCount":2}\n{"symbolId":"sym:b","hitCount":1,"codeId":"c1"}\n'
EVENTS = [{"symbolId": "sym:a", "hitCount": 2}, {"symbolId": "sym:b", "hitCount": 1}]
Clock = Callable[[], datetime]


@pytest.fixture
def api_home(tmp_path: Path) -> Home:
    return make_home(tmp_path)


@pytest.fixture
def live(api_home: Home) -> Iterator[Live]:
    with live_api(api_home) as server:
        yield server


@pytest.fixture
def client(live: Live) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, timeout=10) as c:
        yield c


def post(
    client: httpx.Client,
    content: Any = BODY,
    *,
    params: dict[str, str] | None = None,
    token: str = "all",
    gzipped: bool = False,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    hdrs = {**CONTEXT, **auth(token), **(headers or {})}
    if gzipped:
        hdrs["Content-Encoding"] = "gzip"
    return client.post(
        NDJSON, params=SUBJECT if params is None else params, content=content, headers=hdrs
    )


def post_json(
    client: httpx.Client, doc: Any, *, token: str = "all", **headers: str
) -> httpx.Response:
    body = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    hdrs = {"X-Tenant": "acme", "Content-Type": "application/json", **auth(token), **headers}
    return client.post(JSON, content=body, headers=hdrs)


def gz_named(data: bytes, name: str) -> bytes:
    """gzip whose FNAME header pads it to a chosen size (one byte per name character)."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename=name, mode="wb", fileobj=buf, mtime=0, compresslevel=6) as f:
        f.write(data)
    return buf.getvalue()


def head(path: str, *extra: str, token: str = "all") -> str:
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        f"Authorization: Bearer {TOKENS[token][0]}",
        "X-Tenant: acme",
        "X-Callgraph-Id: cg-1",
        *extra,
    ]
    return "\r\n".join(lines) + "\r\n\r\n"


# --- 202: staging -------------------------------------------------------------------------


def test_plain_body_is_staged_as_deterministic_gzip(client: httpx.Client, api_home: Home) -> None:
    resp = post(client)
    assert resp.status_code == 202
    stored = gzip.compress(BODY, compresslevel=6, mtime=0)
    sha = hashlib.sha256(stored).hexdigest()
    assert resp.json() == {
        "casUri": cas_uri("runtime", sha),
        "sha256": sha,
        "ingestId": sha[:32],
        "created": True,
        "tenant": "acme",
        "callgraphId": "cg-1",
        "subjectKey": "scan:s-1",
        "lineCount": 2,
        "size": len(stored),
    }
    assert resp.headers["Content-SHA256"] == sha
    assert resp.headers["X-Ingest-Id"] == sha[:32]
    assert api_home.cas.get("runtime", sha) == stored
    assert api_home.cas.subject_context(sha).subject_key == "scan:s-1"


def test_gzip_body_is_stored_as_sent(client: httpx.Client, api_home: Home) -> None:
    data = gz_named(BODY, "probe-batch")
    resp = post(client, data, gzipped=True)
    assert resp.status_code == 202
    assert resp.json()["sha256"] == hashlib.sha256(data).hexdigest()
    assert api_home.cas.get("runtime", resp.json()["sha256"]) == data


def test_repost_is_idempotent(client: httpx.Client, api_home: Home) -> None:
    first, second = post(client), post(client)
    assert (first.status_code, second.status_code) == (202, 202)
    assert first.json()["casUri"] == second.json()["casUri"]
    assert first.json()["ingestId"] == second.json()["ingestId"]
    assert (first.json()["created"], second.json()["created"]) == (True, False)
    assert list(api_home.cas.list("runtime")) == [first.json()["sha256"]]


def test_callgraph_id_and_component_subject_from_the_query(client: httpx.Client) -> None:
    params = {"callgraphId": "cg-q", "component": "pkg:npm/left-pad", "version": "1.3.0"}
    resp = client.post(NDJSON, params=params, content=BODY, headers={"X-Tenant": "acme", **auth()})
    assert resp.status_code == 202
    assert resp.json()["callgraphId"] == "cg-q"
    assert resp.json()["subjectKey"] == "component:pkg:npm/left-pad@1.3.0"


def test_json_body_is_stored_as_canonical_ndjson_gzip(client: httpx.Client, api_home: Home) -> None:
    doc = {"subject": {"imageDigest": "sha256:abc"}, "callgraphId": "cg-1", "events": EVENTS}
    resp = post_json(client, doc)
    assert resp.status_code == 202
    stored = gzip_deterministic(canonical_ndjson(EVENTS))
    assert resp.json()["sha256"] == hashlib.sha256(stored).hexdigest()
    assert resp.json()["subjectKey"] == "image:sha256:abc"
    assert api_home.cas.get("runtime", resp.json()["sha256"]) == stored


def test_json_body_digest_ignores_key_order_and_whitespace(client: httpx.Client) -> None:
    a = (
        b'{"subject":{"scanId":"s-1"},"callgraphId":"cg-1",'
        b'"events":[{"symbolId":"x","hitCount":1}]}'
    )
    b = (
        b'{ "events": [ {"hitCount": 1, "symbolId": "x"} ],\n'
        b' "callgraphId": "cg-1", "subject": {"scanId": "s-1"} }'
    )
    first, second = post_json(client, a), post_json(client, b)
    assert (first.status_code, second.status_code) == (202, 202)
    assert first.json()["casUri"] == second.json()["casUri"]
    assert second.json()["created"] is False


# --- 400 / 409 / 415 / 422 ----------------------------------------------------------------


def test_invalid_line_is_422_with_line_numbers_and_nothing_staged(
    client: httpx.Client, api_home: Home
) -> None:
    body = b'{"symbolId":"a","hitCount":1}\n{"hitCount":2}\n{"symbolId":"c","hitCount":0}\n'
    resp = post(client, body)
    assert resp.status_code == 422
    doc = resp.json()
    assert doc["error"] == "invalid_lines"
    assert "line 2 missing symbolId" in doc["message"]
    assert doc["reasonCodes"] == ["invalid_hit_count", "invalid_lines", "missing_symbol_id"]
    assert [(x["line"], x["reason"], x["message"]) for x in doc["lines"]] == [
        (2, "missing_symbol_id", "missing symbolId"),
        (3, "invalid_hit_count", "invalid hitCount"),
    ]
    assert list(api_home.cas.list("runtime")) == []


def test_invalid_gzip_is_422(client: httpx.Client, api_home: Home) -> None:
    resp = post(client, b"\x1f\x8b\x08\x00garbage", gzipped=True)
    assert resp.status_code == 422
    assert resp.json()["error"] in {"invalid_gzip", "truncated_gzip"}
    assert list(api_home.cas.list("runtime")) == []


def test_invalid_json_event_is_422_at_its_index(client: httpx.Client) -> None:
    doc = {"subject": {"scanId": "s"}, "callgraphId": "g", "events": [EVENTS[0], {"hitCount": 1}]}
    resp = post_json(client, doc)
    assert resp.status_code == 422
    assert [(x["line"], x["message"]) for x in resp.json()["lines"]] == [(2, "missing symbolId")]


def test_json_body_that_is_not_json_is_422(client: httpx.Client) -> None:
    assert post_json(client, b"{not json").status_code == 422


@pytest.mark.parametrize(
    ("params", "headers", "fragment"),
    [
        (SUBJECT, {"X-Tenant": "acme"}, "callgraphId is required"),
        ({}, CONTEXT, "a subject is required"),
        (SUBJECT, {"X-Callgraph-Id": "cg-1"}, "X-Tenant header is required"),
        (SUBJECT, {"X-Tenant": "Not A Tenant", "X-Callgraph-Id": "g"}, "invalid tenant"),
    ],
)
def test_missing_context_is_400(
    client: httpx.Client, params: dict[str, str], headers: dict[str, str], fragment: str
) -> None:
    resp = client.post(NDJSON, params=params, content=BODY, headers={**headers, **auth()})
    assert resp.status_code == 400
    assert fragment in resp.json()["message"]


@pytest.mark.parametrize(
    ("content", "gzipped"), [(b"", False), (b"\n \n", False), (gzip.compress(b""), True)]
)
def test_empty_stream_is_400(client: httpx.Client, content: bytes, gzipped: bool) -> None:
    resp = post(client, content, gzipped=gzipped)
    assert resp.status_code == 400
    assert resp.json()["error"] == "empty_batch"


@pytest.mark.parametrize(
    "doc",
    [
        {"callgraphId": "g", "events": EVENTS},
        {"subject": {"scanId": "s"}, "events": EVENTS},
        {"subject": {"scanId": "s"}, "callgraphId": "g", "events": []},
    ],
)
def test_json_body_without_context_or_events_is_400(client: httpx.Client, doc: Any) -> None:
    assert post_json(client, doc).status_code == 400


def test_same_bytes_for_another_subject_is_409(client: httpx.Client) -> None:
    assert post(client).status_code == 202
    resp = post(client, params={"scanId": "s-2"})
    assert resp.status_code == 409
    assert resp.json()["error"] == "context_conflict"


def test_unsupported_content_encoding_is_415(client: httpx.Client) -> None:
    resp = post(client, headers={"Content-Encoding": "br"})
    assert resp.status_code == 415


# --- 401 / 403: auth ----------------------------------------------------------------------


def test_missing_or_unknown_token_is_401(client: httpx.Client) -> None:
    resp = client.post(NDJSON, params=SUBJECT, content=BODY, headers=CONTEXT)
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    bad = {**CONTEXT, "Authorization": "Bearer not-a-token"}
    assert client.post(NDJSON, params=SUBJECT, content=BODY, headers=bad).status_code == 401
    basic = {**CONTEXT, "Authorization": "Basic dXNlcjpwYXNz"}
    assert client.post(NDJSON, params=SUBJECT, content=BODY, headers=basic).status_code == 401


def test_wrong_scope_or_tenant_is_403(client: httpx.Client, api_home: Home) -> None:
    scope = post(client, token="reader")
    assert (scope.status_code, scope.json()["error"]) == (403, "insufficient_scope")
    tenant = post(client, token="globex")
    assert (tenant.status_code, tenant.json()["error"]) == (403, "tenant_mismatch")
    assert list(api_home.cas.list("runtime")) == []


def test_tokens_are_never_logged(client: httpx.Client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    post(client)
    client.post(NDJSON, content=BODY, headers={**CONTEXT, "Authorization": "Bearer s3cr3t-xyz"})
    time.sleep(0.1)  # the access log line is written after the response
    assert caplog.records
    assert "s3cr3t-xyz" not in caplog.text
    assert TOKENS["all"][0] not in caplog.text


def test_a_token_added_while_serving_works_without_restart(tmp_path: Path, live: Live) -> None:
    token = add_token(tmp_path / "tokens.json", "acme", [SCOPE_WRITE], "late")
    assert token not in (tmp_path / "tokens.json").read_text()
    headers = {**CONTEXT, "Authorization": f"Bearer {token}"}
    resp = httpx.post(live.url + NDJSON, params=SUBJECT, content=BODY, headers=headers)
    assert resp.status_code == 202


def test_cli_token_add_prints_the_token_once_and_stores_its_hash(tmp_path: Path) -> None:
    path = tmp_path / "new-tokens.json"
    args = ["serve", "token", "add", "--tenant", "acme", "--scope", "signals:read"]
    result = CliRunner().invoke(cli_app, [*args, "--token-file", str(path)])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    stored = orjson.loads(path.read_bytes())["tokens"]
    assert stored == [{"sha256": hash_token(token), "tenant": "acme", "scopes": ["signals:read"]}]
    bad = CliRunner().invoke(cli_app, [*args[:-1], "root", "--token-file", str(path)])
    assert bad.exit_code == 2


# --- 413 / 408: limits and slow clients -----------------------------------------------------


def test_gzip_body_at_the_cap_passes_and_one_byte_over_is_413(tmp_path: Path) -> None:
    under, over = gz_named(BODY, "a"), gz_named(BODY, "ab")
    assert len(over) == len(under) + 1
    home = make_home(tmp_path, ingest={"max_batch_bytes": len(under)})
    with live_api(home) as live, httpx.Client(base_url=live.url) as client:
        assert post(client, under, gzipped=True).status_code == 202
        resp = post(client, over, gzipped=True)
        assert resp.status_code == 413
        assert resp.json()["error"] == "batch_too_large"
        # streamed without Content-Length: refused as the count passes the cap
        chunks = iter([over[:10], over[10:]])
        assert post(client, chunks, gzipped=True).status_code == 413
    assert len(list(home.cas.list("runtime"))) == 1


def test_plain_body_at_the_cap_passes_and_one_byte_over_is_413(tmp_path: Path) -> None:
    home = make_home(tmp_path, max_plain_bytes=len(BODY))
    with live_api(home) as live, httpx.Client(base_url=live.url) as client:
        assert post(client, BODY).status_code == 202
        assert post(client, BODY + b"\n").status_code == 413


def test_content_length_over_the_cap_is_refused_before_any_body(live: Live) -> None:
    request = head(NDJSON + "?scanId=s-1", "Content-Length: 1000000000", "Expect: 100-continue")
    response = raw_request(live.port, request)  # no body is ever sent
    assert status_of(response) == 413


def test_stream_past_the_cap_is_refused_without_waiting_for_its_end(tmp_path: Path) -> None:
    home = make_home(tmp_path, ingest={"max_batch_bytes": 1024})
    with live_api(home) as live:
        request = head(
            NDJSON + "?scanId=s-1", "Content-Encoding: gzip", "Transfer-Encoding: chunked"
        )
        parts = [b"200\r\n" + b"x" * 512 + b"\r\n"] * 3  # 1536 bytes, and no final chunk
        response = raw_request(live.port, request, parts, timeout=10)
    assert status_of(response) == 413


def test_slow_client_still_succeeds(tmp_path: Path) -> None:
    home = make_home(tmp_path, body_timeout_seconds=1.0)

    def trickle() -> Iterator[bytes]:
        for i in range(0, len(BODY), 8):
            time.sleep(0.15)  # ~1.5 s in all: only a stall, not the total, is timed
            yield BODY[i : i + 8]

    with live_api(home) as live, httpx.Client(base_url=live.url, timeout=10) as client:
        started = time.monotonic()
        resp = post(client, trickle())
        assert resp.status_code == 202
        assert time.monotonic() - started > 1.0


def test_stalled_client_gets_408_and_does_not_hang_the_server(tmp_path: Path) -> None:
    home = make_home(tmp_path, body_timeout_seconds=0.5)
    with live_api(home) as live, httpx.Client(base_url=live.url, timeout=5) as client:
        conn = socket.create_connection(("127.0.0.1", live.port), timeout=5)
        with conn:
            conn.sendall(head(NDJSON + "?scanId=s-1", "Content-Length: 500").encode())
            conn.sendall(BODY[:10])  # then nothing more
            started = time.monotonic()
            assert client.get("/healthz").status_code == 200  # others are served meanwhile
            assert post(client).status_code == 202
            response = read_response(conn)
            waited = time.monotonic() - started
        assert status_of(response) == 408
        assert waited < 4
        assert post(client).status_code == 202


# --- 403: sealed mode -----------------------------------------------------------------------


def test_sealed_mode_requires_a_matching_cas_proof(tmp_path: Path) -> None:
    home = make_home(tmp_path, ingest={"sealed": True})
    data = gz_named(BODY, "b")
    proof = cas_uri("runtime", hashlib.sha256(data).hexdigest())
    with live_api(home) as live, httpx.Client(base_url=live.url) as client:
        missing = post(client, data, gzipped=True)
        assert missing.status_code == 403
        assert missing.json()["error"] == "sealed_mode_evidence_invalid"
        assert missing.json()["message"].startswith("sealed-mode evidence invalid")
        wrong = post(client, data, gzipped=True, headers={"X-Reachability-Cas-Uri": "cas://x"})
        assert wrong.status_code == 403
        assert list(home.cas.list("runtime")) == []
        good = post(client, data, gzipped=True, headers={"X-Reachability-Cas-Uri": proof})
        assert (good.status_code, good.json()["casUri"]) == (202, proof)
        plain_proof = cas_uri("runtime", hashlib.sha256(BODY).hexdigest())
        plain = post(client, BODY, headers={"X-Reachability-Cas-Uri": plain_proof})
        assert plain.status_code == 202
        assert client.get("/readyz").status_code == 200


# --- ingest, facts, recompute ---------------------------------------------------------------


def test_staged_batches_are_ingested_with_their_subject(
    client: httpx.Client, api_home: Home, clock: Clock
) -> None:
    assert (
        client.get(
            FACTS, params={"tenant": "acme", "subject": "scan:s-1"}, headers=auth()
        ).status_code
        == 404
    )
    assert post(client).status_code == 202
    assert post(client, gz_named(BODY.replace(b"2}", b"5}"), "x"), gzipped=True).status_code == 202
    doc = {"subject": {"imageDigest": "sha256:abc"}, "callgraphId": "cg-2", "events": EVENTS}
    assert post_json(client, doc).status_code == 202
    summary = ingest(api_home, clock=clock)
    assert (summary.accepted, summary.rejected, summary.duplicate) == (3, 0, 0)
    facts = (
        api_home.lake.read("runtime_facts")
        .select("tenant", "callgraph_id", "subject_key", "symbol_id", "hit_count", "batch_count")
        .sort("subject_key", "symbol_id")
    )
    assert facts.rows() == [
        ("acme", "cg-2", "image:sha256:abc", "sym:a", 2, 1),
        ("acme", "cg-2", "image:sha256:abc", "sym:b", 1, 1),
        ("acme", "cg-1", "scan:s-1", "sym:a", 7, 2),
        ("acme", "cg-1", "scan:s-1", "sym:b", 2, 2),
    ]
    assert ingest(api_home, clock=clock).batches == 0
    assert post(client).json()["created"] is False  # re-posting after ingest changes nothing
    assert ingest(api_home, clock=clock).batches == 0

    resp = client.get(
        FACTS, params={"tenant": "acme", "subject": "scan:s-1"}, headers=auth("reader")
    )
    assert resp.status_code == 200
    page = resp.json()
    assert (page["count"], page["subjectKey"]) == (2, "scan:s-1")
    assert [(f["symbol_id"], f["hit_count"]) for f in page["facts"]] == [("sym:a", 7), ("sym:b", 2)]
    expected = api_home.lake.read("runtime_facts").filter(pl.col("subject_key") == "scan:s-1")
    assert {f["code_id"] for f in page["facts"]} == set(expected.get_column("code_id").to_list())


def test_facts_status_codes(client: httpx.Client, api_home: Home, clock: Clock) -> None:
    assert post(client).status_code == 202
    ingest(api_home, clock=clock)
    q = {"tenant": "acme", "subject": "scan:nope"}
    assert client.get(FACTS, params=q, headers=auth()).status_code == 404
    assert client.get(FACTS, params={"tenant": "acme"}, headers=auth()).status_code == 400
    q["subject"] = "scan:s-1"
    assert client.get(FACTS, params=q).status_code == 401
    assert client.get(FACTS, params=q, headers=auth("writer")).status_code == 403
    assert client.get(FACTS, params=q, headers=auth("globex")).status_code == 403


def test_recompute_runs_in_process_without_airflow(
    client: httpx.Client, api_home: Home, clock: Clock
) -> None:
    assert post(client).status_code == 202
    ingest(api_home, clock=clock, recompute=False)
    resp = client.post(RECOMPUTE, json={"tenant": "acme", "callgraphId": "cg-1"}, headers=auth())
    assert resp.status_code == 200
    assert resp.json()["mode"] == "in-process"
    assert resp.json()["changed"] == ["scan:s-1"]
    states = (
        api_home.lake.read("reachability_states").select("symbol_id", "state").sort("symbol_id")
    )
    assert states.rows() == [("sym:a", "RO"), ("sym:b", "RO")]


@pytest.mark.parametrize(
    ("body", "token", "status"),
    [
        ({"tenant": "acme", "callgraphId": "cg-1"}, None, 401),
        ({"tenant": "acme", "callgraphId": "cg-1"}, "writer", 403),
        ({"tenant": "acme", "callgraphId": "cg-1"}, "globex", 403),
        ({"tenant": "acme"}, "all", 422),
        ({"tenant": "acme", "callgraphId": "a/../b"}, "all", 400),
        ({"tenant": "ACME!", "callgraphId": "cg-1"}, "all", 400),
    ],
)
def test_recompute_refusals(
    client: httpx.Client, body: Any, token: str | None, status: int
) -> None:
    headers = auth(token) if token else {}
    assert client.post(RECOMPUTE, json=body, headers=headers).status_code == status


def _fake_airflow(calls: list[dict[str, Any]], status: int = 200) -> Starlette:
    async def trigger(request: Request) -> JSONResponse:
        calls.append(
            {
                "dag_id": request.path_params["dag_id"],
                "auth": request.headers.get("authorization"),
                "body": await request.json(),
            }
        )
        return JSONResponse({"dag_run_id": "manual__1", "state": "queued"}, status_code=status)

    return Starlette(routes=[Route("/api/v2/dags/{dag_id}/dagRuns", trigger, methods=["POST"])])


def test_recompute_triggers_the_airflow_dag_when_configured(tmp_path: Path) -> None:
    calls: list[dict[str, Any]] = []
    with serve_asgi(_fake_airflow(calls)) as airflow:
        home = make_home(tmp_path, airflow_api_url=airflow.url + "/", airflow_token="af-secret")
        with live_api(home) as live:
            body = {"tenant": "acme", "callgraphId": "cg-1", "subjectKey": "scan:s-1"}
            resp = httpx.post(live.url + RECOMPUTE, json=body, headers=auth())
    assert resp.status_code == 202
    assert resp.json() == {"mode": "airflow", "dagRunId": "manual__1", "state": "queued"}
    assert calls == [
        {
            "dag_id": "reachability_recompute",
            "auth": "Bearer af-secret",
            "body": {
                "logical_date": None,
                "conf": {"tenant": "acme", "callgraph_id": "cg-1", "subject_key": "scan:s-1"},
            },
        }
    ]


def test_recompute_answers_502_when_airflow_refuses_or_is_down(tmp_path: Path) -> None:
    calls: list[dict[str, Any]] = []
    body = {"tenant": "acme", "callgraphId": "cg-1"}
    with serve_asgi(_fake_airflow(calls, status=409)) as airflow:
        home = make_home(tmp_path, airflow_api_url=airflow.url)
        with live_api(home) as live:
            assert httpx.post(live.url + RECOMPUTE, json=body, headers=auth()).status_code == 502
        closed_port = airflow.port
    home = make_home(tmp_path, airflow_api_url=f"http://127.0.0.1:{closed_port}")
    with live_api(home) as live:
        resp = httpx.post(live.url + RECOMPUTE, json=body, headers=auth())
    assert (resp.status_code, resp.json()["error"]) == (502, "airflow_unavailable")


# --- health, readiness, metrics, OpenAPI ----------------------------------------------------


def test_health_and_readiness(client: httpx.Client) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"home": "ok", "tokens": "ok", "sealed": "off"}


@pytest.mark.parametrize(
    ("ingest_cfg", "serve_cfg", "check"),
    [
        ({"sealed": True}, {"allow_anonymous": True, "token_file": None}, "sealed"),
        ({"sealed": True}, {"allow_anonymous": True}, "sealed"),
        ({}, {"token_file": None}, "tokens"),
        ({}, {"token_file": "/nonexistent/tokens.json"}, "tokens"),
    ],
)
def test_readiness_fails_when_misconfigured(
    tmp_path: Path, ingest_cfg: dict[str, Any], serve_cfg: dict[str, Any], check: str
) -> None:
    home = make_home(tmp_path, ingest=ingest_cfg, **serve_cfg)
    with live_api(home) as live:
        resp = httpx.get(live.url + "/readyz")
    assert resp.status_code == 503
    assert resp.json()["checks"][check] not in ("ok", "off")


def test_readiness_fails_when_the_home_is_unwritable(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    home = Home(home.settings.replace(home=str(blocker)))
    with live_api(home) as live:
        resp = httpx.get(live.url + "/readyz")
        assert resp.status_code == 503
        assert "not writable" in resp.json()["checks"]["home"]
        assert httpx.get(live.url + "/healthz").status_code == 200


def test_anonymous_mode_for_local_development(tmp_path: Path) -> None:
    home = make_home(tmp_path, token_file=None, allow_anonymous=True)
    with live_api(home) as live, httpx.Client(base_url=live.url) as client:
        resp = client.post(NDJSON, params=SUBJECT, content=BODY, headers=CONTEXT)
        assert resp.status_code == 202
        assert client.get("/readyz").status_code == 200


def test_metrics_count_requests_batches_rejections_and_latency(client: httpx.Client) -> None:
    post(client)
    post(client)
    post(client, b'{"hitCount":1}\n')
    post(client, token="reader")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for s in family.samples
    }
    route = ("route", NDJSON)
    assert (
        samples[
            ("signals_runtime_api_requests_total", (("method", "POST"), route, ("status", "202")))
        ]
        == 2
    )
    assert (
        samples[
            ("signals_runtime_api_requests_total", (("method", "POST"), route, ("status", "422")))
        ]
        == 1
    )
    assert (
        samples[
            ("signals_runtime_staged_batches_total", (("created", "true"), ("endpoint", "ndjson")))
        ]
        == 1
    )
    assert (
        samples[
            ("signals_runtime_staged_batches_total", (("created", "false"), ("endpoint", "ndjson")))
        ]
        == 1
    )
    assert samples[("signals_runtime_upload_rejections_total", (("reason", "invalid_lines"),))] == 1
    assert (
        samples[("signals_runtime_upload_rejections_total", (("reason", "insufficient_scope"),))]
        == 1
    )
    assert (
        samples[("signals_runtime_api_request_latency_seconds_count", (("method", "POST"), route))]
        == 4
    )


def test_unknown_routes_are_404_in_the_error_format(client: httpx.Client) -> None:
    resp = client.get("/nope")
    assert resp.status_code == 404
    assert set(resp.json()) == {"error", "message", "hint", "reasonCodes", "lines"}


def test_openapi_declares_every_route_and_status(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    declared = {
        (path, method): set(op["responses"])
        for path, item in spec["paths"].items()
        for method, op in item.items()
    }
    codes = {"202", "400", "401", "403", "408", "409", "413", "415", "422", "503"}
    assert declared[(NDJSON, "post")] == codes
    assert declared[(JSON, "post")] == codes
    assert declared[(FACTS, "get")] == {"200", "400", "401", "403", "404", "422"}
    assert {"200", "202", "502"} <= declared[(RECOMPUTE, "post")]
    assert declared[("/readyz", "get")] == {"200", "503"}
    assert ("/healthz", "get") in declared
    assert ("/metrics", "get") in declared
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    staged = spec["paths"][NDJSON]["post"]["responses"]["202"]
    assert set(staged["headers"]) == {"Content-SHA256", "X-Ingest-Id"}


# --- the `serve` command, in its own process, against hostile batches ------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_command_survives_hostile_batches(tmp_path: Path, fixtures_dir: Path) -> None:
    """A separate process: should a parser crash it, this test fails instead of pytest dying."""
    port = _free_port()
    exe = Path(sys.executable).with_name("runtime-facts")
    args = [str(exe), "serve", "--host", "127.0.0.1", "--port", str(port)]
    args += ["--token-file", str(write_token_file(tmp_path / "tokens.json"))]
    env = {**os.environ, "RUNTIME_FACTS_HOME": str(tmp_path / "home")}
    with (tmp_path / "serve.log").open("wb") as log:
        proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "runtime-facts serve did not become ready"
            time.sleep(0.1)
        hostile = fixtures_dir / "hostile"
        with httpx.Client(base_url=url, timeout=60) as client:
            deep = post(client, (hostile / "deep-nesting-stack.ndjson").read_bytes())
            assert (deep.status_code, deep.json()["reasonCodes"][-1]) == (422, "nesting_too_deep")
            ratio = post(client, (hostile / "bomb-ratio.ndjson.gz").read_bytes(), gzipped=True)
            assert (ratio.status_code, ratio.json()["error"]) == (422, "compression_ratio_exceeded")
            big = post(client, (hostile / "bomb-size.ndjson.gz").read_bytes(), gzipped=True)
            assert (big.status_code, big.json()["lineCount"]) == (202, 8 * 1024 * 1024 // 64 + 1)
            assert post(client).status_code == 202
        assert proc.poll() is None
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
