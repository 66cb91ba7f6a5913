"""Readers survive what is already stored: timestamps beyond Python's years 1-9999."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from runtime_facts.cli.main import app
from runtime_facts.config import Settings
from runtime_facts.home import Home
from runtime_facts.ops.compact import compact
from runtime_facts.readable import readable_frame, readable_table

runner = CliRunner()
YEAR_ZERO_US = -62167219200_000000  # 0000-01-01T00:00:00Z
YEAR_20000_US = 568971820800_000000  # +20000-01-01T00:00:00Z


@pytest.fixture(scope="module")
def damaged_home(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An ingested home whose `runtime_facts` rows were later rewritten with years 0 and 20000."""
    root = tmp_path_factory.mktemp("readable")
    batch = root / "b.ndjson.gz"
    batch.write_bytes(
        gzip.compress(b'{"symbolId":"a","hitCount":2}\n{"symbolId":"b","hitCount":1}\n', mtime=0)
    )
    home = str(root / "h")
    put = ["cas", "put", str(batch), "--tenant", "acme", "--callgraph-id", "cg", "--scan-id", "s1"]
    assert runner.invoke(app, ["--home", home, *put]).exit_code == 0
    assert runner.invoke(app, ["--home", home, "ingest"]).exit_code == 0
    compact(Home(Settings.load(home)), vacuum=False)  # every fact row in the base, damaged below
    lake = Home(Settings.load(home)).lake
    facts = lake.read("runtime_facts")
    stamps = pl.Series([YEAR_ZERO_US, YEAR_20000_US]).cast(pl.Datetime("us", "UTC"))
    damaged = facts.sort("symbol_id").with_columns(
        first_observed_at=stamps, last_observed_at=stamps
    )
    lake.replace_where("runtime_facts", damaged, "tenant = 'acme'")
    return home


def _run(home: str, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["--home", home, *args], env={"COLUMNS": "300"})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def test_facts_list_shows_a_stored_year_zero_as_text(damaged_home: str) -> None:
    code, out = _run(damaged_home, "facts", "list", "--tenant", "acme", "--subject", "scan:s1")
    assert code == 0
    assert "0000-01-01T00:00:00.000000+00:00" in out


def test_facts_list_json_carries_the_iso_text(damaged_home: str) -> None:
    code, out = _run(
        damaged_home, "--json", "facts", "list", "--tenant", "acme", "--subject", "scan:s1"
    )
    assert code == 0
    rows = json.loads(out)
    assert [r["first_observed_at"] for r in rows] == [
        "0000-01-01T00:00:00.000000+00:00",
        "+20000-01-01T00:00:00.000000+00:00",
    ]


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_query_output_survives_out_of_range_timestamps(damaged_home: str, fmt: str) -> None:
    code, out = _run(
        damaged_home,
        "query",
        "SELECT symbol_id, first_observed_at, min(first_observed_at) OVER () AS lo "
        "FROM runtime_facts ORDER BY symbol_id",
        "--format",
        fmt,
    )
    assert code == 0, out
    assert "0000-01-01T00:00:00.000000+00:00" in out
    assert "+20000-01-01" in out


def test_the_report_survives_out_of_range_timestamps(damaged_home: str, tmp_path: Path) -> None:
    code, out = _run(damaged_home, "report", "--out", str(tmp_path / "r.html"))
    assert code == 0, out
    assert (tmp_path / "r.html").stat().st_size > 0


def test_an_in_range_frame_is_returned_as_it_is() -> None:
    frame = pl.DataFrame({"t": pl.Series([0]).cast(pl.Datetime("us", "UTC"))})
    assert readable_frame(frame, "x") is frame


def test_out_of_range_dates_and_naive_timestamps_become_text() -> None:
    table = pa.table(
        {
            "d": pa.array([-719529, 0], pa.date32()),  # year 0 (-0001-12-31 proleptic), 1970
            "t": pa.array([YEAR_ZERO_US, 0], pa.timestamp("us")),
            "ok": pa.array([0, 1], pa.timestamp("us", tz="UTC")),
        }
    )
    out = readable_table(table, "x")
    assert out.column("d").to_pylist() == ["-0001-12-31", "1970-01-01"]
    assert out.column("t").to_pylist() == [
        "0000-01-01T00:00:00.000000",
        "1970-01-01T00:00:00.000000",
    ]
    assert out.column("ok").type == pa.timestamp("us", tz="UTC")
