"""SQL over the Delta tables offline: views, tenant scoping, time travel, formats, no extension."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from runtime_facts import read_table
from runtime_facts.analyst.query import VIEWS, connect, parse_as_of, run_query
from runtime_facts.cli.main import app
from runtime_facts.errors import NotFoundError, UsageError
from runtime_facts.home import Home
from runtime_facts.stores.lake import TABLES
from tests.runtime_facts.analyst_fixtures import (
    CHECKOUT_IMAGE,
    FixtureHome,
    shared_fixture_home,
)

runner = CliRunner()
REFUND = "sym:java:com.acme.checkout.Refund::issue"


@pytest.fixture(scope="module")
def facts(tmp_path_factory: pytest.TempPathFactory) -> FixtureHome:
    return shared_fixture_home(tmp_path_factory)


def _cli(facts: FixtureHome, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--home", str(facts.home.root), *args], input=stdin)
    return result.exit_code, result.stdout, result.stderr


def _scalar(home: Home, sql: str, **kwargs: object) -> object:
    return run_query(home, sql, **kwargs).table.to_pylist()[0]["v"]  # type: ignore[arg-type]


def test_every_view_has_its_table_columns(facts: FixtureHome) -> None:
    with connect(facts.home) as conn:
        for name in VIEWS:
            described = conn.sql(f"DESCRIBE {name}").table.column("column_name").to_pylist()
            assert described == list(TABLES[name]), name
        assert set(conn.versions) == set(VIEWS)


def test_views_read_the_current_rows(facts: FixtureHome) -> None:
    expected = facts.home.lake.read("runtime_facts").height
    assert _scalar(facts.home, "SELECT count(*) AS v FROM runtime_facts") == expected


def test_filters_on_string_columns_work(facts: FixtureHome) -> None:
    # Regression: a filter pushed into a string_view Arrow scan fails in pyarrow 26.
    accepted = _scalar(
        facts.home, "SELECT count(*) AS v FROM ingest_receipts WHERE status = 'accepted'"
    )
    assert accepted == 4
    hits = _scalar(
        facts.home,
        f"SELECT sum(hit_count)::BIGINT AS v FROM runtime_facts WHERE symbol_id IN ('{REFUND}')",
    )
    assert hits == 1


@pytest.mark.parametrize("view", VIEWS)
def test_tenant_scope_shows_only_that_tenant(facts: FixtureHome, view: str) -> None:
    with connect(facts.home, tenant="globex") as conn:
        tenants = conn.sql(f"SELECT DISTINCT tenant FROM {view}").table.column(0).to_pylist()
        scoped = conn.sql(f"SELECT count(*) FROM {view}").table.column(0)[0].as_py()
    assert set(tenants) <= {"globex"}
    everyone = run_query(facts.home, f"SELECT count(*) AS n FROM {view} WHERE tenant = 'globex'")
    assert scoped == everyone.table.column("n")[0].as_py()


def test_tenant_scope_hides_other_tenants_from_raw_sources_too(facts: FixtureHome) -> None:
    with connect(facts.home, tenant="globex") as conn:
        raw = conn.sql("SELECT count(*) FROM __delta_runtime_facts WHERE tenant = 'acme'")
        assert raw.table.column(0)[0].as_py() == 0
        lake = facts.home.lake.path("runtime_facts")
        with pytest.raises(UsageError, match="Permission Error"):
            conn.sql(f"SELECT * FROM read_parquet('{lake}/tenant=acme/*.parquet')")
        with pytest.raises(UsageError, match="locked"):
            conn.sql("SET enable_external_access = true")
        with pytest.raises(UsageError):
            conn.sql("INSTALL httpfs")


def test_cli_tenant_a_cannot_see_tenant_b(facts: FixtureHome) -> None:
    code, out, _ = _cli(
        facts,
        "query",
        "SELECT tenant, symbol_id FROM runtime_facts",
        "--tenant",
        "globex",
        "--format",
        "json",
    )
    assert code == 0
    rows = json.loads(out)
    assert rows
    assert {r["tenant"] for r in rows} == {"globex"}
    code, out, _ = _cli(
        facts,
        "query",
        "SELECT * FROM runtime_facts WHERE tenant = 'acme'",
        "--tenant",
        "globex",
        "-f",
        "json",
    )
    assert code == 0
    assert json.loads(out) == []


def test_no_extension_is_installed_or_loaded(facts: FixtureHome) -> None:
    with connect(facts.home) as conn:
        settings = conn.sql(
            "SELECT current_setting('autoinstall_known_extensions') AS i, "
            "current_setting('autoload_known_extensions') AS l"
        ).table.to_pylist()
        assert settings == [{"i": False, "l": False}]
        conn.sql("SELECT count(*) FROM runtime_facts JOIN ingest_receipts USING (tenant)")
        loaded = conn.sql(
            "SELECT extension_name, loaded FROM duckdb_extensions() "
            "WHERE extension_name IN ('delta', 'httpfs') ORDER BY 1"
        ).table.to_pylist()
    assert loaded == [
        {"extension_name": "delta", "loaded": False},
        {"extension_name": "httpfs", "loaded": False},
    ]


def test_as_of_a_version_reads_the_old_rows(facts: FixtureHome) -> None:
    sql = f"SELECT count(*) AS v FROM runtime_facts WHERE symbol_id = '{REFUND}'"
    assert _scalar(facts.home, sql) == 1
    old = facts.day1_versions["runtime_facts"]
    result = run_query(facts.home, sql, as_of=old)
    assert result.table.column("v")[0].as_py() == 0
    assert result.versions == {"runtime_facts": old}


def test_as_of_a_timestamp_reads_every_table_at_that_time(facts: FixtureHome) -> None:
    with connect(facts.home, as_of=facts.between.isoformat()) as conn:
        assert conn.versions == facts.day1_versions
        receipts = conn.sql("SELECT count(*) FROM ingest_receipts").table.column(0)[0].as_py()
    assert receipts == 4


def test_cli_as_of(facts: FixtureHome) -> None:
    version = str(facts.day1_versions["runtime_fact_batches"])
    code, out, _ = _cli(
        facts, "query", "SELECT count(DISTINCT batch_sha256) AS n FROM runtime_fact_batches",
        "--as-of", version, "-f", "csv",
    )  # fmt: skip
    assert code == 0
    assert out.splitlines() == ["n", "3"]


def test_as_of_a_missing_version_exits_4(facts: FixtureHome) -> None:
    code, _, err = _cli(facts, "query", "SELECT count(*) FROM runtime_facts", "--as-of", "999")
    assert code == 4
    assert "version_not_found" in err


def test_as_of_garbage_exits_2(facts: FixtureHome) -> None:
    code, _, err = _cli(facts, "query", "SELECT 1", "--as-of", "last tuesday")
    assert code == 2
    assert "invalid_as_of" in err


def test_parse_as_of() -> None:
    assert parse_as_of("7") == 7
    assert parse_as_of("2026-11-24").isoformat() == "2026-11-24T00:00:00+00:00"  # type: ignore[union-attr]
    assert parse_as_of("2026-11-24T12:00:00Z").isoformat() == "2026-11-24T12:00:00+00:00"  # type: ignore[union-attr]
    with pytest.raises(UsageError):
        parse_as_of(-1)


def test_sql_error_exits_2_with_duckdb_message(facts: FixtureHome) -> None:
    code, out, err = _cli(facts, "query", "SELECT * FROM no_such_table")
    assert code == 2
    assert out == ""
    assert "sql_error" in err
    assert "no_such_table does not exist" in err


def test_sql_error_json(facts: FixtureHome) -> None:
    code, out, _ = _cli(facts, "--json", "query", "SELEC 1")
    assert code == 2
    doc = json.loads(out)
    assert doc["error"] == "sql_error"
    assert "Parser Error" in doc["message"]


def test_table_format_is_aligned(facts: FixtureHome) -> None:
    sql = "SELECT tenant, count(*) AS keys FROM runtime_facts GROUP BY tenant ORDER BY tenant"
    code, out, _ = _cli(facts, "query", sql)
    assert code == 0
    assert out.splitlines() == [
        "tenant | keys",
        "-------+-----",
        "acme   |    7",
        "globex |    3",
        "(2 rows)",
    ]


def test_csv_format(facts: FixtureHome) -> None:
    sql = (
        "SELECT symbol_id, code_id, process_names FROM runtime_fact_batches "
        f"WHERE symbol_id = '{REFUND}'"
    )
    code, out, _ = _cli(facts, "query", sql, "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rows == [{"symbol_id": REFUND, "code_id": "build-7f3a", "process_names": "[]"}]


def test_json_format_keeps_types(facts: FixtureHome) -> None:
    sql = (
        "SELECT symbol_id, sum(hit_count) AS hits, max(last_observed_at) AS last_seen, "
        "NULL AS nothing FROM runtime_facts WHERE subject_key = "
        f"'{CHECKOUT_IMAGE}' GROUP BY symbol_id ORDER BY hits DESC, symbol_id LIMIT 1"
    )
    code, out, _ = _cli(facts, "query", sql, "--format", "json")
    assert code == 0
    assert json.loads(out) == [
        {
            "symbol_id": "sym:java:com.acme.checkout.Api::handle",
            "hits": 26,
            "last_seen": "2026-11-21T08:31:00Z",
            "nothing": None,
        }
    ]


def test_parquet_format_round_trips(facts: FixtureHome, tmp_path: Path) -> None:
    target = tmp_path / "facts.parquet"
    code, _, err = _cli(
        facts, "query", "SELECT * FROM runtime_facts", "-f", "parquet", "--out", str(target)
    )
    assert code == 0
    assert "wrote 10 rows" in err
    table = pq.read_table(target)
    assert table.num_rows == 10
    assert table.column_names == list(TABLES["runtime_facts"])


def test_parquet_needs_out(facts: FixtureHome) -> None:
    code, _, err = _cli(facts, "query", "SELECT 1", "--format", "parquet")
    assert code == 2
    assert "--out" in err


def test_out_file_for_text_formats(facts: FixtureHome, tmp_path: Path) -> None:
    target = tmp_path / "r.csv"
    code, out, _ = _cli(facts, "query", "SELECT 1 AS a", "-f", "csv", "-o", str(target))
    assert code == 0
    assert out == ""
    assert target.read_text() == "a\n1\n"


def test_sql_from_stdin(facts: FixtureHome) -> None:
    code, out, _ = _cli(facts, "query", "-", "-f", "csv", stdin="SELECT 40 + 2 AS answer\n")
    assert code == 0
    assert out == "answer\n42\n"


def test_no_tables_exits_4(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--home", str(tmp_path / "empty"), "query", "SELECT 1"])
    assert result.exit_code == 4
    assert "no_tables" in result.stderr


def test_unknown_table_in_read_table_is_a_usage_error(facts: FixtureHome) -> None:
    with pytest.raises(UsageError, match="no table"):
        read_table("facts", home=facts.home)


def test_read_table_is_lazy_and_scoped(facts: FixtureHome) -> None:
    frame = read_table("runtime_facts", tenant="globex", home=facts.home)
    assert isinstance(frame, pl.LazyFrame)
    collected = frame.collect()
    assert collected.height == 3
    assert collected.get_column("tenant").unique().to_list() == ["globex"]


def test_read_table_version(facts: FixtureHome) -> None:
    old = read_table(
        "runtime_facts", home=str(facts.home.root), version=facts.day1_versions["runtime_facts"]
    )
    assert REFUND not in old.collect().get_column("symbol_id").to_list()
    with pytest.raises(NotFoundError):
        read_table("runtime_facts", home=facts.home, version=999)


def test_shell_runs_a_piped_script(facts: FixtureHome) -> None:
    script = (
        ".tables\n"
        "SELECT tenant, count(*) AS n\n  FROM runtime_facts\n  GROUP BY tenant ORDER BY tenant;\n"
        ".mode csv\n"
        "SELECT 1 AS one;\n"
        ".quit\n"
        "SELECT 'never' AS x;\n"
    )
    code, out, err = _cli(facts, "shell", stdin=script)
    assert code == 0, err
    assert "runtime_facts  (version" in out
    assert "acme   | 7" in out
    assert "one\n1\n" in out
    assert "never" not in out


def test_shell_scoped_and_failing_statement_exits_2(facts: FixtureHome) -> None:
    script = "SELECT DISTINCT tenant FROM rejections;\nSELECT * FROM nope;\nSELECT 2 AS two;\n"
    code, out, err = _cli(facts, "shell", "--tenant", "acme", stdin=script)
    assert code == 2
    assert "acme" in out
    assert "globex" not in out
    assert "Error: Catalog Error" in err
    assert "two" in out  # a failed statement does not stop the script


def test_shell_json_mode(facts: FixtureHome) -> None:
    code, out, _ = _cli(facts, "--json", "shell", stdin="SELECT 1 AS a;")
    assert code == 0
    assert json.loads(out) == [{"a": 1}]
