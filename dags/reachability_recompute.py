"""
### reachability_recompute — reachability states for a callgraph

Joins the static evidence of a callgraph with the runtime facts of its subjects on the
reachability lattice and rewrites their rows of `reachability_states` (SPEC §5).

**When it runs**

* **On new callgraphs**: scheduled on the asset `runtime-facts://cas/reachability/graphs`.
  Whatever stages a graph announces it with an asset event whose `extra` names it, e.g.
  `POST /api/v2/assets/events` with
  `{"asset_id": <id>, "extra": {"tenant": "acme", "callgraphId": "cg-1", "subjectKey": "scan:s-1"}}`
  (`subjectKey` optional: all subjects of the callgraph). Events without `tenant` and
  `callgraphId` are logged and skipped.
* **By hand**: trigger with the Params `tenant`, `callgraph_id` and optionally `subject_key`:
  `airflow dags trigger reachability_recompute --conf '{"tenant": "acme", "callgraph_id": "cg-1"}'`.

One mapped task per (tenant, callgraph, subject) target. A failure (callgraph missing from
CAS, unwritable lake) is retried; recomputing is idempotent. Runbook: `docs/runbook.md`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, Param, dag, get_current_context, task

if TYPE_CHECKING:
    from runtime_facts.home import Home

TENANT_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"

GRAPHS = Asset("runtime-facts://cas/reachability/graphs")
STATES = Asset("runtime-facts://lake/reachability_states")


def _home() -> Home:
    from runtime_facts.config import Settings
    from runtime_facts.home import Home

    return Home(Settings.load())


@dag(
    dag_id="reachability_recompute",
    schedule=GRAPHS,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["runtime-facts", "reachability", "recompute"],
    default_args={
        "owner": "runtime-facts",
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
    },
    params={
        "tenant": Param(
            None,
            type=["null", "string"],
            pattern=TENANT_PATTERN,
            description="Tenant of the callgraph (manual runs; asset runs read the event).",
        ),
        "callgraph_id": Param(
            None,
            type=["null", "string"],
            minLength=1,
            description="callgraphId to recompute (manual runs).",
        ),
        "subject_key": Param(
            None,
            type=["null", "string"],
            minLength=1,
            description="Only this subject (image:..., scan:..., component:...@...).",
        ),
    },
)
def reachability_recompute() -> None:
    """targets → recompute (mapped)."""

    @task
    def targets(
        params: dict[str, Any] | None = None, triggering_asset_events: Any = None
    ) -> list[dict[str, Any]]:
        """What to recompute: the Params of a manual run, else the triggering graph events."""
        import logging

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
        found: dict[tuple[str, str, str | None], dict[str, Any]] = {}
        events = triggering_asset_events.get(GRAPHS, []) if triggering_asset_events else []
        for event in events:
            extra = dict(event.extra or {})
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

    @task(outlets=[STATES], map_index_template="{{ target_label }}")
    def recompute(target: dict[str, Any]) -> dict[str, Any]:
        """Recompute the states of one callgraph (and subject)."""
        from runtime_facts.pipeline.ingest import utc_now
        from runtime_facts.pipeline.score import recompute as recompute_job

        label = f"{target['tenant']}/{target['callgraph_id']}"
        if target.get("subject_key"):
            label += f"/{target['subject_key']}"
        get_current_context()["target_label"] = label  # type: ignore[typeddict-unknown-key]
        result = recompute_job(
            _home(), target["tenant"], target["callgraph_id"], target.get("subject_key"), utc_now()
        )
        return {
            **target,
            "subjects": result.subjects,
            "changed": result.changed,
            "states_version": result.states_version,
        }

    recompute.expand(target=targets())


reachability_recompute()
