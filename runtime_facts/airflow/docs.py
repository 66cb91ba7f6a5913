"""The DAGs' docs (`doc_md`): what each DAG does, its Params, and how to trigger it."""

INGEST = """
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

**When it runs**: as soon as a batch is staged (`cas put`, `offline load` and the staging
endpoint emit the asset `runtime_facts.cas.runtime`), and on a cron as a fallback
(`RUNTIME_FACTS__SCHEDULE`, default every 5 minutes, read when the file is parsed).

**Configuration** (environment of the scheduler and workers): `RUNTIME_FACTS_HOME` (the home),
`RUNTIME_FACTS__INGEST__ALLOW_PARTIAL`, `RUNTIME_FACTS__INGEST__SEALED`, and the other
`RUNTIME_FACTS__INGEST__*` limits. **Params** of a manual run: `tenant` (only that tenant's
batches), `allow_partial` (null: the settings' line policy), `sealed` (true: sealed mode for
this run; false/null cannot switch off sealed mode set in the settings).

The ingest, fold, score and publish tasks are the same task group as in
`runtime_facts_airgap_backfill` (`runtime_facts.airflow.tasks.ingest_group`).

Runbook: `docs/runbook.md`, section *Airflow*.
"""

AIRGAP = """
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
4. **fold**, **score** — the same task group as `runtime_facts_ingest` (every pending
   re-score is cleared by either DAG);
5. **publish** — writes this run's sealed receipts to
   `<home>/receipts/exports/airgap-<run_id>.ndjson` (carry it back with
   `receipts/signals-runtime-ingest.log` for audit), refreshes the metrics, and returns the
   run summary as its XCom.

**Params**: `kit_path` (required: absolute path of the kit folder, readable by the workers),
`tenant` (optional: refuse a kit of another tenant), `sealed` (true: require a valid signature
and verified digests; false/null: `RUNTIME_FACTS__INGEST__SEALED` decides, and a run cannot
switch it off), `allow_partial` (null: `RUNTIME_FACTS__INGEST__ALLOW_PARTIAL`; true/false
choose the line policy for this run). The Params mean exactly what they mean in
`runtime_facts_ingest`.

Trigger: `airflow dags trigger runtime_facts_airgap_backfill --conf '{"kit_path": "/mnt/kit"}'`
or *Trigger DAG* in the UI (the form validates the params). Runbook: `docs/runbook.md`.
"""

RECOMPUTE = """
### reachability_recompute — reachability states for a callgraph

Joins the static evidence of a callgraph with the runtime facts of its subjects on the
reachability lattice and rewrites their rows of `reachability_states` (SPEC §5).

**When it runs**

* **On new callgraphs**: scheduled on the asset `runtime_facts.cas.graphs`
  (URI `<home>/cas/reachability/graphs`).
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

RETENTION = """
### runtime_facts_retention — age out facts and CAS objects (SPEC §7)

* Facts whose `last_observed_at` is older than `RUNTIME_FACTS__RETENTION__RETENTION_DAYS`
  (default 30) are deleted from `runtime_facts`.
* CAS objects older than `RUNTIME_FACTS__RETENTION__CAS_RETENTION_DAYS` (default 180) are
  deleted unless a live fact or a held replay manifest (`<home>/replay/held/*.json`) still
  references them, or they were never ingested.
* Every deletion is first recorded in the hash-chained `<home>/receipts/retention.log`;
  Delta tables are vacuumed with their own retention window (7 days), never less.
* Then every table is **compacted**: the recent changes of `runtime_facts` and
  `reachability_states` are merged into their base tables (what a reader sees does not change),
  small files are merged, logs checkpointed, vacuum within the 7-day window. This keeps ingest
  cost flat as the tables grow. It changes no row a reader sees, so it also runs after dry
  runs (`runtime-facts compact` does the same by hand).

**Scheduled runs are dry runs** (`dry_run` defaults to true): each day's XCom
`return_value` lists exactly what a real run would delete. To delete, trigger with
`{"dry_run": false}`; pass the dry run's `now` as `as_of` to delete exactly what it listed:

    airflow dags trigger runtime_facts_retention \
        --conf '{"dry_run": false, "as_of": "2026-11-26T12:00:00+00:00"}'

A failure is retried; a held manifest that is not valid JSON fails the run without deleting
anything (fix or remove the file). Runbook: `docs/runbook.md`, section *Airflow*.
"""
