"""`make demo`: stage the bundled fixtures, ingest them with the real DAG, show what landed.

The home is `RUNTIME_FACTS_HOME` (`make` sets `<repo>/var`; default `./var` of the current
folder), the one `make airflow`'s UI and the CLI use, and Airflow's home is `AIRFLOW_HOME`
(default `<repo>/airflow-home`), so the demo's DAG run shows up in the UI. Nothing is deleted:
run again, it finds nothing new and changes nothing; `make clean` starts afresh.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import sys
from pathlib import Path
from typing import Any

import duckdb
import orjson
import polars as pl
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from runtime_facts.airflow_home import DEFAULT_AIRFLOW_HOME, data_home
from runtime_facts.config import Settings
from runtime_facts.generate import GeneratorSpec, generate_batches
from runtime_facts.home import Home
from runtime_facts.subject import SubjectContext

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures" / "batches"
# The one fixture batch the demo expects to be rejected, and why (strict policy, SPEC 1).
INTENDED_REJECT = "invalid/mixed-bad-lines.ndjson"
EXAMPLE_SQL = """
SELECT subject_key, symbol_id, sum(hit_count)::BIGINT AS hits, max(batch_count) AS batches
FROM runtime_facts
WHERE tenant = 'acme'
GROUP BY ALL
ORDER BY hits DESC, symbol_id
LIMIT 5
"""


def stage_fixtures(home: Home, generated_events: int = 50_000) -> dict[str, str]:
    """Stage every fixture batch of fixtures/batches/contexts.json, plus generated ones.

    Args:
        home: where to stage.
        generated_events: events of the generated batches (10,000 per batch) added to them.

    Returns:
        CAS URI → where the batch came from (a fixture path, or `generated`).
    """
    uris = {}
    contexts = orjson.loads((FIXTURES / "contexts.json").read_bytes())
    for rel, doc in sorted(contexts.items()):
        data = gzip.compress((FIXTURES / rel).read_bytes(), mtime=0)
        uris[home.cas.put("runtime", data, SubjectContext.from_json(doc)).uri] = rel
    if generated_events <= 0:
        return uris
    spec = GeneratorSpec(
        events=generated_events, symbols=5_000, code_ids=20, seed=2026, events_per_chunk=10_000
    )
    ctx = SubjectContext("acme", "cg-storefront-5.0", image_digest="sha256:" + "5f" * 32)
    for chunk in generate_batches(spec):
        uris[home.cas.put("runtime", chunk, ctx).uri] = "generated"
    return uris


def run_ingest(home: Home, console: Console) -> dict[str, object]:
    """Run the ingest: through the real Airflow DAG when available, else the job directly."""
    try:
        from runtime_facts.demo_airflow import DAG_ID, run_ingest_dag
    except ImportError:
        from runtime_facts.pipeline.ingest import ingest

        summary = ingest(home)
        return {"runner": "job", **summary.to_dict()}
    airflow_home = os.environ.get("AIRFLOW_HOME") or str(DEFAULT_AIRFLOW_HOME)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task(f"DAG {DAG_ID}: parsing, preparing the metadata DB", total=None)
        done: list[str] = []

        def on_task(label: str, state: str) -> None:
            if state != "running":
                done.append(label)
                if state == "failed":
                    progress.console.print(f"[red]task {label} failed")
            text = f"DAG {DAG_ID}: {len(done)} task(s) done; {label} {state}"
            progress.update(bar, description=text)

        result = run_ingest_dag(str(home.root), airflow_home, on_task)
        progress.update(
            bar, description=f"DAG {DAG_ID}: {len(done)} task(s) done, run {result['state']}"
        )
    return {"runner": "airflow", **result}


def rejected_receipts(home: Home) -> list[dict[str, Any]]:
    """Every receipt of the home with status `rejected`."""
    return [r for r in home.receipts if r.get("status") == "rejected"]


def explain_rejection(console: Console, home: Home, staged: dict[str, str]) -> bool:
    """Say that the one rejected batch is the intended fixture; False if anything else is."""
    rejected = rejected_receipts(home)
    origins = [staged.get(str(r.get("cas_uri")), "another batch") for r in rejected]
    if origins != [INTENDED_REJECT]:
        console.print(
            f"[red]expected exactly one rejected batch ({INTENDED_REJECT}), got {origins}"
        )
        return False
    codes = ", ".join(str(c) for c in rejected[0].get("reason_codes") or [])
    console.print(
        f"1 batch rejected, as intended: fixtures/batches/{INTENDED_REJECT} carries bad lines "
        f"on purpose (reason codes: {codes}). The default policy is strict, so the whole batch "
        "is rejected: its receipt lists each bad line and reason, the `rejections` table holds "
        "them, nothing of it enters the facts (docs/runbook.md, Error codes).",
        highlight=False,
    )
    return True


def main() -> None:
    """Entry point of `make demo`."""
    console = Console()
    root = data_home(os.environ.get("RUNTIME_FACTS_HOME"))
    home = Home(Settings.load(root))
    airflow_home = Path(os.environ.get("AIRFLOW_HOME") or DEFAULT_AIRFLOW_HOME).resolve()
    console.print(
        f"runtime-facts home: {root} (RUNTIME_FACTS_HOME; default ./var)", highlight=False
    )
    console.print(f"Airflow home: {airflow_home} (`make airflow` shows this run)", highlight=False)
    with contextlib.suppress(ImportError):  # without Airflow, the demo runs the job directly
        from runtime_facts.demo_airflow import configure

        configure(str(home.root), str(airflow_home))  # before staging starts native threads
    again = home.receipts.count() > 0
    console.rule("[bold]1. stage fixture batches in CAS")
    staged = stage_fixtures(home)
    console.print(
        f"staged {len(staged)} batches, e.g. {next(iter(staged))}", highlight=False, soft_wrap=True
    )
    console.rule("[bold]2. ingest")
    summary = run_ingest(home, console)
    if again:
        console.print(
            "this home was ingested into before: its batches are already in (or rejected), "
            "so this run finds nothing new and changes nothing (`make clean` starts afresh)",
            highlight=False,
        )
    keys = (
        "runner",
        "batches",
        "accepted",
        "rejected",
        "duplicate",
        "events",
        "keys",
        "rejected_lines",
    )
    console.print({k: summary.get(k) for k in keys if k in summary})
    console.rule("[bold]3. what landed")
    table = Table("table", "path", "version", "rows")
    for name in (
        "runtime_facts",
        "runtime_fact_batches",
        "reachability_states",
        "ingest_receipts",
        "rejections",
    ):
        rows = home.lake.read(name).height
        table.add_row(name, home.lake.path(name), str(home.lake.version(name)), str(rows))
    console.print(table)
    console.print(f"receipts log: {home.receipts.path} ({home.receipts.count()} receipts)")
    console.rule("[bold]4. an example query (DuckDB over the Delta tables, offline)")
    con = duckdb.connect()
    facts = home.lake.read("runtime_facts").to_arrow()
    con.register("runtime_facts", facts)
    console.print(EXAMPLE_SQL.strip(), style="dim", highlight=False)
    with pl.Config(tbl_width_chars=160, fmt_str_lengths=70, tbl_hide_dataframe_shape=True):
        print(con.sql(EXAMPLE_SQL).pl())  # noqa: T201
    console.rule("[bold]5. the rejected batch")
    intended = explain_rejection(console, home, staged)
    console.print(
        f"\nTry: RUNTIME_FACTS_HOME={root} .venv/bin/runtime-facts facts list --tenant acme "
        f"--subject image:sha256:9f2c1e0a7b3d4c5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6",
        highlight=False,
        soft_wrap=True,
    )
    if not intended:
        sys.exit(3)


if __name__ == "__main__":
    main()
