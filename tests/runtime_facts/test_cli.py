"""The CLI as operators use it: commands, JSON output and SPEC §9 exit codes."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from runtime_facts.cli.main import app
from runtime_facts.config import Settings
from runtime_facts.home import Home
from runtime_facts.subject import SubjectContext

runner = CliRunner()


def _batch(tmp_path: Path, text: str, name: str = "b.ndjson.gz") -> Path:
    path = tmp_path / name
    path.write_bytes(gzip.compress(text.encode(), mtime=0))
    return path


def _run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_put_ingest_list_round_trip(tmp_path: Path) -> None:
    home = str(tmp_path / "h")
    batch = _batch(tmp_path, '{"symbolId":"a","hitCount":2}\n{"symbolId":"a","hitCount":3}\n')
    code, out = _run(
        "--home",
        home,
        "cas",
        "put",
        str(batch),
        "--tenant",
        "acme",
        "--callgraph-id",
        "cg",
        "--scan-id",
        "s1",
    )
    assert code == 0
    assert out.strip().startswith("cas://reachability/runtime/")
    code, out = _run("--home", home, "--json", "ingest")
    assert code == 0
    assert json.loads(out)["accepted"] == 1
    metrics = (Path(home) / "metrics" / "runtime_facts.prom").read_text()
    assert 'signals_runtime_events_total{tenant="acme"} 2.0' in metrics
    code, out = _run(
        "--home", home, "--json", "facts", "list", "--tenant", "acme", "--subject", "scan:s1"
    )
    assert code == 0
    assert [(r["symbol_id"], r["hit_count"]) for r in json.loads(out)] == [("a", 5)]


def test_rejected_batch_exits_3(tmp_path: Path) -> None:
    home = str(tmp_path / "h")
    batch = _batch(tmp_path, '{"hitCount":2}\n')
    code, out = _run(
        "--home",
        home,
        "cas",
        "put",
        str(batch),
        "--tenant",
        "acme",
        "--callgraph-id",
        "cg",
        "--scan-id",
        "s1",
    )
    assert code == 3  # staging refuses what ingest would reject
    assert "invalid_lines" in out
    # A bad batch that reached CAS another way (an older release, a copied home) is rejected.
    Home(Settings.load(home)).cas.put(
        "runtime", batch.read_bytes(), SubjectContext("acme", "cg", scan_id="s1")
    )
    code, _ = _run("--home", home, "ingest")
    assert code == 3
    metrics = (Path(home) / "metrics" / "runtime_facts.prom").read_text()
    assert 'signals_runtime_ingest_failures_total{tenant="acme"} 1.0' in metrics


def test_unknown_subject_exits_4(tmp_path: Path) -> None:
    code, out = _run(
        "--home", str(tmp_path / "h"), "facts", "list", "--tenant", "acme", "--subject", "scan:nope"
    )
    assert code == 4
    assert "no_tables" in out or "unknown_subject" in out


def test_bad_tenant_exits_2(tmp_path: Path) -> None:
    batch = _batch(tmp_path, '{"symbolId":"a","hitCount":2}\n')
    code, out = _run(
        "--home",
        str(tmp_path / "h"),
        "cas",
        "put",
        str(batch),
        "--tenant",
        "ACME",
        "--callgraph-id",
        "cg",
        "--scan-id",
        "s",
    )
    assert code == 2
    assert "invalid tenant" in out


def test_missing_subject_exits_2(tmp_path: Path) -> None:
    batch = _batch(tmp_path, '{"symbolId":"a","hitCount":2}\n')
    code, _ = _run(
        "--home",
        str(tmp_path / "h"),
        "cas",
        "put",
        str(batch),
        "--tenant",
        "acme",
        "--callgraph-id",
        "cg",
    )
    assert code == 2


def test_cas_verify_finds_tampering_and_exits_3(tmp_path: Path) -> None:
    home = tmp_path / "h"
    batch = _batch(tmp_path, '{"symbolId":"a","hitCount":2}\n')
    _, out = _run(
        "--home",
        str(home),
        "cas",
        "put",
        str(batch),
        "--tenant",
        "acme",
        "--callgraph-id",
        "cg",
        "--scan-id",
        "s",
    )
    sha = out.strip().rsplit("/", 1)[-1]
    assert _run("--home", str(home), "cas", "verify", "--all")[0] == 0
    (home / "cas" / "reachability" / "runtime" / sha).write_bytes(b"tampered")
    assert _run("--home", str(home), "cas", "verify", "--all")[0] == 3


@pytest.mark.parametrize(
    "command", [[], ["cas"], ["ingest"], ["facts", "list"], ["recompute"], ["events", "tail"]]
)
def test_every_command_has_help(command: list[str]) -> None:
    code, out = _run(*command, "--help")
    assert code == 0
    assert "Usage" in out


def test_installed_entry_point_runs() -> None:
    exe = Path(sys.executable).with_name("runtime-facts")
    proc = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0
    assert "ingest" in proc.stdout


def test_generate_is_deterministic(tmp_path: Path) -> None:
    for name in ("a", "b"):
        _run("generate", "--out", str(tmp_path / name), "--events", "500", "--seed", "3")
    first = sorted(p.read_bytes() for p in (tmp_path / "a").iterdir())
    second = sorted(p.read_bytes() for p in (tmp_path / "b").iterdir())
    assert first == second
    assert first


def test_ingest_from_a_kit(
    tmp_path: Path, fixtures_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    public_key = fixtures_dir / "keys" / "TEST-ONLY-offline-kit.pub"
    monkeypatch.setenv("RUNTIME_FACTS__OFFLINE__PUBLIC_KEY", str(public_key))
    home = str(tmp_path / "h")
    code, out = _run(
        "--home", home, "--json", "ingest", "--from", str(fixtures_dir / "offline-kit")
    )
    assert code == 0, out
    doc = json.loads(out)
    assert doc["accepted"] == 2
    assert {o["status"] for o in doc["outcomes"]} == {"accepted"}
