"""Run the real `runtime_facts_ingest` DAG once, in this process, for `make demo`.

Uses `dag.test()`: the DAG's tasks run here one after the other (mapped tasks too) against a
SQLite metadata DB in `airflow_home`, created on first use. No scheduler, no webserver.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from runtime_facts.airflow_home import DAGS, local_settings, write_airflow_cfg
from runtime_facts.environment import reserve_airflow_context

DAG_ID = "runtime_facts_ingest"
TaskReport = Callable[[str, str], None]
"""Called with a task label (`ingest_batch[3]`) and its new state: running, success, failed."""


@contextlib.contextmanager
def _task_listener(report: TaskReport | None) -> Iterator[None]:
    """Report task state changes of the in-process run (an Airflow listener, removed after)."""
    if report is None:
        yield
        return
    callback: TaskReport = report
    import pluggy
    from airflow.sdk.listener import get_listener_manager

    hookimpl = pluggy.HookimplMarker("airflow")  # what `airflow.listeners.hookimpl` is

    def label(ti: Any) -> str:
        index = getattr(ti, "map_index", -1)
        return ti.task_id if index is None or index < 0 else f"{ti.task_id}[{index}]"

    class Listener:
        @hookimpl
        def on_task_instance_running(self, previous_state: Any, task_instance: Any) -> None:
            callback(label(task_instance), "running")

        @hookimpl
        def on_task_instance_success(self, previous_state: Any, task_instance: Any) -> None:
            callback(label(task_instance), "success")

        @hookimpl
        def on_task_instance_failed(
            self, previous_state: Any, task_instance: Any, error: Any
        ) -> None:
            callback(label(task_instance), "failed")

    listener = Listener()
    manager: Any = get_listener_manager()
    manager.add_listener(listener)
    try:
        yield
    finally:
        manager.pm.unregister(listener)


def configure(home: str, airflow_home: str) -> None:
    """Write the environment the in-process DAG run needs. Call it at start-up, before any
    polars work has started native threads (runtime_facts.environment says why); calling it
    again with the same folders only replaces values."""
    env = local_settings(airflow_home, dict(os.environ))
    if "airflow" in sys.modules and os.environ.get("AIRFLOW_HOME") != env["AIRFLOW_HOME"]:
        raise RuntimeError(
            f"Airflow is already configured for AIRFLOW_HOME={os.environ.get('AIRFLOW_HOME')}; "
            "run the demo in a fresh process"
        )
    write_airflow_cfg(airflow_home, env)
    # Start-up: the only place the demo writes the environment (runtime_facts.environment).
    os.environ.update(env)
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    os.environ["RUNTIME_FACTS_HOME"] = str(Path(home).resolve())
    reserve_airflow_context()  # dag.test() runs the tasks in this process


def run_ingest_dag(
    home: str, airflow_home: str, on_task: TaskReport | None = None
) -> dict[str, Any]:
    """Set up the SQLite Airflow home if needed and run `runtime_facts_ingest` once.

    Args:
        home: the runtime-facts home the DAG ingests into (becomes `RUNTIME_FACTS_HOME`).
        airflow_home: Airflow's folder (config, SQLite DB, logs); created when missing.
        on_task: called at each task's start and end (progress display).

    Returns:
        The run summary the DAG's `publish` task returned, plus `dag_run_id` and `state`.

    Raises:
        RuntimeError: the run did not succeed (the task states are in the message).
    """
    configure(home, airflow_home)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Starlette's httpx notice when the test client loads
        from airflow.dag_processing.dagbag import DagBag
        from airflow.utils.db import initdb

        initdb()  # creates the DB, or brings an existing one to the current schema
        bag = DagBag(dag_folder=str(DAGS / f"{DAG_ID}.py"))
        if bag.import_errors:
            raise RuntimeError(f"{DAG_ID} does not parse: {bag.import_errors}")
        with _task_listener(on_task):
            run: Any = bag.dags[DAG_ID].test()
    states = {f"{ti.task_id}[{ti.map_index}]": str(ti.state) for ti in run.get_task_instances()}
    if str(run.state) != "success":
        raise RuntimeError(f"{DAG_ID} run {run.run_id} ended {run.state}: {states}")
    publish = run.get_task_instance("publish")
    summary: dict[str, Any] = dict(publish.xcom_pull(task_ids="publish") or {})
    summary["dag_run_id"] = run.run_id
    summary["state"] = str(run.state)
    return summary
