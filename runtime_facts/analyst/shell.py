"""`runtime-facts shell`: a small DuckDB-like prompt over the fact views.

SQL ends with `;` (it may span lines); dot commands (`.help`, `.tables`, `.schema`, `.mode`,
`.timer`, `.quit`) stand alone on a line. Interactive sessions get readline editing and a
history file; piped input runs as a script, so the shell can be tested and scripted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from runtime_facts.analyst.query import VIEWS, FactsConnection
from runtime_facts.analyst.query_output import render
from runtime_facts.errors import RuntimeFactsError

PROMPT = "rf> "
CONTINUE = "...> "
HISTORY = Path.home() / ".runtime_facts_history"
HELP = """\
.help                 this help
.tables               the views and the table version each one reads
.schema [VIEW]        columns of one view (or of every view)
.mode table|csv|json  output format (default table)
.timer on|off         print how long each statement took
.quit / .exit         leave (Ctrl-D too)
SQL ends with ';' and may span lines, e.g.
  SELECT symbol_id, hit_count FROM runtime_facts ORDER BY hit_count DESC LIMIT 5;
"""


@dataclass
class ShellState:
    """What the dot commands change."""

    mode: str = "table"
    timer: bool = False
    errors: int = 0
    done: bool = False


def _lines_from(stream: TextIO) -> Iterator[tuple[str, str]]:
    for raw in stream:
        yield raw.rstrip("\n"), ""


def _lines_interactive(state: ShellState) -> Iterator[tuple[str, str]]:
    pending = False
    while not state.done:
        try:
            line = input(CONTINUE if pending else PROMPT)
        except EOFError:
            return
        except KeyboardInterrupt:
            pending = False
            yield "", "cancel"
            continue
        stripped = line.strip()
        if stripped.endswith(";"):
            pending = False
        elif stripped and (pending or not stripped.startswith(".")):
            pending = True  # inside a statement: dot commands only stand alone
        yield line, ""


def run_shell(
    conn: FactsConnection,
    stdin: TextIO,
    stdout: TextIO,
    stderr: TextIO,
    *,
    interactive: bool = False,
    mode: str = "table",
) -> int:
    """Read statements until EOF or `.quit`; returns how many failed."""
    state = ShellState(mode=mode)
    write: Callable[[str], object] = stdout.write
    if interactive:
        _enable_readline()
        scope = f"tenant {conn.tenant}" if conn.tenant else "all tenants"
        write(f"runtime-facts shell · {scope} · views: {', '.join(VIEWS)}\n")
        write("Enter .help for usage hints.\n")
    source = _lines_interactive(state) if interactive else _lines_from(stdin)
    buffer: list[str] = []
    for line, signal in source:
        if signal == "cancel":
            buffer = []
            write("\n")
            continue
        stripped = line.strip()
        if not buffer and stripped.startswith("."):
            _dot(conn, stripped, state, stdout, stderr)
            if state.done:
                break
            continue
        if not buffer and not stripped:
            continue
        buffer.append(line)
        if stripped.endswith(";"):
            _execute(conn, "\n".join(buffer), state, stdout, stderr)
            buffer = []
    if buffer and "".join(buffer).strip():
        _execute(conn, "\n".join(buffer), state, stdout, stderr)
    if interactive:
        _save_history()
    return state.errors


def _execute(
    conn: FactsConnection, sql: str, state: ShellState, stdout: TextIO, stderr: TextIO
) -> None:
    try:
        result = conn.sql(sql)
    except RuntimeFactsError as exc:
        state.errors += 1
        stderr.write(f"Error: {exc.message}\n")
        return
    if result.table.num_columns:
        stdout.write(render(result.table, state.mode))
    if state.timer:
        stdout.write(f"Run Time: {result.seconds:.3f}s\n")


def _dot(
    conn: FactsConnection, command: str, state: ShellState, stdout: TextIO, stderr: TextIO
) -> None:
    name, _, arg = command.partition(" ")
    arg = arg.strip().rstrip(";")
    if name in (".quit", ".exit", ".q"):
        state.done = True
    elif name == ".help":
        stdout.write(HELP)
    elif name == ".tables":
        for view in VIEWS:
            version = conn.versions.get(view)
            if version is not None:
                stdout.write(f"{view}  (version {version})\n")
    elif name == ".schema":
        views = [arg] if arg else [v for v in VIEWS if v in conn.versions]
        for view in views:
            if view not in conn.versions:
                state.errors += 1
                stderr.write(f"Error: no view {view!r}; views: {', '.join(conn.versions)}\n")
                continue
            described = conn.sql(f'DESCRIBE "{view}"').table
            stdout.write(f"{view}:\n")
            for column, dtype in zip(
                described.column("column_name").to_pylist(),
                described.column("column_type").to_pylist(),
                strict=True,
            ):
                stdout.write(f"  {column} {dtype}\n")
    elif name == ".mode" and arg in ("table", "csv", "json"):
        state.mode = arg
    elif name == ".timer" and arg in ("on", "off"):
        state.timer = arg == "on"
    else:
        state.errors += 1
        stderr.write(f"Error: unknown or malformed command {command!r}; try .help\n")


def _enable_readline() -> None:
    with contextlib.suppress(ImportError, OSError):
        import readline

        if HISTORY.exists():
            readline.read_history_file(HISTORY)


def _save_history() -> None:
    with contextlib.suppress(ImportError, OSError):
        import readline

        readline.set_history_length(1000)
        readline.write_history_file(HISTORY)
