"""The `make demo` helper and the `airflow standalone` launcher."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from runtime_facts.airflow_standalone import standalone_env
from runtime_facts.demo_airflow import REPO, run_ingest_dag
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

    summary = run_ingest_dag(str(home.root), str(AIRFLOW_HOME))

    assert summary["state"] == "success"
    assert (summary["batches"], summary["accepted"], summary["events"]) == (2, 2, 2000)
    assert home.lake.read("runtime_facts").height > 0


def test_standalone_uses_the_repo_dags_and_a_local_airflow_home() -> None:
    env = standalone_env({"PATH": "/usr/bin"})

    assert env["AIRFLOW_HOME"] == str(REPO / "airflow-home")
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(REPO / "dags")
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("sqlite:///")
    assert env["RUNTIME_FACTS_HOME"] == str(REPO / "var")
    assert env["PATH"] == "/usr/bin"


def test_standalone_keeps_an_explicit_airflow_home(tmp_path: Path) -> None:
    env = standalone_env({"AIRFLOW_HOME": str(tmp_path), "RUNTIME_FACTS_HOME": "/data/rf"})

    assert env["AIRFLOW_HOME"] == str(tmp_path.resolve())
    assert env["RUNTIME_FACTS_HOME"] == "/data/rf"
