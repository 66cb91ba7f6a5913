"""`ingest` (`--retry` of rejected digests, a missing home) and `recompute` typos."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from runtime_facts.cli.ingest import _progress
from runtime_facts.config import Settings
from runtime_facts.home import Home
from tests.runtime_facts.cli.conftest import SUBJECT, Cli, write_batch

ONE_BAD_LINE = '{"symbolId":"sym:a","hitCount":2}\n{"hitCount":1}\n'


def _stage(cli: Cli, path: Path) -> str:
    run = cli("cas", "put", str(path), *SUBJECT)
    assert run.code == 0, run.err
    return run.out.strip().rsplit("/", 1)[-1]


def _stage_as_is(home_dir: Path, path: Path) -> str:
    """Put a batch into CAS without the staging checks (staging refuses invalid lines now;
    this is a batch staged under an earlier policy, or by another writer)."""
    from runtime_facts.subject import SubjectContext

    ctx = SubjectContext("acme", "cg-1", scan_id="s-1")
    return Home(Settings.load(str(home_dir))).cas.put("runtime", path.read_bytes(), ctx).sha256


def _receipts(home_dir: Path, sha: str) -> list[str]:
    home = Home(Settings.load(str(home_dir)))
    return [str(r["status"]) for r in home.receipts if r.get("batch_sha256") == sha]


def test_retry_reattempts_a_rejected_batch_after_the_cause_is_fixed(
    cli: Cli, tmp_path: Path, home_dir: Path
) -> None:
    sha = _stage_as_is(home_dir, write_batch(tmp_path / "b.ndjson.gz", ONE_BAD_LINE))
    first = cli("ingest")
    assert first.code == 3
    assert f"rejected {sha} invalid_lines" in first.err  # the whole digest, ready to paste
    scheduled = json.loads(cli("--json", "ingest").out)
    assert scheduled["batches"] == 0  # a rejected digest is final for scheduled ingest
    retried = cli("--json", "ingest", "--retry", sha, "--allow-partial")
    assert retried.code == 0, retried.out
    doc = json.loads(retried.out)
    assert (doc["accepted"], doc["rejected_lines"]) == (1, 1)
    listing = ("--json", "facts", "list", "--tenant", "acme", "--subject", "scan:s-1")
    facts = json.loads(cli(*listing).out)
    assert [(f["symbol_id"], f["hit_count"]) for f in facts] == [("sym:a", 2)]
    uri = f"cas://reachability/runtime/{sha}"
    again = json.loads(cli("--json", "ingest", "--retry", uri, "--allow-partial").out)
    assert (again["accepted"], again["duplicate"]) == (0, 1)
    assert json.loads(cli(*listing).out) == facts
    assert _receipts(home_dir, sha) == ["rejected", "accepted", "duplicate"]


def test_retry_of_an_accepted_batch_is_a_duplicate(cli: Cli, tmp_path: Path) -> None:
    sha = _stage(cli, write_batch(tmp_path / "b.ndjson.gz"))
    assert cli("ingest").code == 0
    run = cli("--json", "ingest", "--retry", sha)
    assert run.code == 0
    assert json.loads(run.out)["duplicate"] == 1


def test_retry_of_an_unstaged_digest_exits_4(cli: Cli, tmp_path: Path) -> None:
    _stage(cli, write_batch(tmp_path / "b.ndjson.gz"))
    run = cli("ingest", "--retry", "ab" * 32)
    assert run.code == 4
    assert "[cas_miss]" in run.err


def test_retry_of_something_else_than_a_digest_exits_2(cli: Cli, tmp_path: Path) -> None:
    _stage(cli, write_batch(tmp_path / "b.ndjson.gz"))
    assert cli("ingest", "--retry", "s-1").code == 2


def test_ingest_on_a_missing_home_exits_4(cli: Cli, tmp_path: Path) -> None:
    run = cli("ingest", home=tmp_path / "nonexistent")
    assert run.code == 4
    assert "[home_not_found]" in run.err


def test_recompute_of_an_unknown_callgraph_exits_4(cli: Cli, tmp_path: Path) -> None:
    _stage(cli, write_batch(tmp_path / "b.ndjson.gz"))
    assert cli("ingest").code == 0
    run = cli("recompute", "--tenant", "acme", "--callgraph-id", "cg-nope")
    assert run.code == 4
    assert "[unknown_callgraph]" in run.err
    ok = cli("--json", "recompute", "--tenant", "acme", "--callgraph-id", "cg-1")
    assert (ok.code, json.loads(ok.out)["subjects"]) == (0, 1)


def test_recompute_of_an_unknown_subject_exits_4(cli: Cli, tmp_path: Path) -> None:
    _stage(cli, write_batch(tmp_path / "b.ndjson.gz"))
    assert cli("ingest").code == 0
    args = ("recompute", "--tenant", "acme", "--callgraph-id", "cg-1")
    run = cli(*args, "--subject", "scan:nope")
    assert run.code == 4
    assert "[unknown_subject]" in run.err
    assert cli(*args, "--subject", "scan:s-1").code == 0


def test_recompute_on_a_missing_home_exits_4(cli: Cli, tmp_path: Path) -> None:
    run = cli("recompute", "--tenant", "acme", "--callgraph-id", "cg-1", home=tmp_path / "nope")
    assert run.code == 4
    assert "[home_not_found]" in run.err


def test_strict_overrides_a_partial_setting_for_one_run(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNTIME_FACTS__INGEST__ALLOW_PARTIAL", "true")
    sha = _stage(cli, write_batch(tmp_path / "b.ndjson.gz", ONE_BAD_LINE))
    assert cli("ingest", "--strict").code == 3
    doc = json.loads(cli("--json", "ingest", "--retry", sha).out)  # the setting applies again
    assert (doc["accepted"], doc["rejected_lines"]) == (1, 1)


# The progress bar: drawn on a terminal, and rich.progress not imported when not shown.
def test_the_bar_advances_on_a_terminal() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=80)
    with _progress(console, 3, shown=True) as advance:
        for _ in range(3):
            advance()
        console.file.flush()
    assert "ingesting" in out.getvalue()


def test_no_bar_costs_no_import() -> None:
    code = (
        "import sys\n"
        "from rich.console import Console\n"
        "from runtime_facts.cli.ingest import _progress\n"
        "with _progress(Console(), 3, shown=False) as advance:\n"
        "    advance()\n"
        "print('rich.progress' in sys.modules)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "False"


def test_a_run_with_nothing_pending_loads_no_batch_machinery(
    cli: Cli, home_dir: Path, tmp_path: Path
) -> None:
    """A scheduled run that finds no new batch still folds and publishes, without numpy,
    pyarrow or the scorer: the start-up `make bench` reports."""
    _stage(cli, write_batch(tmp_path / "b.ndjson.gz"))
    assert cli("ingest").code == 0
    code = (
        "import sys\n"
        "from runtime_facts.cli.main import main\n"
        f"sys.argv = ['runtime-facts', 'ingest', '--home', {str(home_dir)!r}, '--json']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exit:\n"
        "    heavy = ('numpy', 'pyarrow', 'runtime_facts.pipeline.score', 'rich.progress')\n"
        "    print([m for m in heavy if m in sys.modules], exit.code, file=sys.stderr)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stderr.strip().splitlines()[-1] == "[] 0"
    assert json.loads(run.stdout)["batches"] == 0
