"""`make demo`: stage the bundled fixtures in a fresh demo home, ingest, show what landed."""

from __future__ import annotations

import gzip
import os
import shutil
import sys
from pathlib import Path

import duckdb
import orjson
import polars as pl
from rich.console import Console
from rich.table import Table

from runtime_facts.config import Settings
from runtime_facts.generate import GeneratorSpec, generate_batches
from runtime_facts.home import Home
from runtime_facts.subject import SubjectContext

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures" / "batches"
EXAMPLE_SQL = """
SELECT subject_key, symbol_id, sum(hit_count)::BIGINT AS hits, max(batch_count) AS batches
FROM runtime_facts
WHERE tenant = 'acme'
GROUP BY ALL
ORDER BY hits DESC, symbol_id
LIMIT 5
"""


def stage_fixtures(home: Home) -> list[str]:
    """Stage every fixture batch listed in fixtures/batches/contexts.json, plus generated ones."""
    uris = []
    contexts = orjson.loads((FIXTURES / "contexts.json").read_bytes())
    for rel, doc in sorted(contexts.items()):
        data = gzip.compress((FIXTURES / rel).read_bytes(), mtime=0)
        uris.append(home.cas.put("runtime", data, SubjectContext.from_json(doc)).uri)
    spec = GeneratorSpec(
        events=50_000, symbols=5_000, code_ids=20, seed=2026, events_per_chunk=10_000
    )
    ctx = SubjectContext("acme", "cg-storefront-5.0", image_digest="sha256:" + "5f" * 32)
    for chunk in generate_batches(spec):
        uris.append(home.cas.put("runtime", chunk, ctx).uri)
    return uris


def run_ingest(home: Home) -> dict[str, object]:
    """Run the ingest: through the real Airflow DAG when available, else the job directly."""
    try:
        from runtime_facts.demo_airflow import run_ingest_dag
    except ImportError:
        from runtime_facts.pipeline.ingest import ingest

        summary = ingest(home)
        return {"runner": "job", **summary.to_dict()}
    airflow_home = os.environ.get("AIRFLOW_HOME", str(REPO / "airflow-home"))
    return {"runner": "airflow", **run_ingest_dag(str(home.root), airflow_home)}


def main() -> None:
    """Entry point of `make demo`."""
    console = Console()
    root = Path(os.environ.get("RUNTIME_FACTS_HOME", REPO / "var")) / "demo"
    shutil.rmtree(root, ignore_errors=True)
    home = Home(Settings.load(str(root)))
    console.rule("[bold]1. stage fixture batches in CAS")
    uris = stage_fixtures(home)
    console.print(f"staged {len(uris)} batches, e.g. {uris[0]}", highlight=False)
    console.rule("[bold]2. ingest")
    summary = run_ingest(home)
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
    console.print(
        f"\nTry: RUNTIME_FACTS_HOME={root} .venv/bin/runtime-facts facts list --tenant acme "
        f"--subject image:sha256:9f2c1e0a7b3d4c5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6",
        highlight=False,
        soft_wrap=True,
    )
    if summary.get("rejected") != 1:
        sys.exit("demo: expected exactly one rejected fixture batch")


if __name__ == "__main__":
    main()
