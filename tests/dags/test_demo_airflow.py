"""The `make demo` helper: one real run of the ingest DAG, with its progress."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from runtime_facts.demo_airflow import run_ingest_dag
from runtime_facts.home import Home
from runtime_facts.subject import SubjectContext
from tests.dags.conftest import AIRFLOW_HOME


def test_run_ingest_dag_runs_the_dag_once_and_returns_its_summary(
    home: Home,
    ctx: SubjectContext,
    stage_generated: Callable[..., list[tuple[str, int]]],
    airflow_db: Path,
) -> None:
    stage_generated(ctx, events=2000)
    seen: list[tuple[str, str]] = []

    summary = run_ingest_dag(str(home.root), str(AIRFLOW_HOME), lambda *event: seen.append(event))

    assert summary["state"] == "success"
    finished = {label for label, state in seen if state == "success"}
    assert {"discover", "fold", "publish"} <= finished  # what the demo's progress shows
    assert {label for label, state in seen if state == "running"} == finished
    assert (summary["batches"], summary["accepted"], summary["events"]) == (2, 2, 2000)
    assert home.lake.read("runtime_facts").height > 0
