"""`runtime_facts` read with deltalake equals a hand-written DuckDB query over the raw files."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import orjson
import polars as pl
from deltalake import DeltaTable
from polars.testing import assert_frame_equal

from runtime_facts.generate import GeneratorSpec, generate_batches
from runtime_facts.home import Home
from runtime_facts.ops.compact import compact
from runtime_facts.pipeline.ingest import ingest
from runtime_facts.subject import SubjectContext

NOW = datetime(2026, 11, 26, tzinfo=UTC)
QUERY = """
SELECT t.tenant, t.callgraph_id, t.subject_key,
       symbolId AS symbol_id, codeId AS code_id, loaderBase AS loader_base,
       sum(hitCount)::BIGINT AS hit_count, count(*) AS event_count,
       count(DISTINCT filename) AS batch_count,
       min(coalesce(observedAt, "timestamp")::TIMESTAMPTZ) AS first_observed_at,
       max(coalesce(observedAt, "timestamp")::TIMESTAMPTZ) AS last_observed_at
FROM read_ndjson(?, filename = true, columns = {
    symbolId: 'VARCHAR', hitCount: 'BIGINT', codeId: 'VARCHAR', loaderBase: 'VARCHAR',
    observedAt: 'VARCHAR', "timestamp": 'VARCHAR'})
JOIN contexts t ON t.file = filename
GROUP BY ALL
ORDER BY ALL NULLS FIRST
"""


def _write(folder: Path, name: str, data: bytes) -> str:
    path = folder / name
    path.write_bytes(data)
    return str(path)


def test_facts_equal_an_independent_duckdb_query(
    home: Home, tmp_path: Path, fixtures_dir: Path
) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    contexts = orjson.loads((fixtures_dir / "batches" / "contexts.json").read_bytes())
    rows = []
    for rel, doc in contexts.items():
        if not rel.startswith("valid/"):
            continue
        data = gzip.compress((fixtures_dir / "batches" / rel).read_bytes(), mtime=0)
        ctx = SubjectContext.from_json(doc)
        home.cas.put("runtime", data, ctx)
        rows.append((_write(raw, Path(rel).name + ".gz", data), ctx))
    spec = GeneratorSpec(events=6000, symbols=500, code_ids=7, seed=11, events_per_chunk=1500)
    for i, chunk in enumerate(generate_batches(spec)):
        ctx = SubjectContext("initech", "cg-gen", component="pkg/core", version=f"1.{i % 2}")
        home.cas.put("runtime", chunk, ctx)
        rows.append((_write(raw, f"gen-{i}.ndjson.gz", chunk), ctx))
        if i == 1:  # two folds: keys folded twice have two recent rows, the later one wins
            assert ingest(home, clock=lambda: NOW).rejected == 0

    summary = ingest(home, clock=lambda: NOW)
    assert summary.rejected == 0

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register(
        "contexts",
        pl.DataFrame(
            {
                "file": [f for f, _ in rows],
                "tenant": [c.tenant for _, c in rows],
                "callgraph_id": [c.callgraph_id for _, c in rows],
                "subject_key": [c.subject_key for _, c in rows],
            }
        ),
    )
    expected = con.sql(QUERY, params=[[f for f, _ in rows]]).pl()

    expected = expected.with_columns(
        pl.col("first_observed_at", "last_observed_at").dt.cast_time_unit("us"),
    ).cast({"event_count": pl.Int64, "batch_count": pl.Int64})

    # Read as another engine would, from the Delta folders alone: first with the SQL that
    # docs/scaling.md gives for merging the base and the recent rows, then, after the
    # compaction merged them, the base table by itself.
    lake = home.root / "lake"
    con.register("runtime_facts", DeltaTable(str(lake / "runtime_facts")).to_pyarrow_table())
    con.register(
        "runtime_facts_recent", DeltaTable(str(lake / "runtime_facts_recent")).to_pyarrow_table()
    )
    merged = con.sql(_scaling_sql()).pl()
    assert con.execute("SELECT count(*) FROM runtime_facts_recent").fetchall()[0][0] > 0
    compact(home, vacuum=False)
    base = pl.DataFrame(DeltaTable(str(lake / "runtime_facts")).to_pyarrow_table())
    for table in (merged, base):
        got = table.drop("updated_at").sort(expected.columns[:6], nulls_last=False)
        assert_frame_equal(got, expected.select(got.columns), check_dtypes=False)
        assert got.height > 100


def _scaling_sql() -> str:
    doc = (Path(__file__).parents[2] / "docs" / "scaling.md").read_text()
    after = doc.split("The merged rows in SQL", 1)[1]
    return after.split("```sql\n", 1)[1].split("```", 1)[0]
