"""Property test of the API against its own OpenAPI document (schemathesis-style, hypothesis).

For every operation in /openapi.json, random query parameters, headers and bodies (drawn from
the declared schemas, with plausible values mixed in) never yield a 5xx, every status is one
the operation declares, and every JSON answer validates against the declared schema.
"""

from __future__ import annotations

import gzip
import string
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime_facts.api import create_app
from runtime_facts.config import Settings
from runtime_facts.home import Home
from runtime_facts.pipeline.ingest import ingest
from tests.runtime_facts.api_harness import TOKENS, live_api, make_home

SPEC = create_app(Home(Settings.load("unused-home"))).openapi()
OPERATIONS = sorted(
    (path, method)
    for path, item in SPEC["paths"].items()
    for method in item
    if method != "parameters"
)
PLAUSIBLE: dict[str, list[str | None]] = {
    "X-Tenant": ["acme"],
    "tenant": ["acme"],
    "X-Callgraph-Id": ["cg-1", None],
    "callgraphId": ["cg-1", None, "cg-2"],
    "scanId": ["s-1", "s-2"],
    "imageDigest": [None, "sha256:abc"],
    "component": [None, "pkg:npm/a"],
    "version": [None, "1.0.0"],
    "subject": ["scan:s-1", "scan:zzz"],
    "subjectKey": [None, "scan:s-1"],
    "Content-Encoding": [None, "gzip", "identity"],
    "X-Reachability-Cas-Uri": [None, "cas://reachability/runtime/" + "0" * 64],
}
INTS = st.integers(min_value=-(2**63), max_value=2**64 - 1)  # what JSON encoders emit
HEADER_TEXT = st.text(alphabet=string.ascii_letters + string.digits + " -_.:/@=", max_size=24).map(
    str.strip  # HTTP forbids leading / trailing blanks in a header value
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | INTS | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
EVENT = st.fixed_dictionaries(
    {"symbolId": st.sampled_from(["sym:a", "sym:b"]), "hitCount": st.integers(1, 1000)},
    optional={
        "codeId": st.text(max_size=6),
        "loaderBase": st.sampled_from(["0x7f00", "zz"]),
        "observedAt": st.sampled_from(["2026-01-01T00:00:00Z", "2025-01-01T00:00:00Z", "nope"]),
        "process": st.fixed_dictionaries({"id": INTS, "name": st.text(max_size=4)}),
    },
)
BAD_EVENT = JSON_VALUES | st.fixed_dictionaries({"symbolId": JSON_VALUES, "hitCount": JSON_VALUES})
EVENTS = st.lists(st.one_of(EVENT, EVENT, EVENT, BAD_EVENT), min_size=1, max_size=4)


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = SPEC["components"]["schemas"][name]
    return schema


def from_schema(
    schema: dict[str, Any], name: str = "", *, plausible: bool
) -> st.SearchStrategy[Any]:
    """Values for a JSON schema (the subset FastAPI emits): plausible ones, or random ones."""
    schema = _resolve(schema)
    if plausible and name in PLAUSIBLE and schema.get("type") in ("string", None):
        return st.sampled_from(PLAUSIBLE[name])
    if "anyOf" in schema or "oneOf" in schema:
        options = schema.get("anyOf") or schema.get("oneOf") or []
        return st.one_of([from_schema(s, name, plausible=plausible) for s in options])
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        parts = {k: from_schema(v, k, plausible=plausible) for k, v in props.items()}
        return st.fixed_dictionaries(
            {k: v for k, v in parts.items() if k in required},
            optional={k: v for k, v in parts.items() if k not in required},
        ).map(lambda d: {k: v for k, v in d.items() if v is not None} if plausible else d)
    if kind == "array":
        if "symbolId" in schema.get("items", {}).get("properties", {}):
            return EVENTS if plausible else st.lists(BAD_EVENT, max_size=3)
        return st.lists(from_schema(schema.get("items", {}), plausible=plausible), max_size=4)
    if kind == "string":
        return st.text(max_size=16)
    if kind == "integer":
        return INTS
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    return JSON_VALUES


def _ndjson(events: list[Any]) -> bytes:
    return b"".join(orjson.dumps(e) + b"\n" for e in events)


def _body(content: dict[str, Any], plausible: bool) -> st.SearchStrategy[bytes]:
    if not content:
        return st.just(b"")
    options: list[st.SearchStrategy[bytes]] = [] if plausible else [st.binary(max_size=64)]
    for media, doc in content.items():
        if media == "application/json":
            options.append(from_schema(doc["schema"], plausible=plausible).map(orjson.dumps))
        else:
            options.append((EVENTS if plausible else st.lists(BAD_EVENT, max_size=3)).map(_ndjson))
    return st.one_of(options)


@st.composite
def request_for(draw: st.DrawFn, path: str, method: str) -> dict[str, Any]:
    """A plausible request with a few of its parts (drawn at random) broken."""
    op = SPEC["paths"][path][method]
    params = [p for p in op.get("parameters", []) if p["in"] in ("query", "header")]
    parts = [p["name"] for p in params] + ["Authorization", "body"]
    broken = set(draw(st.lists(st.sampled_from(parts), max_size=3, unique=True)))
    query: dict[str, str] = {}
    headers: dict[str, str] = {}
    for p in params:
        name, header = p["name"], p["in"] == "header"
        if name in broken:
            value = draw(st.none() | (HEADER_TEXT if header else st.text(max_size=24)))
        else:
            value = draw(st.sampled_from(PLAUSIBLE.get(name, ["x"])))
        if value is not None:
            (headers if header else query)[name] = value
    token: str | None = TOKENS["all"][0]
    if "Authorization" in broken:
        token = draw(st.sampled_from([TOKENS["reader"][0], TOKENS["globex"][0], "bogus", None]))
    content = op.get("requestBody", {}).get("content", {})
    body = draw(_body(content, plausible="body" not in broken))
    return {"query": query, "headers": headers, "body": body, "token": token}


def check_response(path: str, method: str, resp: httpx.Response) -> None:
    """Declared status, and a body valid against the declared schema."""
    assert resp.status_code < 500, resp.text
    declared = SPEC["paths"][path][method]["responses"]
    assert str(resp.status_code) in declared, (resp.status_code, resp.text)
    schema = (
        declared[str(resp.status_code)].get("content", {}).get("application/json", {}).get("schema")
    )
    if schema is not None and resp.headers.get("content-type", "").startswith("application/json"):
        jsonschema.validate(resp.json(), {**schema, "components": SPEC["components"]})


@pytest.mark.parametrize(("path", "method"), OPERATIONS)
def test_random_requests_never_fail_the_server(tmp_path: Path, path: str, method: str) -> None:
    home = make_home(tmp_path, body_timeout_seconds=5.0)
    with live_api(home) as live, httpx.Client(base_url=live.url, timeout=30) as client:
        seed = {
            "X-Tenant": "acme",
            "X-Callgraph-Id": "cg-1",
            "Authorization": f"Bearer {TOKENS['all'][0]}",
        }
        client.post(
            "/signals/runtime-facts/ndjson?scanId=s-1",
            content=b'{"symbolId":"a","hitCount":1}\n',
            headers=seed,
        )
        ingest(home)

        @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(req=request_for(path, method))
        def check(req: dict[str, Any]) -> None:
            headers = {k: v for k, v in req["headers"].items() if v is not None}
            if req["token"] is not None:
                headers["Authorization"] = f"Bearer {req['token']}"
            body = req["body"]
            if headers.get("Content-Encoding") == "gzip":
                body = gzip.compress(body)
            query = {k: v for k, v in req["query"].items() if v is not None}
            resp = client.request(
                method.upper(), path, params=query, headers=headers, content=body or None
            )
            check_response(path, method, resp)

        check()
