"""Helpers for the command-line tests: run the app in-process, stage small batches."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from runtime_facts.cli.main import app

GOOD = '{"symbolId":"sym:a","hitCount":2}\n{"symbolId":"sym:b","hitCount":3}\n'
SUBJECT = ["--tenant", "acme", "--callgraph-id", "cg-1", "--scan-id", "s-1"]


@dataclass
class Run:
    """One finished command."""

    code: int
    out: str
    err: str


Cli = Callable[..., Run]


@pytest.fixture
def home_dir(tmp_path: Path) -> Path:
    """Where the home of a test lives (not created: commands create it)."""
    return tmp_path / "home"


@pytest.fixture
def cli(home_dir: Path) -> Cli:
    """Run `runtime-facts --home <home_dir> ARGS...` in-process."""

    def _run(*args: str, home: Path | None = None, stdin: str | None = None) -> Run:
        result = CliRunner().invoke(
            app, ["--home", str(home or home_dir), *args], input=stdin, catch_exceptions=False
        )
        return Run(result.exit_code, result.stdout, result.stderr)

    return _run


def write_batch(path: Path, text: str = GOOD) -> Path:
    """A gzip NDJSON batch file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(text.encode(), mtime=0))
    return path
