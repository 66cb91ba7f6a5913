"""OpenLineage: a real ingest run emits events naming the Delta tables by their storage URIs."""

from __future__ import annotations

import gzip
import json
from typing import Any

from runtime_facts.home import Home
from runtime_facts.subject import SubjectContext
from tests.dags.conftest import LINEAGE_LOG


def test_ingest_run_reports_the_tables_it_writes(home: Home, run_dag: Any) -> None:
    seen = LINEAGE_LOG.read_bytes().count(b"\n") if LINEAGE_LOG.exists() else 0
    ctx = SubjectContext("acme", "cg-1", scan_id="s-1")
    home.cas.put("runtime", gzip.compress(b'{"symbolId":"sym:a","hitCount":3}\n', mtime=0), ctx)

    run = run_dag("runtime_facts_ingest")

    assert str(run.state) == "success"
    emitted = [json.loads(line) for line in LINEAGE_LOG.read_text().splitlines()[seen:]]
    outputs = {
        (e["job"]["name"].rsplit(".", 1)[-1], d["namespace"], d["name"])
        for e in emitted
        if e["eventType"] == "COMPLETE"
        for d in e.get("outputs", [])
    }
    from runtime_facts.airflow.assets import BATCHES, FACTS, STATES

    def dataset(uri: str) -> tuple[str, str]:  # file:///a/b -> ("file", "/a/b")
        scheme, _, path = uri.partition("://")
        return scheme, path

    for task, asset in (("ingest_batch", BATCHES), ("fold", FACTS), ("score", STATES)):
        assert (task, *dataset(asset.uri)) in outputs
        assert asset.uri.endswith("/lake/" + asset.name.rsplit(".", 1)[-1])
