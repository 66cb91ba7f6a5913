"""
### runtime_facts_retention — age out facts and CAS objects (SPEC §7)

* Facts whose `last_observed_at` is older than `RUNTIME_FACTS__RETENTION__RETENTION_DAYS`
  (default 30) are deleted from `runtime_facts`.
* CAS objects older than `RUNTIME_FACTS__RETENTION__CAS_RETENTION_DAYS` (default 180) are
  deleted unless a live fact or a held replay manifest (`<home>/replay/held/*.json`) still
  references them, or they were never ingested.
* Every deletion is first recorded in the hash-chained `<home>/receipts/retention.log`;
  Delta tables are vacuumed with their own retention window (7 days), never less.
* Then every table is **compacted** (small files merged, logs checkpointed, vacuum within the
  7-day window): this keeps ingest cost flat as the tables grow. It changes no row, so it also
  runs after dry runs (`runtime-facts compact` does the same by hand).

**Scheduled runs are dry runs** (`dry_run` defaults to true): each day's XCom
`return_value` lists exactly what a real run would delete. To delete, trigger with
`{"dry_run": false}`; pass the dry run's `now` as `as_of` to delete exactly what it listed:

    airflow dags trigger runtime_facts_retention \\
        --conf '{"dry_run": false, "as_of": "2026-11-26T12:00:00+00:00"}'

A failure is retried; a held manifest that is not valid JSON fails the run without deleting
anything (fix or remove the file). Runbook: `docs/runbook.md`, section *Airflow*.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import Asset, Param, dag, task

FACTS = Asset("runtime-facts://lake/runtime_facts")


@dag(
    dag_id="runtime_facts_retention",
    schedule="@daily",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["runtime-facts", "retention", "maintenance"],
    default_args={
        "owner": "runtime-facts",
        "retries": 2,
        "retry_delay": timedelta(minutes=5),
    },
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
def runtime_facts_retention() -> None:
    """apply_retention >> compact_tables."""

    @task(outlets=[FACTS])
    def apply_retention(params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Apply (or list) retention; the report is this task's XCom."""
        from airflow.sdk.exceptions import AirflowFailException

        from runtime_facts.config import Settings
        from runtime_facts.home import Home
        from runtime_facts.ops import retention
        from runtime_facts.pipeline.ingest import utc_now

        p = params or {}
        now = utc_now()
        if p.get("as_of"):
            try:
                as_of = datetime.fromisoformat(str(p["as_of"]).replace("Z", "+00:00"))
            except ValueError as exc:
                raise AirflowFailException(f"as_of is not ISO-8601: {p['as_of']!r}") from exc
            if as_of.tzinfo is None or as_of > now:
                raise AirflowFailException("as_of needs a UTC offset and must not be in the future")
            now = as_of
        report = retention.apply_retention(
            Home(Settings.load()), dry_run=p.get("dry_run", True) is not False, now=now
        )
        return report.to_dict()

    @task(outlets=[FACTS])
    def compact_tables() -> dict[str, Any]:
        """Merge small files and checkpoint every table; the per-table report is the XCom."""
        from runtime_facts.config import Settings
        from runtime_facts.home import Home
        from runtime_facts.ops.compact import compact

        return compact(Home(Settings.load())).tables

    apply_retention() >> compact_tables()


runtime_facts_retention()
