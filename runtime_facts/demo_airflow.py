"""Run the real `runtime_facts_ingest` DAG once, in this process, for `make demo`.

Uses `dag.test()`: the DAG's tasks run here one after the other (mapped tasks too) against a
SQLite metadata DB in `airflow_home`, created on first use. No scheduler, no webserver.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DAGS = REPO / "dags"
DAG_ID = "runtime_facts_ingest"


def airflow_env(airflow_home: str, dags: Path = DAGS) -> dict[str, str]:
    """The environment that points Airflow at a home folder and this repo's DAGs."""
    home = Path(airflow_home).resolve()
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
    }


def _configure(home: str, airflow_home: str) -> None:
    env = airflow_env(airflow_home)
    if "airflow" in sys.modules and os.environ.get("AIRFLOW_HOME") != env["AIRFLOW_HOME"]:
        raise RuntimeError(
            f"Airflow is already configured for AIRFLOW_HOME={os.environ.get('AIRFLOW_HOME')}; "
            "run the demo in a fresh process"
        )
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    os.environ.update(env)
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    os.environ["RUNTIME_FACTS_HOME"] = str(Path(home).resolve())


def run_ingest_dag(home: str, airflow_home: str) -> dict[str, Any]:
    """Set up the SQLite Airflow home if needed and run `runtime_facts_ingest` once.

    Args:
        home: the runtime-facts home the DAG ingests into (becomes `RUNTIME_FACTS_HOME`).
        airflow_home: Airflow's folder (config, SQLite DB, logs); created when missing.

    Returns:
        The run summary the DAG's `publish` task returned, plus `dag_run_id` and `state`.

    Raises:
        RuntimeError: the run did not succeed (the task states are in the message).
    """
    _configure(home, airflow_home)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Starlette's httpx notice when the test client loads
        from airflow.dag_processing.dagbag import DagBag
        from airflow.utils.db import initdb

        initdb()  # creates the DB, or brings an existing one to the current schema
        bag = DagBag(dag_folder=str(DAGS / f"{DAG_ID}.py"))
        if bag.import_errors:
            raise RuntimeError(f"{DAG_ID} does not parse: {bag.import_errors}")
        run: Any = bag.dags[DAG_ID].test()
    states = {f"{ti.task_id}[{ti.map_index}]": str(ti.state) for ti in run.get_task_instances()}
    if str(run.state) != "success":
        raise RuntimeError(f"{DAG_ID} run {run.run_id} ended {run.state}: {states}")
    publish = run.get_task_instance("publish")
    summary: dict[str, Any] = dict(publish.xcom_pull(task_ids="publish") or {})
    summary["dag_run_id"] = run.run_id
    summary["state"] = str(run.state)
    return summary
