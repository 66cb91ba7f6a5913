"""Stage callgraphs in CAS and keep the current graph per (tenant, callgraphId)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import orjson

from runtime_facts.errors import NotFoundError, Reason, RejectedError
from runtime_facts.home import Home
from runtime_facts.stores.cas import cas_uri
from runtime_facts.subject import validate_id, validate_tenant
from transforms.callgraph import Callgraph, CallgraphError, parse_callgraph
from transforms.decompress import gunzip_bounded

GRAPH_MAX_BYTES = 1 << 30
GRAPH_MAX_DECOMPRESSED = 8 << 30


@dataclass(frozen=True)
class StagedGraph:
    """A callgraph stored in CAS and made current for its callgraphId."""

    uri: str
    sha256: str
    tenant: str
    callgraph_id: str
    nodes: int
    edges: int
    created: bool


def _decode(data: bytes) -> bytes:
    if data[:2] == b"\x1f\x8b":
        return gunzip_bounded(data, max_output=GRAPH_MAX_DECOMPRESSED, max_ratio=10_000)
    return data


def _registry_key(tenant: str, callgraph_id: str) -> str:
    return f"registry/graphs/{tenant}/{callgraph_id}.json"


def stage_graph(home: Home, path: Path, tenant: str, now: datetime) -> StagedGraph:
    """Validate a `runtime-facts.callgraph.v1` document and store it as the current graph.

    Raises:
        RejectedError: the document breaks the callgraph contract (reason `callgraph_*`).
    """
    validate_tenant(tenant)
    data = path.read_bytes()
    if len(data) > GRAPH_MAX_BYTES:
        raise RejectedError(Reason.BATCH_TOO_LARGE, f"{path} is larger than {GRAPH_MAX_BYTES}")
    try:
        graph = parse_callgraph(_decode(data))
    except CallgraphError as exc:
        raise RejectedError(exc.reason_code, f"{path}: {exc.detail}") from exc
    validate_id("callgraphId", graph.callgraph_id)
    context = {"tenant": tenant, "callgraphId": graph.callgraph_id, "language": graph.language}
    result = home.cas.put("graphs", data, context)
    record = {"sha256": result.sha256, "casUri": result.uri, "stagedAt": now.isoformat()}
    home.objects.put(_registry_key(tenant, graph.callgraph_id), orjson.dumps(record))
    return StagedGraph(
        result.uri,
        result.sha256,
        tenant,
        graph.callgraph_id,
        graph.nodes.height,
        graph.edges.height,
        result.created,
    )


def current_graph_sha(home: Home, tenant: str, callgraph_id: str) -> str | None:
    """Digest of the current graph for a callgraphId, or None when none was staged."""
    try:
        record = orjson.loads(home.objects.get(_registry_key(tenant, callgraph_id)))
    except (FileNotFoundError, ValueError):
        return None
    sha = record.get("sha256") if isinstance(record, dict) else None
    return sha if isinstance(sha, str) else None


def forget_current_graph(home: Home, tenant: str, callgraph_id: str) -> None:
    """Drop the current-graph record of a callgraphId (retention, when its graph is deleted)."""
    home.objects.delete(_registry_key(tenant, callgraph_id))


def load_graph(home: Home, sha: str) -> Callgraph:
    """Read (digest re-verified) and parse a staged graph."""
    try:
        return parse_callgraph(_decode(home.cas.get("graphs", sha)))
    except CallgraphError as exc:
        raise RejectedError(exc.reason_code, f"{cas_uri('graphs', sha)}: {exc.detail}") from exc
    except FileNotFoundError as exc:  # pragma: no cover - cas.get maps misses already
        raise NotFoundError(Reason.CAS_MISS, str(exc)) from exc
