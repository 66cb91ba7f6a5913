"""The root app: an instant import, plain help, --version, output that pipes cleanly."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import runtime_facts
from runtime_facts.cli.main import app
from tests.runtime_facts.cli.conftest import Cli

HEAVY = ("polars", "pyarrow", "deltalake", "duckdb", "numpy", "scipy")
CLI_MODULES = [
    "runtime_facts.cli",
    "runtime_facts.cli.main",
    "runtime_facts.cli.common",
    "runtime_facts.cli.cas",
    "runtime_facts.cli.ingest",
    "runtime_facts.cli.facts",
    "runtime_facts.cli.offline",
    "runtime_facts.cli.audit",
    "runtime_facts.cli.analyst",
    "runtime_facts.cli.ops",
    "runtime_facts.cli.serve",
    "runtime_facts.cli.tools",
]
EXE = Path(sys.executable).with_name("runtime-facts")


def _loaded_heavy(module: str) -> list[str]:
    code = (
        f"import sys, {module}\nprint(' '.join(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return proc.stdout.split()


@pytest.mark.parametrize("module", CLI_MODULES)
def test_each_cli_module_imports_alone_without_heavy_libraries(module: str) -> None:
    assert _loaded_heavy(module) == []


def test_the_probe_does_see_heavy_imports() -> None:
    """The import check above would notice: a job module does load them."""
    assert "polars" in _loaded_heavy("runtime_facts.pipeline.ingest")


def _commands(group: object, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    for name, sub in getattr(group, "commands", {}).items():
        found += _commands(sub, (*path, name))
    return found


ALL_COMMANDS = _commands(typer.main.get_command(app))


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=lambda c: " ".join(c) or "root")
def test_every_command_has_plain_help_without_bool_values(command: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Usage:")
    assert "<bool>" not in result.stdout
    assert "\x1b[" not in result.stdout


def test_cas_put_help_keeps_the_regex_and_says_a_subject_is_required() -> None:
    result = CliRunner().invoke(app, ["cas", "put", "--help"], env={"COLUMNS": "200"})
    text = re.sub(r"-\s+", "-", " ".join(result.stdout.split()))  # undo the help's wrapping
    assert "[a-z0-9][a-z0-9._-]{0,63}" in text
    required = "One of --image-digest, --scan-id or --component with --version is required"
    assert text.count(required) == 2  # on --image-digest and on --scan-id


def test_flags_are_flags(cli: Cli) -> None:
    result = CliRunner().invoke(app, ["cas", "put-graph", "--help"], env={"COLUMNS": "200"})
    assert "--recompute / --no-recompute" in result.stdout
    assert cli("ingest", "--sealed", "true").code == 2  # a flag takes no value


def test_version_prints_the_package_version() -> None:
    proc = subprocess.run([str(EXE), "--version"], capture_output=True, text=True, check=False)
    assert (proc.returncode, proc.stdout) == (0, f"runtime-facts {runtime_facts.__version__}\n")


def test_a_typo_is_a_usage_error() -> None:
    proc = subprocess.run([str(EXE), "cas", "pot"], capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert "No such command 'pot'" in proc.stderr


def test_piped_output_never_wraps(tmp_path: Path) -> None:
    missing = tmp_path / ("a-rather-long-folder-name-" * 4) / "batch-0001.ndjson.gz"
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    args = [str(EXE), "--home", str(tmp_path / "h"), "cas", "put", str(missing)]
    args += ["--tenant", "acme", "--callgraph-id", "cg-1", "--scan-id", "s-1"]
    proc = subprocess.run(args, capture_output=True, text=True, check=False, env=env)
    assert proc.returncode == 4
    first = proc.stderr.splitlines()[0]
    assert first == f"error [file_not_found] no such file: {missing}"
    assert len(first) > 120


def _cli_imports(path: Path) -> set[str]:
    """The `runtime_facts.cli.*` modules a file imports at its top level."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "runtime_facts.cli":
                found |= {f"runtime_facts.cli.{a.name}" for a in node.names}
            elif node.module.startswith("runtime_facts.cli."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("runtime_facts.cli.")}
    return found


def test_only_main_imports_the_command_modules_and_they_import_only_common() -> None:
    package = Path(runtime_facts.__file__).parent / "cli"
    graph = {f"runtime_facts.cli.{p.stem}": _cli_imports(p) for p in package.glob("*.py")}
    assert graph["runtime_facts.cli.common"] == set()
    assert graph["runtime_facts.cli.__init__"] == set()
    for name, imports in graph.items():
        if name != "runtime_facts.cli.main":
            assert imports <= {"runtime_facts.cli.common"}, name
    assert set(graph) - {"runtime_facts.cli.__init__"} == set(CLI_MODULES[1:])
