"""The four DAGs; a DAG folder needs one line: `from runtime_facts.airflow.dags import *`.

Each DAG is wiring only: a task body is one call into the pipeline (`tasks.ingest_group`) or
an operator verb (`runtime_facts.ops`). Scheduled ingest runs when a batch is staged (the
runtime-batches asset) and, as a fallback, on a cron (`RUNTIME_FACTS__SCHEDULE`, default every
5 minutes), so batches staged by hand are never left waiting.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task

from runtime_facts.airflow import docs
from runtime_facts.airflow.assets import FACTS, GRAPHS, RUNTIME_BATCHES, STATES, TENANT_PATTERN
from runtime_facts.airflow.tasks import (
    TASK_TIMEOUT,
    home,
    ingest_group,
    ingest_params,
    max_map_length,
    options,
)

__all__ = [
    "reachability_recompute",
    "runtime_facts_airgap_backfill",
    "runtime_facts_ingest",
    "runtime_facts_retention",
]

START = datetime(2026, 1, 1, tzinfo=UTC)
SCHEDULE = os.environ.get("RUNTIME_FACTS__SCHEDULE", "*/5 * * * *")


def _defaults(retries: int, delay: timedelta = timedelta(seconds=30)) -> dict[str, Any]:
    return {
        "owner": "runtime-facts",
        "retries": retries,
        "retry_delay": delay,
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
        "execution_timeout": TASK_TIMEOUT,
    }


@dag(
    dag_id="runtime_facts_ingest",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(SCHEDULE, timezone="UTC"), assets=RUNTIME_BATCHES
    ),
    start_date=START,
    catchup=False,
    max_active_runs=1,
    auto_register=False,  # found as this module's names, once each, by the file importing it
    dagrun_timeout=timedelta(hours=6),
    doc_md=docs.INGEST,
    tags=["runtime-facts", "ingest", "reachability"],
    default_args=_defaults(3),
    params=ingest_params(),
)
def ingest_dag() -> None:
    """discover → ingest (mapped) → fold → score → publish."""

    @task
    def discover(params: dict[str, Any] | None = None) -> list[list[str]]:
        """Pending batches, in chunks that fit Airflow's max_map_length."""
        from runtime_facts.pipeline.ingest import discover_chunks

        return discover_chunks(home(), options(params, "cas").tenant, max_map_length())

    ingest_group(discover(), source="cas")


