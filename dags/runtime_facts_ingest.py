"""
### runtime_facts_ingest — scheduled ingestion of staged runtime batches

Every run ingests what probes staged in CAS since the last run:

1. **discover** — staged batches (`cas/reachability/runtime/`) with no final receipt yet,
   split into at most `[core] max_map_length` chunks (one batch per chunk unless more are
   pending, so a backlog drains in one run);
2. **ingest_batch** (mapped, one task per chunk) — verify, validate, dedupe and commit each
   batch, writing its receipt. A **rejected batch does not fail the run**: it gets a receipt
   with its reason codes and is counted in the summary and the metrics;
3. **fold** — moves every committed batch row into the cumulative `runtime_facts` table;
4. **recompute** — reachability states of the subjects the fold touched;
5. **publish** — the run summary (this task's XCom `return_value`) and the Prometheus
   textfile `<home>/metrics/runtime_facts.prom`.

A failed task is an **infrastructure** problem (CAS miss, unwritable lake, full disk) and is
retried; re-running is always safe, since a batch is identified by its sha256 and counts once.

**Configuration** (environment of the scheduler and workers): `RUNTIME_FACTS_HOME` (the home),
`RUNTIME_FACTS__SCHEDULE` (cron, default every 5 minutes, read when the file is parsed),
`RUNTIME_FACTS__INGEST__ALLOW_PARTIAL`, `RUNTIME_FACTS__INGEST__SEALED`, and the other
`RUNTIME_FACTS__INGEST__*` limits. **Params** of a manual run: `tenant` (only that tenant's
batches), `allow_partial` and `sealed` (override the settings for this run).

Runbook: `docs/runbook.md`, section *Airflow*.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, Param, dag, get_current_context, task

if TYPE_CHECKING:
    from runtime_facts.home import Home

SCHEDULE = os.environ.get("RUNTIME_FACTS__SCHEDULE", "*/5 * * * *")
TENANT_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"

BATCHES = Asset("runtime-facts://lake/runtime_fact_batches")
RECEIPTS = Asset("runtime-facts://lake/ingest_receipts")
REJECTIONS = Asset("runtime-facts://lake/rejections")
FACTS = Asset("runtime-facts://lake/runtime_facts")
STATES = Asset("runtime-facts://lake/reachability_states")


def _home() -> Home:
    from runtime_facts.config import Settings
    from runtime_facts.home import Home

    return Home(Settings.load())


@dag(
    dag_id="runtime_facts_ingest",
    schedule=SCHEDULE,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["runtime-facts", "ingest", "reachability"],
    default_args={
        "owner": "runtime-facts",
        "retries": 3,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
    },
    params={
        "tenant": Param(
            None,
            type=["null", "string"],
            pattern=TENANT_PATTERN,
            description="Only ingest this tenant's batches (default: every tenant).",
        ),
        "allow_partial": Param(
            None,
            type=["null", "boolean"],
            description="Quarantine bad lines instead of rejecting batches (default: settings).",
        ),
        "sealed": Param(
            None,
            type=["null", "boolean"],
            description="Sealed mode for this run (default: settings).",
        ),
    },
)
def runtime_facts_ingest() -> None:
    """Discover → ingest (mapped) → fold → recompute → publish."""

    @task
    def discover(params: dict[str, Any] | None = None) -> list[list[str]]:
        """Pending batches, in chunks that fit Airflow's max_map_length."""
        from airflow.sdk import conf

        from runtime_facts.pipeline.batch import plan_chunks
        from runtime_facts.pipeline.ingest import discover_pending

        tenant = (params or {}).get("tenant")
        pending = discover_pending(_home(), tenant)
        return plan_chunks(pending, conf.getint("core", "max_map_length", fallback=1024))

    @task(
        outlets=[BATCHES, RECEIPTS, REJECTIONS],
        max_active_tis_per_dagrun=4,
        map_index_template="{{ batch_label }}",
    )
    def ingest_batch(shas: list[str], params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Ingest one chunk of batches (usually one); rejections are outcomes, not failures."""
        from runtime_facts.pipeline.batch import ingest_chunk

        label = shas[0][:12] if len(shas) == 1 else f"{shas[0][:12]} +{len(shas) - 1}"
        get_current_context()["batch_label"] = label  # type: ignore[typeddict-unknown-key]
        p = params or {}
        return ingest_chunk(
            _home(),
            shas,
            source="cas",
            tenant=p.get("tenant"),
            allow_partial=p.get("allow_partial"),
            sealed=p.get("sealed"),
        )

    @task(outlets=[FACTS], trigger_rule="none_failed")
    def fold() -> dict[str, Any]:
        """Fold committed batch rows into runtime_facts (also after a run with nothing new)."""
        from runtime_facts.pipeline.commit import fold_pending
        from runtime_facts.pipeline.ingest import utc_now

        result = fold_pending(_home(), utc_now())
        return {
            "facts_version": result.facts_version,
            "folded_batches": result.folded_batches,
            "folded_rows": result.folded_rows,
            "subjects": [list(s) for s in result.subjects],
        }

    @task(outlets=[STATES])
    def recompute(folded: dict[str, Any]) -> dict[str, Any]:
        """Recompute states of the subjects the fold touched (and any a crash left unscored)."""
        from runtime_facts.pipeline.ingest import utc_now
        from runtime_facts.pipeline.score import recompute_touched

        subjects = [(t, c, s) for t, c, s in folded["subjects"]]
        result = recompute_touched(_home(), subjects, utc_now())
        return {
            "subjects": result.subjects,
            "changed": len(result.changed),
            "events": len(result.events),
            "states_version": result.states_version,
        }

    @task(trigger_rule="none_failed")
    def publish(
        outcomes: list[list[dict[str, Any]]], folded: dict[str, Any], recomputed: dict[str, Any]
    ) -> dict[str, Any]:
        """Write the metrics textfile and return the run summary."""
        from runtime_facts.pipeline.publish import publish_run

        # Index the lazy XCom sequence: iterating it probes one past the end and logs an error.
        chunks = outcomes or []
        flat = [o for i in range(len(chunks)) for o in chunks[i] or []]
        summary = publish_run(_home(), flat)
        summary["fold"] = {k: v for k, v in folded.items() if k != "subjects"}
        summary["recompute"] = recomputed
        return summary

    outcomes = ingest_batch.expand(shas=discover())
    folded = fold()
    outcomes >> folded
    publish(outcomes, folded, recompute(folded))


runtime_facts_ingest()
