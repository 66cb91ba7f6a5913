"""OpenLineage: a real ingest run emits events naming the Delta tables by their storage URIs."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from runtime_facts.home import Home
from runtime_facts.subject import SubjectContext


def test_ingest_run_reports_the_tables_it_writes(
    home: Home, run_dag: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = tmp_path / "lineage.jsonl"
    transport = {"type": "file", "log_file_path": str(events), "append": True}
    monkeypatch.setenv("AIRFLOW__OPENLINEAGE__TRANSPORT", json.dumps(transport))
    monkeypatch.setenv("AIRFLOW__OPENLINEAGE__NAMESPACE", "runtime-facts-test")
    ctx = SubjectContext("acme", "cg-1", scan_id="s-1")
    home.cas.put("runtime", gzip.compress(b'{"symbolId":"sym:a","hitCount":3}\n', mtime=0), ctx)

    run = run_dag("runtime_facts_ingest")

    assert str(run.state) == "success"
    emitted = [json.loads(line) for line in events.read_text().splitlines()]
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
