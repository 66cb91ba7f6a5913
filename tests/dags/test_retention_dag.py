"""runtime_facts_retention, really run with dag.test(): a dry run, then the real run it listed."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from polars.testing import assert_frame_equal

from runtime_facts.home import Home
from runtime_facts.pipeline.ingest import ingest
from runtime_facts.stores.lake import recent_name
from runtime_facts.subject import SubjectContext
from tests.dags.conftest import task_states, xcom
from transforms.schema import FACT_KEY

DAG_ID = "runtime_facts_retention"
DECISIONS = (
    "expired_facts",
    "expired_facts_digest",
    "expired_facts_by_subject",
    "cas_deleted",
    "cas_kept",
)
Staged = list[tuple[str, int]]


def _age(home: Home, sha: str, days: int, now: datetime) -> None:
    ts = (now - timedelta(days=days)).timestamp()
    os.utime(home.root / "cas" / "reachability" / "runtime" / sha, (ts, ts))


def test_the_real_run_deletes_exactly_what_the_dry_run_listed(
    home: Home, stage_generated: Callable[..., Staged], run_dag: Any
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    old = stage_generated(
        SubjectContext("acme", "cg-1", scan_id="old"), events=500, start=now - timedelta(days=90)
    )
    fresh = stage_generated(SubjectContext("acme", "cg-1", scan_id="fresh"), events=500, seed=8)
    ingest(home)
    for sha, _ in old + fresh:
        _age(home, sha, 200, now)
    conf = {"as_of": now.isoformat()}

    dry = run_dag(DAG_ID, {**conf, "dry_run": True})
    listed = xcom(dry, "apply_retention")
    assert set(home.cas.list("runtime")) == {sha for sha, _ in old + fresh}
    real = run_dag(DAG_ID, {**conf, "dry_run": False})
    done = xcom(real, "apply_retention")

    assert (str(dry.state), str(real.state)) == ("success", "success")
    assert (listed["dry_run"], done["dry_run"]) == (True, False)
    assert {k: listed[k] for k in DECISIONS} == {k: done[k] for k in DECISIONS}
    assert {d["sha256"] for d in done["cas_deleted"]} == {sha for sha, _ in old}
    assert set(home.cas.list("runtime")) == {sha for sha, _ in fresh}
    subjects = home.lake.read("runtime_facts").get_column("subject_key").unique().to_list()
    assert subjects == ["scan:fresh"]


def test_a_scheduled_run_is_a_dry_run(
    home: Home, stage_generated: Callable[..., Staged], run_dag: Any
) -> None:
    now = datetime.now(UTC)
    stage_generated(SubjectContext("acme", "cg-1", scan_id="old"), start=now - timedelta(days=90))
    ingest(home)
    before = home.lake.read("runtime_facts").sort(FACT_KEY, nulls_last=False)

    run = run_dag(DAG_ID)

    report = xcom(run, "apply_retention")
    assert report["dry_run"] is True
    assert report["expired_facts"] > 0
    # The compaction after it merged the recent rows into the base: no row a reader sees moved.
    assert home.lake.read(recent_name("runtime_facts")).is_empty()
    assert_frame_equal(home.lake.read("runtime_facts").sort(FACT_KEY, nulls_last=False), before)


def test_a_reference_time_in_the_future_is_refused(home: Home, run_dag: Any) -> None:
    future = (datetime.now(UTC) + timedelta(days=30)).isoformat()

    run = run_dag(DAG_ID, {"dry_run": False, "as_of": future})

    assert str(run.state) == "failed"
    assert task_states(run)[("apply_retention", -1)] == "failed"
    assert run.get_task_instance("apply_retention").try_number == 1
