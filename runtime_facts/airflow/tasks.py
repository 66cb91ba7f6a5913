"""The ingest task group, written once: the scheduled ingest and the air-gap backfill use it.

    chunks ─► ingest_batch (mapped) ─► fold ─► score ─► publish

Each task body is one call into `runtime_facts.pipeline`. Params are resolved by one
function, so a Param means the same in every DAG: `tenant` (only that tenant's batches),
`allow_partial` (null: the settings' line policy), `sealed` (true turns sealed mode on for the
run; false or null leave the settings in force: a Param can only tighten).
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import Param, XComArg, get_current_context, task, task_group

from runtime_facts.airflow.assets import (
    BATCHES,
    FACTS,
    RECEIPTS,
    REJECTIONS,
    STATES,
    TENANT_PATTERN,
)
from runtime_facts.airflow.pools import COMMIT_POOL

if TYPE_CHECKING:
    from runtime_facts.home import Home
    from runtime_facts.pipeline.outcomes import IngestOptions

TASK_TIMEOUT = timedelta(hours=1)


def ingest_params() -> dict[str, Param]:
    """The Params of an ingest run, fresh for each DAG (Airflow merges a run's conf into its
    Param objects in place, so DAGs must not share them)."""
    return {
        "tenant": Param(
            None,
            type=["null", "string"],
            pattern=TENANT_PATTERN,
            description="Only ingest this tenant's batches (default: every tenant).",
        ),
        "allow_partial": Param(
            None,
            type=["null", "boolean"],
            description="Quarantine bad lines instead of rejecting batches (null: the settings).",
        ),
        "sealed": Param(
            None,
            type=["null", "boolean"],
            description="true: sealed mode for this run. false/null: the settings decide (a run "
            "cannot switch sealed mode off).",
        ),
    }


def home() -> Home:
    """The home from the settings, built inside the task (never at parse time)."""
    from runtime_facts.config import Settings
    from runtime_facts.home import Home

    return Home(Settings.load())


def options(params: dict[str, Any] | None, source: str) -> IngestOptions:
    """The run's ingest options from its Params (the one place they are interpreted)."""
    from runtime_facts.pipeline.outcomes import IngestOptions

    p = params or {}
    return IngestOptions(
        source=source,
        tenant=p.get("tenant"),
        allow_partial=p.get("allow_partial"),
        sealed=True if p.get("sealed") else None,
    )


def max_map_length() -> int:
    """Airflow's `[core] max_map_length` (a mapped list may not be longer)."""
    from airflow.sdk import conf

    return conf.getint("core", "max_map_length", fallback=1024)


def ingest_group(
    chunks: XComArg, *, source: str, export: bool = False, kit: XComArg | None = None
) -> XComArg:
    """ingest_batch (mapped over `chunks`) → fold → score → publish; returns publish's XCom.

    Args:
        chunks: the batches to ingest, in chunks (one mapped task each).
        source: `cas` or `offline-kit`, recorded in the receipts.
        export: also write this run's receipts to `receipts/exports/` (air gap).
        kit: the verified kit's identity, added to the run summary.
    """

    @task_group(group_id="ingest", prefix_group_id=False)
    def ingest() -> XComArg:
        @task(
            outlets=[BATCHES, RECEIPTS, REJECTIONS],
            max_active_tis_per_dagrun=4,
            map_index_template="{{ batch_label }}",
            pool=COMMIT_POOL,
            execution_timeout=TASK_TIMEOUT,
        )
        def ingest_batch(
            shas: list[str], params: dict[str, Any] | None = None
        ) -> list[dict[str, Any]]:
            """Ingest one chunk of batches (usually one); rejections are outcomes, not failures."""
            from runtime_facts.pipeline.ingest import ingest_chunk

            label = shas[0][:12] if len(shas) == 1 else f"{shas[0][:12]} +{len(shas) - 1}"
            get_current_context()["batch_label"] = label  # type: ignore[typeddict-unknown-key]
            opts = options(params, source)
            return ingest_chunk(
                home(),
                shas,
                source=opts.source,
                tenant=opts.tenant,
                allow_partial=opts.allow_partial,
                sealed=opts.sealed,
            )

        @task(
            outlets=[FACTS],
            trigger_rule="none_failed",
            pool=COMMIT_POOL,
            execution_timeout=TASK_TIMEOUT,
        )
        def fold() -> dict[str, Any]:
            """Fold committed batch rows into runtime_facts (every tenant with new rows)."""
            from runtime_facts.pipeline.fold import fold_pending
            from runtime_facts.pipeline.outcomes import utc_now

            result = fold_pending(home(), utc_now())
            return {
                "facts_version": result.facts_version,
                "folded_batches": result.folded_batches,
                "folded_rows": result.folded_rows,
                "subjects": [list(s) for s in result.subjects],
            }

        @task(outlets=[STATES], pool=COMMIT_POOL, execution_timeout=TASK_TIMEOUT)
        def score(folded: dict[str, Any]) -> dict[str, Any]:
            """Re-score the subjects the fold touched, and any a crash left unscored."""
            from runtime_facts.pipeline.outcomes import utc_now
            from runtime_facts.pipeline.score import recompute_touched

            subjects = [(t, c, s) for t, c, s in folded["subjects"]]
            result = recompute_touched(home(), subjects, utc_now())
            return {
                "subjects": result.subjects,
                "changed": len(result.changed),
                "events": len(result.events),
                "states_version": result.states_version,
            }

        @task(trigger_rule="none_failed", execution_timeout=TASK_TIMEOUT)
        def publish(
            outcomes: list[list[dict[str, Any]]],
            folded: dict[str, Any],
            scored: dict[str, Any],
            verified: dict[str, Any] | None = None,
            run_id: str | None = None,
        ) -> dict[str, Any]:
            """Metrics textfile, (air gap) this run's receipts export, and the run summary."""
            from runtime_facts.pipeline.publish import export_receipts, publish_run

            the_home = home()
            # Index the lazy XCom sequence: iterating it probes one past the end and logs.
            chunks = outcomes or []
            flat = [o for i in range(len(chunks)) for o in chunks[i] or []]
            summary = publish_run(the_home, flat)
            if export:
                summary["export"] = export_receipts(the_home, flat, f"airgap-{run_id or 'run'}")
            if verified is not None:
                summary["kit"] = verified
            summary["fold"] = {k: v for k, v in folded.items() if k != "subjects"}
            summary["recompute"] = scored
            return summary

        outcomes = ingest_batch.expand(shas=chunks)
        folded = fold()
        outcomes >> folded
        return publish(outcomes, folded, score(folded), kit)

    return ingest()
