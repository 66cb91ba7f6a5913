"""Airflow for the DAG tests: one SQLite metadata DB per session, the repo's dags/ folder.

Airflow reads its configuration when it is first imported, so the environment is set here,
at collection time, before any test module imports it. Tasks run in this process under
`dag.test()`, so they see the `RUNTIME_FACTS_HOME` the top-level autouse fixture points at
each test's `tmp_path`.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from runtime_facts.generate import GeneratorSpec, generate_batches
from runtime_facts.home import Home
from runtime_facts.stores.lake import TABLES
from runtime_facts.subject import SubjectContext

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="rf-airflow-"))
atexit.register(shutil.rmtree, AIRFLOW_HOME, ignore_errors=True)
AIRFLOW_ENV = {
    "AIRFLOW_HOME": str(AIRFLOW_HOME),
    "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{AIRFLOW_HOME}/airflow.db",
    "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
    "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
    # OpenLineage events of every DAG run of the session (the client reads this once).
    "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
        {"type": "file", "log_file_path": str(AIRFLOW_HOME / "lineage.jsonl"), "append": True}
    ),
    "AIRFLOW__OPENLINEAGE__NAMESPACE": "runtime-facts-test",
}
LINEAGE_LOG = AIRFLOW_HOME / "lineage.jsonl"
os.environ.update(AIRFLOW_ENV)

DAG_IDS = {
    "runtime_facts_ingest",
    "runtime_facts_airgap_backfill",
    "reachability_recompute",
    "runtime_facts_retention",
}


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """Create the SQLite metadata DB once (about 5 s), in this process."""
    from airflow.utils.db import initdb

    with warnings.catch_warnings():
        # Starlette warns at import that its test client wants httpx2; Airflow's in-process
        # execution API (what dag.test() runs tasks through) imports it. Import it once here.
        warnings.simplefilter("ignore")
        import airflow.api_fastapi.execution_api.app  # noqa: F401

    initdb()
    return AIRFLOW_HOME


@pytest.fixture(scope="session")
def dagbag(airflow_db: Path) -> Any:
    """The repo's DAGs, parsed once."""
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


@pytest.fixture
def run_dag(dagbag: Any) -> Callable[..., Any]:
    """Run one DAG end to end with `dag.test()`; returns the DagRun.

    The DAG file is parsed afresh for every run: `dag.test()` runs tasks in this process and
    Airflow merges a run's conf into the tasks' Param objects in place, so a DAG object that
    ran once carries that run's conf into the next (even through `copy.deepcopy`).
    `prepare` may adjust the fresh DAG before it runs (e.g. retry settings).
    """
    from airflow.dag_processing.dagbag import DagBag

    def _run(
        dag_id: str,
        conf: dict[str, Any] | None = None,
        prepare: Callable[[Any], None] | None = None,
    ) -> Any:
        # The DAGs are built there; their assets stay those of the session (one URI per asset
        # name in the metadata DB, or Airflow calls a task's outlets inactive).
        sys.modules.pop("runtime_facts.airflow.dags", None)
        dag = DagBag(dag_folder=str(DAGS / f"{dag_id}.py")).dags[dag_id]
        if prepare is not None:
            prepare(dag)
        return dag.test(run_conf=conf)

    return _run


def xcom(dag_run: Any, task_id: str, map_index: int = -1) -> Any:
    """The return value of a task (or one mapped task) of a finished run."""
    ti = dag_run.get_task_instance(task_id, map_index=map_index)
    assert ti is not None, f"no task instance {task_id}[{map_index}]"
    return ti.xcom_pull(task_ids=task_id, map_indexes=map_index)


def task_states(dag_run: Any) -> dict[tuple[str, int], str]:
    """(task_id, map_index) → state of every task instance of a run."""
    return {(ti.task_id, ti.map_index): str(ti.state) for ti in dag_run.get_task_instances()}


def table_versions(home: Home) -> dict[str, int]:
    """Current version of every Delta table."""
    return {name: home.lake.version(name) for name in TABLES}


@pytest.fixture
def stage_generated(home: Home) -> Callable[..., list[tuple[str, int]]]:
    """Stage generated batches; returns (sha, total hits) per batch."""

    def _stage(
        context: SubjectContext,
        *,
        events: int = 3000,
        per_batch: int = 1000,
        seed: int = 7,
        start: datetime | None = None,
    ) -> list[tuple[str, int]]:
        import gzip

        import orjson

        spec = GeneratorSpec(
            events=events,
            symbols=200,
            code_ids=10,
            seed=seed,
            events_per_chunk=per_batch,
            start=start or datetime.now(UTC) - timedelta(days=1),
            seconds_per_event=0.01,
        )
        out = []
        for chunk in generate_batches(spec):
            hits = sum(orjson.loads(line)["hitCount"] for line in gzip.decompress(chunk).split())
            out.append((home.cas.put("runtime", chunk, context).sha256, hits))
        return out

    return _stage