@dag(
    dag_id="runtime_facts_airgap_backfill",
    schedule=None,
    start_date=START,
    catchup=False,
    max_active_runs=1,
    auto_register=False,  # found as this module's names, once each, by the file importing it
    dagrun_timeout=timedelta(hours=12),
    doc_md=docs.AIRGAP,
    tags=["runtime-facts", "airgap", "backfill", "reachability"],
    default_args=_defaults(2),
    params={
        "kit_path": Param(
            type="string",
            minLength=1,
            title="Offline kit folder",
            description="Absolute path of the kit folder (the one holding manifest.json).",
        ),
        **ingest_params(),
        "tenant": Param(
            None,
            type=["null", "string"],
            pattern=TENANT_PATTERN,
            description="Refuse the kit unless its manifest is for this tenant.",
        ),
    },
)
def airgap_backfill_dag() -> None:
    """verify_kit → load_kit → ingest (mapped) → fold → score → publish (+ receipts export)."""

    @task
    def verify_kit(params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Verify the whole kit; a kit problem fails the run at once (no retry helps)."""
        from runtime_facts.ops.offline import verify_kit_task

        return verify_kit_task(home(), options(params, "offline-kit"), _kit(params))

    # No outlet: this run ingests what it loads; an asset event would start the ingest DAG too.
    @task
    def load_kit(verified: dict[str, Any], params: dict[str, Any] | None = None) -> list[list[str]]:
        """Load the kit's batches into CAS; returns them in chunks for mapping."""
        from runtime_facts.ops.offline import load_kit_task

        opts = options(params, "offline-kit")
        return load_kit_task(home(), opts, _kit(params), max_map_length())

    verified = verify_kit()
    ingest_group(load_kit(verified), source="offline-kit", export=True, kit=verified)


def _kit(params: dict[str, Any] | None) -> Path:
    return Path(str((params or {})["kit_path"]))


@dag(
    dag_id="reachability_recompute",
    schedule=GRAPHS,
    start_date=START,
    catchup=False,
    max_active_runs=1,
    auto_register=False,  # found as this module's names, once each, by the file importing it
    dagrun_timeout=timedelta(hours=6),
    doc_md=docs.RECOMPUTE,
    tags=["runtime-facts", "reachability", "recompute"],
    default_args=_defaults(2),
    params={
        "tenant": Param(
            None,
            type=["null", "string"],
            pattern=TENANT_PATTERN,
            description="Tenant of the callgraph (manual runs; asset runs read the event).",
        ),
        "callgraph_id": Param(
            None, type=["null", "string"], minLength=1, description="callgraphId (manual runs)."
        ),
        "subject_key": Param(
            None,
            type=["null", "string"],
            minLength=1,
            description="Only this subject (image:..., scan:..., component:...@...).",
        ),
    },
)
def recompute_dag() -> None:
    """targets → recompute (mapped)."""

    @task
    def targets(
        params: dict[str, Any] | None = None, triggering_asset_events: Any = None
    ) -> list[dict[str, Any]]:
        """What to recompute: the Params of a manual run, else the triggering graph events."""
        from airflow.sdk.exceptions import AirflowFailException

        p = params or {}
        if p.get("tenant") or p.get("callgraph_id"):
            if not (p.get("tenant") and p.get("callgraph_id")):
                raise AirflowFailException("give both tenant and callgraph_id")
            return [
                {
                    "tenant": p["tenant"],
                    "callgraph_id": p["callgraph_id"],
                    "subject_key": p.get("subject_key"),
                }
            ]
        events = triggering_asset_events.get(GRAPHS, []) if triggering_asset_events else []
        return graph_targets([dict(e.extra or {}) for e in events])

    @task(outlets=[STATES], map_index_template="{{ target_label }}")
    def recompute(target: dict[str, Any]) -> dict[str, Any]:
        """Recompute the states of one callgraph (and subject)."""
        from airflow.sdk import get_current_context

        from runtime_facts.pipeline.outcomes import utc_now
        from runtime_facts.pipeline.score import recompute as recompute_job

        label = f"{target['tenant']}/{target['callgraph_id']}"
        if target.get("subject_key"):
            label += f"/{target['subject_key']}"
        get_current_context()["target_label"] = label  # type: ignore[typeddict-unknown-key]
        result = recompute_job(
            home(), target["tenant"], target["callgraph_id"], target.get("subject_key"), utc_now()
        )
        return {
            **target,
            "subjects": result.subjects,
            "changed": result.changed,
            "states_version": result.states_version,
        }

    recompute.expand(target=targets())


def graph_targets(extras: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """(tenant, callgraph, subject) targets named by graph asset events, sorted, deduped."""
    found: dict[tuple[str, str, str | None], dict[str, Any]] = {}
    for extra in extras:
        tenant = extra.get("tenant")
        graph = extra.get("callgraphId") or extra.get("callgraph_id")
        subject = extra.get("subjectKey") or extra.get("subject_key")
        if not (isinstance(tenant, str) and isinstance(graph, str)):
            logging.getLogger(__name__).warning("skipping graph event without ids: %s", extra)
            continue
        found[(tenant, graph, subject)] = {
            "tenant": tenant,
            "callgraph_id": graph,
            "subject_key": subject,
        }
    return [found[k] for k in sorted(found, key=lambda k: (k[0], k[1], k[2] or ""))]


@dag(
    dag_id="runtime_facts_retention",
    schedule="@daily",
    start_date=START,
    catchup=False,
    max_active_runs=1,
    auto_register=False,  # found as this module's names, once each, by the file importing it
    dagrun_timeout=timedelta(hours=6),
    doc_md=docs.RETENTION,
    tags=["runtime-facts", "retention", "maintenance"],
    default_args=_defaults(2, timedelta(minutes=5)),
    params={
        "dry_run": Param(
            True,
            type="boolean",
            description="Only list what would be deleted (scheduled runs always list).",
        ),
        "as_of": Param(
            None,
            type=["null", "string"],
            format="date-time",
            description="Reference time (ISO-8601 with offset, not in the future); default: now.",
        ),
    },
)
def retention_dag() -> None:
    """apply_retention >> compact_tables."""

    @task(outlets=[FACTS])
    def apply_retention(params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Apply (or list) retention; the report is this task's XCom."""
        from runtime_facts.ops.retention import retention_task

        return retention_task(home(), params or {})

    @task(outlets=[FACTS])
    def compact_tables() -> dict[str, Any]:
        """Merge small files and checkpoint every table; the per-table report is the XCom."""
        from runtime_facts.ops.compact import compact

        return compact(home()).tables

    apply_retention() >> compact_tables()


runtime_facts_ingest = ingest_dag()
runtime_facts_airgap_backfill = airgap_backfill_dag()
reachability_recompute = recompute_dag()
runtime_facts_retention = retention_dag()
