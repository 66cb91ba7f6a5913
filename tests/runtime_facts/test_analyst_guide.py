"""Every SQL query and Python snippet in docs/analyst-guide.md runs against the fixture data."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from runtime_facts.analyst.query import connect
from tests.runtime_facts.analyst_fixtures import FixtureHome, shared_fixture_home

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "analyst-guide.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
EXPECT_EMPTY = "-- expect: empty"


def _blocks(language: str) -> list[str]:
    return [body for lang, body in BLOCK.findall(GUIDE.read_text()) if lang == language]


SQL = _blocks("sql")
PYTHON = _blocks("python")


def _name(sql: str) -> str:
    return " ".join(sql.split())[:60]


@pytest.fixture(scope="module")
def facts(tmp_path_factory: pytest.TempPathFactory) -> FixtureHome:
    return shared_fixture_home(tmp_path_factory)


def test_the_guide_answers_at_least_eight_questions() -> None:
    assert len(SQL) >= 8
    headings = re.findall(r"^### \d+\. ", GUIDE.read_text(), re.MULTILINE)
    assert len(headings) >= 8


@pytest.mark.parametrize("sql", SQL, ids=[_name(s) for s in SQL])
def test_sql_runs_on_the_fixtures(facts: FixtureHome, sql: str) -> None:
    with connect(facts.home) as conn:
        result = conn.sql(sql)
    if EXPECT_EMPTY in sql:
        assert result.table.num_rows == 0, result.table.to_pylist()
    else:
        assert result.table.num_rows > 0, "a guide query should show an answer on the fixtures"


@pytest.mark.parametrize("sql", SQL, ids=[_name(s) for s in SQL])
def test_sql_runs_scoped_to_a_tenant(facts: FixtureHome, sql: str) -> None:
    with connect(facts.home, tenant="acme") as conn:
        conn.sql(sql)


@pytest.mark.parametrize("code", PYTHON, ids=[f"python-{i}" for i in range(len(PYTHON))])
def test_python_snippets_run(
    facts: FixtureHome,
    code: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("RUNTIME_FACTS_HOME", str(facts.home.root))
    exec(compile(code, str(GUIDE), "exec"), {"__name__": "guide"})
    assert capsys.readouterr().out.strip()


def _block(*needles: str) -> str:
    return next(s for s in SQL if all(n in s for n in needles))


def test_specific_answers(facts: FixtureHome) -> None:
    with connect(facts.home) as conn:
        contested = conn.sql(_block("WHERE state = 'X'", "runtime_hit_count, score")).table
        batches = conn.sql(_block("b.batch_sha256, b.cas_uri")).table.to_pylist()
    assert contested.column("symbol_id").to_pylist() == ["sym:java:com.acme.checkout.Refund::issue"]
    assert len(batches) == 2  # checkout-api-0001 on day 1, checkout-api-0002 on day 2
    assert [b["hit_count"] for b in batches] == [17, 7]
