"""`facts list --limit` and `events tail` on a missing home."""

from __future__ import annotations

import json
from pathlib import Path

from tests.runtime_facts.cli.conftest import SUBJECT, Cli, write_batch

THREE = "".join(f'{{"symbolId":"sym:{c}","hitCount":1}}\n' for c in "cab")
LIST = ("facts", "list", "--tenant", "acme", "--subject", "scan:s-1")


def _ingested(cli: Cli, tmp_path: Path) -> None:
    assert cli("cas", "put", str(write_batch(tmp_path / "b.ndjson.gz", THREE)), *SUBJECT).code == 0
    assert cli("ingest").code == 0


def test_limit_keeps_the_first_keys_in_key_order(cli: Cli, tmp_path: Path) -> None:
    _ingested(cli, tmp_path)
    run = cli("--json", *LIST, "--limit", "2")
    assert run.code == 0
    assert [f["symbol_id"] for f in json.loads(run.out)] == ["sym:a", "sym:b"]
    table = cli(*LIST, "-n", "1")
    assert "scan:s-1 (1 of 3 keys)" in table.out


def test_limit_must_be_positive(cli: Cli, tmp_path: Path) -> None:
    _ingested(cli, tmp_path)
    assert cli(*LIST, "--limit", "0").code == 2


def test_list_on_a_missing_home_exits_4_home_not_found(cli: Cli, tmp_path: Path) -> None:
    run = cli("--json", *LIST, home=tmp_path / "nonexistent")
    assert run.code == 4
    assert json.loads(run.out)["error"] == "home_not_found"


def test_events_tail_on_a_missing_home_exits_4(cli: Cli, tmp_path: Path) -> None:
    assert cli("events", "tail", home=tmp_path / "nonexistent").code == 4
