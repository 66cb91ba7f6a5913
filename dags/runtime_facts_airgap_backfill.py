"""
### runtime_facts_airgap_backfill — ingest one offline kit, on demand

For air-gapped sites: an operator copies an offline kit (`manifest.json`, optional
`manifest.json.sig`, `reachability/runtime/<scan-id>/<timestamp>.ndjson.gz`) next to the
scheduler and triggers this DAG with its path. The run

1. **verify_kit** — checks the whole kit before anything is touched: every file's sha256 and
   size against the manifest, no missing or extra file, no symlink, no path escaping the kit,
   the tenant, and in sealed mode the Ed25519 signature. A bad or missing kit **fails the run
   without retries**; the task log names the reason code and the file;
2. **load_kit** — copies the kit's batches into CAS with their subject context;
3. **ingest_batch** (mapped) — ingests exactly those batches (source `offline-kit`); a batch
   already ingested is receipted `duplicate`, a rejected batch is receipted and counted but
   does not fail the run;
4. **fold**, **recompute** — as in `runtime_facts_ingest`;
5. **export_receipts** — writes this run's sealed receipts to
   `<home>/receipts/exports/<run_id>.ndjson` (carry it back with
   `receipts/signals-runtime-ingest.log` for audit), refreshes the metrics, and returns the
   run summary as its XCom.

**Params**: `kit_path` (required: absolute path of the kit folder, readable by the workers),
`tenant` (optional: refuse a kit of another tenant), `sealed` (require a valid signature and
verified digests), `allow_partial` (quarantine bad lines instead of rejecting whole batches).
`sealed` and `allow_partial` left false defer to `RUNTIME_FACTS__INGEST__SEALED` /
`RUNTIME_FACTS__INGEST__ALLOW_PARTIAL`.

Trigger: `airflow dags trigger runtime_facts_airgap_backfill --conf '{"kit_path": "/mnt/kit"}'`
or *Trigger DAG* in the UI (the form validates the params). Runbook: `docs/runbook.md`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, Param, dag, get_current_context, task

if TYPE_CHECKING:
    from runtime_facts.home import Home

TENANT_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"

RUNTIME_CAS = Asset("runtime-facts://cas/reachability/runtime")
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
    dag_id="runtime_facts_airgap_backfill",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["runtime-facts", "airgap", "backfill", "reachability"],
    default_args={
        "owner": "runtime-facts",
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
    },
    params={
        "kit_path": Param(
            type="string",
            minLength=1,
            title="Offline kit folder",
            description="Absolute path of the kit folder (the one holding manifest.json).",
        ),
        "tenant": Param(
            None,
            type=["null", "string"],
            pattern=TENANT_PATTERN,
            description="Refuse the kit unless its manifest is for this tenant.",
        ),
        "sealed": Param(
            False,
            type="boolean",
            description="Sealed mode: require a valid manifest signature and verified digests.",
        ),
        "allow_partial": Param(
            False,
            type="boolean",
            description="Quarantine bad lines and ingest the rest, instead of rejecting batches.",
        ),
    },
)
def runtime_facts_airgap_backfill() -> None:
    """verify_kit → load_kit → ingest (mapped) → fold → recompute → export_receipts."""

    @task
    def verify_kit(params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Verify the whole kit; a kit problem fails the run at once (no retry helps)."""
        from airflow.sdk.exceptions import AirflowFailException

        from runtime_facts.errors import NotFoundError, RejectedError, UsageError
        from runtime_facts.ops import offline
        from runtime_facts.pipeline.publish import to_jsonable

        p = params or {}
        try:
            report = offline.verify_kit(
                _home(), Path(p["kit_path"]), tenant=p.get("tenant"), sealed=bool(p.get("sealed"))
            )
        except (NotFoundError, RejectedError, UsageError) as exc:
            raise AirflowFailException(str(exc)) from exc
        doc: dict[str, Any] = to_jsonable(report)
        log = logging.getLogger("airflow.task")
        for entry in doc.get("files") or []:
            log.info("verified %s sha256=%s", entry.get("path"), entry.get("sha256"))
        # The per-file listing stays in the task log; XCom carries the kit's identity only.
        return {
            **doc,
            "files": len(doc.get("files") or []),
            "receipts": len(doc.get("receipts") or []),
        }

    @task(outlets=[RUNTIME_CAS])
    def load_kit(verified: dict[str, Any], params: dict[str, Any] | None = None) -> list[list[str]]:
        """Load the kit's batches into CAS; returns them in chunks for mapping."""
        from airflow.sdk import conf
        from airflow.sdk.exceptions import AirflowFailException

        from runtime_facts.errors import NotFoundError, RejectedError, UsageError
        from runtime_facts.ops import offline
        from runtime_facts.pipeline.batch import plan_chunks

        p = params or {}
        try:
            shas = offline.load_kit(
                _home(), Path(p["kit_path"]), tenant=p.get("tenant"), sealed=bool(p.get("sealed"))
            )
        except (NotFoundError, RejectedError, UsageError) as exc:
            raise AirflowFailException(str(exc)) from exc
        return plan_chunks(sorted(set(shas)), conf.getint("core", "max_map_length", fallback=1024))

    @task(
        outlets=[BATCHES, RECEIPTS, REJECTIONS],
        max_active_tis_per_dagrun=4,
        map_index_template="{{ batch_label }}",
    )
    def ingest_batch(shas: list[str], params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Ingest one chunk of the kit's batches (usually one)."""
        from runtime_facts.pipeline.batch import ingest_chunk

        label = shas[0][:12] if len(shas) == 1 else f"{shas[0][:12]} +{len(shas) - 1}"
        get_current_context()["batch_label"] = label  # type: ignore[typeddict-unknown-key]
        p = params or {}
        return ingest_chunk(
            _home(),
            shas,
            source="offline-kit",
            tenant=p.get("tenant"),
            # A Param left false defers to the settings; true forces the mode on.
            allow_partial=True if p.get("allow_partial") else None,
            sealed=True if p.get("sealed") else None,
        )

    @task(outlets=[FACTS], trigger_rule="none_failed")
    def fold() -> dict[str, Any]:
        """Fold the committed batch rows into runtime_facts."""
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
        """Recompute reachability states of the subjects the fold touched."""
        from runtime_facts.pipeline.ingest import utc_now
        from runtime_facts.pipeline.score import recompute_subjects

        subjects = [(t, c, s) for t, c, s in folded["subjects"]]
        result = recompute_subjects(_home(), subjects, utc_now())
        return {
            "subjects": result.subjects,
            "changed": len(result.changed),
            "events": len(result.events),
            "states_version": result.states_version,
        }

    @task(trigger_rule="none_failed")
    def export_receipts(
        outcomes: list[list[dict[str, Any]]],
        verified: dict[str, Any],
        folded: dict[str, Any],
        recomputed: dict[str, Any],
        run_id: str | None = None,
    ) -> dict[str, Any]:
        """Export this run's receipts, refresh the metrics, return the run summary."""
        from runtime_facts.pipeline import publish

        home = _home()
        chunks = outcomes or []
        flat = [o for i in range(len(chunks)) for o in chunks[i] or []]
        summary = publish.publish_run(home, flat)
        summary["export"] = publish.export_receipts(home, flat, f"airgap-{run_id or 'run'}")
        summary["kit"] = verified
        summary["fold"] = {k: v for k, v in folded.items() if k != "subjects"}
        summary["recompute"] = recomputed
        return summary

    verified = verify_kit()
    outcomes = ingest_batch.expand(shas=load_kit(verified))
    folded = fold()
    outcomes >> folded
    export_receipts(outcomes, verified, folded, recompute(folded))


runtime_facts_airgap_backfill()
