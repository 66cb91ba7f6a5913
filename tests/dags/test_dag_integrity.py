"""Every DAG file parses, follows the house rules, and stays light at parse time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.dags.conftest import DAG_IDS, DAGS

HEAVY = (
    "polars",
    "duckdb",
    "deltalake",
    "pyarrow",
    "runtime_facts.pipeline",
    "runtime_facts.ops",
    "runtime_facts.config",
)
PROBE = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
heavy = {heavy!r}
out = {{}}
for path in {paths!r}:
    bag = DagBag(dag_folder=path)
    assert not bag.import_errors, bag.import_errors
    out[path] = {{
        "heavy": sorted(m for m in heavy if m in sys.modules),
        "schedules": {{i: str(d.schedule) for i, d in bag.dags.items()}},
    }}
print(json.dumps(out))
"""


def _probe(env: dict[str, str] | None = None) -> dict[str, Any]:
    paths = sorted(str(p) for p in DAGS.glob("*.py"))
    code = PROBE.format(heavy=HEAVY, paths=paths)
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    parsed: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return parsed


def test_dagbag_has_no_import_errors(dagbag: Any) -> None:
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == DAG_IDS


@pytest.mark.parametrize("dag_id", sorted(DAG_IDS))
def test_dag_follows_house_rules(dagbag: Any, dag_id: str) -> None:
    dag = dagbag.dags[dag_id]
    assert Path(dag.fileloc).stem == dag_id
    assert "runtime-facts" in dag.tags
    assert len(dag.tags) >= 2
    assert dag.doc_md
    assert dag_id in dag.doc_md
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert dag.default_args["retries"] >= 2
    assert all(task.retries >= 2 for task in dag.tasks)
    assert dag.owner == "runtime-facts"


@pytest.fixture(scope="module")
def parsed_alone() -> dict[str, Any]:
    """Each DAG file parsed in a fresh interpreter, with a custom ingest schedule."""
    return _probe({"RUNTIME_FACTS__SCHEDULE": "17 * * * *"})


def test_dag_files_import_no_heavy_module_at_parse_time(parsed_alone: dict[str, Any]) -> None:
    assert len(parsed_alone) == len(DAG_IDS)
    for path, found in parsed_alone.items():
        assert found["heavy"] == [], f"{path} imports {found['heavy']} at parse time"


def test_each_dag_file_holds_exactly_its_dag(parsed_alone: dict[str, Any]) -> None:
    for path, found in parsed_alone.items():
        assert list(found["schedules"]) == [Path(path).stem]


def test_ingest_fallback_cron_comes_from_the_environment(parsed_alone: dict[str, Any]) -> None:
    ingest = parsed_alone[str(DAGS / "runtime_facts_ingest.py")]
    assert (
        "CronTriggerTimetable(expression='17 * * * *'"
        in ingest["schedules"]["runtime_facts_ingest"]
    )


def test_schedules(dagbag: Any) -> None:
    from airflow.sdk import AssetOrTimeSchedule

    ingest = dagbag.dags["runtime_facts_ingest"].timetable
    assert isinstance(ingest, AssetOrTimeSchedule)
    assert ingest.asset_condition.name == "runtime_facts.cas.runtime"
    assert ingest.timetable.expression == "*/5 * * * *"
    assert dagbag.dags["runtime_facts_retention"].schedule == "@daily"
    assert dagbag.dags["runtime_facts_airgap_backfill"].schedule is None
    graphs = dagbag.dags["reachability_recompute"].schedule
    assert graphs.name == "runtime_facts.cas.graphs"
    assert graphs.uri.endswith("/cas/reachability/graphs")


def test_the_ingest_and_airgap_dags_share_one_task_group(dagbag: Any) -> None:
    def shape(dag_id: str) -> dict[str, Any]:
        dag = dagbag.dags[dag_id]
        group = ["ingest_batch", "fold", "score", "publish"]
        return {
            t: (
                sorted(dag.task_dict[t].upstream_task_ids & set(group)),
                dag.task_dict[t].trigger_rule,
                sorted(a.name for a in dag.task_dict[t].outlets),
            )
            for t in group
        }

    assert shape("runtime_facts_ingest") == shape("runtime_facts_airgap_backfill")
    ingest, airgap = (
        dagbag.dags[d].params for d in ("runtime_facts_ingest", "runtime_facts_airgap_backfill")
    )
    for name in ("allow_partial", "sealed"):
        assert ingest.get_param(name).schema == airgap.get_param(name).schema


def test_ingest_maps_one_task_per_chunk_and_declares_table_assets(dagbag: Any) -> None:
    dag = dagbag.dags["runtime_facts_ingest"]
    ingest = dag.task_dict["ingest_batch"]
    assert ingest.is_mapped
    outlets = {
        a.uri.rsplit("/", 2)[-2] + "/" + a.uri.rsplit("/", 1)[-1]
        for t in dag.tasks
        for a in t.outlets
    }
    assert {
        "lake/runtime_fact_batches",
        "lake/ingest_receipts",
        "lake/runtime_facts",
        "lake/reachability_states",
    } <= outlets
    assert dag.task_dict["fold"].trigger_rule == "none_failed"
    assert dag.task_dict["publish"].trigger_rule == "none_failed"


def _validate(dagbag: Any, dag_id: str, conf: dict[str, Any]) -> dict[str, Any]:
    import copy

    params = copy.deepcopy(dagbag.dags[dag_id].params)
    params.update(conf)
    validated: dict[str, Any] = params.validate()
    return validated


def test_airgap_params_accept_a_valid_request(dagbag: Any) -> None:
    conf = {"kit_path": "/mnt/kit", "tenant": "acme", "sealed": True, "allow_partial": False}
    assert _validate(dagbag, "runtime_facts_airgap_backfill", conf) == conf


@pytest.mark.parametrize(
    "conf",
    [
        {},  # kit_path is required
        {"kit_path": ""},
        {"kit_path": "/mnt/kit", "tenant": "Acme"},
        {"kit_path": "/mnt/kit", "tenant": "../etc"},
        {"kit_path": "/mnt/kit", "sealed": "yes"},
        {"kit_path": "/mnt/kit", "allow_partial": 1},
    ],
)
def test_airgap_params_reject_bad_requests(dagbag: Any, conf: dict[str, Any]) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError):
        _validate(dagbag, "runtime_facts_airgap_backfill", conf)


def test_retention_is_a_dry_run_unless_asked(dagbag: Any) -> None:
    assert _validate(dagbag, "runtime_facts_retention", {})["dry_run"] is True


@pytest.mark.parametrize("dag_id", ["runtime_facts_ingest", "runtime_facts_airgap_backfill"])
def test_tasks_that_commit_run_in_the_commit_pool(dagbag: Any, dag_id: str) -> None:
    from runtime_facts.airflow.pools import COMMIT_POOL

    dag = dagbag.dags[dag_id]
    pooled = {t.task_id for t in dag.tasks if t.pool == COMMIT_POOL}
    assert pooled == {"ingest_batch", "fold", "score"}
    assert all(t.execution_timeout is not None for t in dag.tasks)
    assert dag.dagrun_timeout is not None
