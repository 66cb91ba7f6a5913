"""`query`, `shell`, `report`: a missing home and a time before the first write are errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.runtime_facts.cli.conftest import SUBJECT, Cli, write_batch

COUNT = "SELECT count(*) AS n FROM runtime_facts"


@pytest.fixture
def ingested(cli: Cli, tmp_path: Path) -> None:
    assert cli("cas", "put", str(write_batch(tmp_path / "b.ndjson.gz")), *SUBJECT).code == 0
    assert cli("ingest").code == 0


@pytest.mark.usefixtures("ingested")
def test_as_of_before_the_first_write_exits_4(cli: Cli) -> None:
    run = cli("--json", "query", COUNT, "--as-of", "2000-01-01T00:00:00Z")
    assert run.code == 4
    doc = json.loads(run.out)
    assert doc["error"] == "version_not_found"
    assert "has no version at or before 2000-01-01T00:00:00+00:00" in doc["message"]


@pytest.mark.usefixtures("ingested")
def test_as_of_now_and_version_0_still_read(cli: Cli) -> None:
    now = cli("query", COUNT, "--as-of", "2100-01-01", "--format", "csv")
    assert (now.code, now.out.splitlines()) == (0, ["n", "2"])  # two symbols
    assert cli("query", COUNT, "--as-of", "0", "--format", "csv").code == 0


@pytest.mark.parametrize(
    "command",
    [("query", COUNT), ("shell",), ("report", "--out", "r.html")],
    ids=lambda c: c[0],
)
def test_a_missing_home_exits_4(cli: Cli, tmp_path: Path, command: tuple[str, ...]) -> None:
    run = cli(*command, home=tmp_path / "nonexistent", stdin="SELECT 1;\n")
    assert run.code == 4
    assert "[home_not_found]" in run.err
