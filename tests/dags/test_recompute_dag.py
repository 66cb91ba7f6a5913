"""reachability_recompute, really run with dag.test(); its asset-event targets without Airflow."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import polars as pl

from runtime_facts.home import Home
from runtime_facts.pipeline.ingest import ingest
from runtime_facts.pipeline.outcomes import utc_now
from runtime_facts.stores.graphs import stage_graph
from runtime_facts.subject import SubjectContext
from tests.dags.conftest import xcom

DAG_ID = "reachability_recompute"
CTX = SubjectContext("acme", "cg-shop", scan_id="s-1")


def _graph(tmp_path: Path) -> Path:
    doc = {
        "schema": "runtime-facts.callgraph.v1",
        "callgraphId": "cg-shop",
        "language": "java",
        "nodes": [{"id": "sym:main"}, {"id": "sym:used"}, {"id": "sym:dead"}],
        "edges": [{"sourceId": "sym:main", "targetId": "sym:used", "kind": "call"}],
        "entrypoints": ["sym:main"],
    }
    path = tmp_path / "cg-shop.json"
    path.write_bytes(orjson.dumps(doc))
    return path


def test_a_manual_run_recomputes_the_callgraphs_states(
    home: Home, stage: Any, tmp_path: Path, run_dag: Any
) -> None:
    stage('{"symbolId":"sym:used","hitCount":5}\n', CTX)
    ingest(home, recompute=False)
    stage_graph(home, _graph(tmp_path), "acme", utc_now())
    assert home.lake.read("reachability_states").is_empty()

    run = run_dag(DAG_ID, {"tenant": "acme", "callgraph_id": "cg-shop"})

    assert str(run.state) == "success"
    states = home.lake.read("reachability_states").filter(pl.col("subject_key") == "scan:s-1")
    by_symbol = dict(states.select("symbol_id", "state").iter_rows())
    assert by_symbol["sym:used"] == "CR"  # statically reachable and observed
    assert by_symbol["sym:dead"] in {"SU", "CU"}
    result = xcom(run, "recompute", map_index=0)
    assert (result["tenant"], result["callgraph_id"], result["subjects"]) == ("acme", "cg-shop", 1)


def _targets(dagbag: Any, params: dict[str, Any], events: list[dict[str, Any]]) -> Any:
    from runtime_facts.airflow.assets import GRAPHS

    callable_ = dagbag.dags[DAG_ID].task_dict["targets"].python_callable
    triggering = {GRAPHS: [SimpleNamespace(extra=e) for e in events]}
    return callable_(params=params, triggering_asset_events=triggering)


def test_asset_events_name_the_targets(dagbag: Any) -> None:
    events = [
        {"tenant": "acme", "callgraphId": "cg-1", "subjectKey": "scan:s-1"},
        {"tenant": "acme", "callgraphId": "cg-1", "subjectKey": "scan:s-1"},  # deduplicated
        {"tenant": "beta", "callgraphId": "cg-2"},
        {"note": "no ids"},  # skipped
    ]

    targets = _targets(dagbag, {"tenant": None, "callgraph_id": None}, events)

    assert targets == [
        {"tenant": "acme", "callgraph_id": "cg-1", "subject_key": "scan:s-1"},
        {"tenant": "beta", "callgraph_id": "cg-2", "subject_key": None},
    ]


def test_params_win_over_asset_events(dagbag: Any) -> None:
    params = {"tenant": "acme", "callgraph_id": "cg-9", "subject_key": None}

    targets = _targets(dagbag, params, [{"tenant": "beta", "callgraphId": "cg-2"}])

    assert targets == [{"tenant": "acme", "callgraph_id": "cg-9", "subject_key": None}]
