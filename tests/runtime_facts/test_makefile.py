"""The Makefile: plain help in a pipe, a thorough clean, the CLI without activation."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PLAIN = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}


def make(*args: str, cwd: Path = REPO, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=cwd,
        env={**PLAIN, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def test_help_in_a_pipe_has_no_colour_codes() -> None:
    out = make("help").stdout

    assert "\x1b" not in out
    targets = {line.split()[0] for line in out.splitlines() if line.strip()}
    assert {"setup", "demo", "test", "lint", "airflow", "run", "clean"} <= targets


def test_clean_removes_local_state_and_caches_but_not_the_environment(tmp_path: Path) -> None:
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    state = ["var", "airflow-home", "test-artifacts", ".cache", ".hypothesis", ".pytest_cache"]
    for name in [*state, ".venv"]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "file").write_text("x")

    make("clean", cwd=tmp_path, HOME=str(tmp_path))

    assert sorted(p.name for p in tmp_path.iterdir()) == [".venv", "Makefile"]
    assert (tmp_path / ".venv" / "file").exists()


def test_run_calls_the_cli_without_activation_and_names_the_home(tmp_path: Path) -> None:
    result = make("run", "ARGS=--help", RUNTIME_FACTS_HOME=str(tmp_path / "home"))

    assert f"runtime-facts home: {tmp_path / 'home'}" in result.stderr
    assert "Usage" in result.stdout
