"""Every asset the DAGs produce or consume, declared once, named by where the data is.

An asset's URI is the storage location of what it stands for (`file:///…` for a local home,
`s3://bucket/prefix/…` for an object-store home), so lineage tools map it to storage; the
home comes from `RUNTIME_FACTS_HOME` (default `./var`), the one setting needed at parse time.
"""

from __future__ import annotations

import os
from pathlib import Path

from airflow.sdk import Asset

TENANT_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
GROUP = "runtime-facts"


def home_uri() -> str:
    """The home as a URI (`s3://...` as given; a folder as an absolute `file://` URI)."""
    home = os.environ.get("RUNTIME_FACTS_HOME", "var")
    if "://" in home:
        return home.rstrip("/")
    return Path(home).resolve().as_uri()


def _asset(name: str, path: str) -> Asset:
    return Asset(name=f"runtime_facts.{name}", uri=f"{home_uri()}/{path}", group=GROUP)


RUNTIME_BATCHES = _asset("cas.runtime", "cas/reachability/runtime")
"""Staged runtime batches: `cas put`, `offline load` and the staging endpoint emit it."""
GRAPHS = _asset("cas.graphs", "cas/reachability/graphs")
"""Staged callgraphs: `cas put-graph` emits it; `reachability_recompute` is scheduled on it."""
BATCHES = _asset("lake.runtime_fact_batches", "lake/runtime_fact_batches")
RECEIPTS = _asset("lake.ingest_receipts", "lake/ingest_receipts")
REJECTIONS = _asset("lake.rejections", "lake/rejections")
FACTS = _asset("lake.runtime_facts", "lake/runtime_facts")
STATES = _asset("lake.reachability_states", "lake/reachability_states")
