"""What every command shares: the per-run state, consoles, options and the one error wrapper.

Nothing here imports polars, pyarrow, deltalake or duckdb: `--help` and a mistyped command
must cost what typer and rich cost. Commands import the jobs they call inside their bodies.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar

import orjson
import typer

from runtime_facts.errors import NotFoundError, Reason, RuntimeFactsError

if TYPE_CHECKING:
    from rich.console import Console

    from runtime_facts.home import Home

P = ParamSpec("P")
R = TypeVar("R")

PIPE_WIDTH = 100_000
"""Console width when output is not a terminal: nothing piped is ever wrapped or cut."""

HomeOpt = Annotated[
    str | None,
    typer.Option("--home", help="Home directory or s3:// URI (overrides the global --home)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


def new_typer(**kwargs: Any) -> typer.Typer:
    """A Typer with the house defaults.

    Help is plain text (`rich_markup_mode=None`): Rich markup would eat the `[...]` of regexes
    in help strings, and the Rich panels show a `<bool>` value for flags that take none.
    """
    kwargs.setdefault("no_args_is_help", True)
    return typer.Typer(rich_markup_mode=None, pretty_exceptions_enable=False, **kwargs)


def console(*, stderr: bool = False) -> Console:
    """A console for stdout (results) or stderr (progress, notes, errors).

    On a terminal it takes the terminal's width; piped or redirected it never wraps, so a
    `cas://` URI or an error message stays on one line for grep, cut and scripts.
    """
    from rich.console import Console  # imported on first output: `--help` never needs it

    return Console(
        stderr=stderr, soft_wrap=True, width=None if is_tty(stderr=stderr) else PIPE_WIDTH
    )


def escape(text: str) -> str:
    """Rich markup escaped (rich.markup is imported on first use)."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def is_tty(*, stderr: bool = True) -> bool:
    """Whether the stream is a terminal (progress bars are drawn only there)."""
    stream = sys.stderr if stderr else sys.stdout
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


@dataclass
class CliState:
    """Options of the root command, handed to every command through typer's context."""

    home: str | None = None
    json: bool = False
    _out: Console | None = field(default=None, repr=False)
    _err: Console | None = field(default=None, repr=False)

    @property
    def out(self) -> Console:
        """Console for results (stdout)."""
        if self._out is None:
            self._out = console()
        return self._out

    @property
    def err(self) -> Console:
        """Console for progress, notes and errors (stderr)."""
        if self._err is None:
            self._err = console(stderr=True)
        return self._err

    def spinner(self, what: str, json_out: bool = False) -> AbstractContextManager[Any]:
        """A progress spinner on stderr for people; nothing in JSON mode."""
        return nullcontext() if self.wants_json(json_out) else self.err.status(escape(what))

    def wants_json(self, local: bool = False) -> bool:
        """The command's own `--json` or the global one."""
        return local or self.json

    def open_home(self, home: str | None = None, *, must_exist: bool = False) -> Home:
        """The home of this run: the command's `--home`, else the global one, else the default.

        Args:
            home: the command's own `--home`.
            must_exist: a read command: a local home that does not exist is an error (exit 4)
                rather than an empty home that looks healthy.
        """
        from runtime_facts.config import Settings
        from runtime_facts.home import Home

        opened = Home(Settings.load(home or self.home))
        if must_exist:
            require_home(opened)
        return opened

    def emit(self, doc: Any) -> None:
        """Write one JSON document to stdout."""
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2, default=str).decode() + "\n")

    def fail(self, exc: RuntimeFactsError, json_out: bool = False) -> None:
        """Report a typed error (reason code, message, hint) and exit with its code."""
        if self.wants_json(json_out):
            self.emit({"error": exc.reason, "message": exc.message, "hint": exc.hint})
        else:
            self.err.print(
                f"[bold red]error[/] {escape(f'[{exc.reason}]')} {escape(exc.message)}",
                highlight=False,
            )
            if exc.hint:
                self.err.print(f"  [dim]hint:[/] {escape(exc.hint)}", highlight=False)
        raise typer.Exit(int(exc.exit_code))


def require_home(home: Home) -> None:
    """Raise `home_not_found` (exit 4) when a local home does not exist.

    An object-store home is not checked here: a bucket prefix exists once written, and an
    unreachable store fails on first use with its own error (`runtime-facts doctor` says which).
    """
    if home.remote:
        return
    if not home.root.is_dir():
        raise NotFoundError(
            Reason.HOME_NOT_FOUND,
            f"no home at {home.root}",
            hint="check --home / RUNTIME_FACTS_HOME (default ./var, relative to the current "
            "folder); `runtime-facts doctor` prints the home in use",
        )


def state(ctx: typer.Context | None) -> CliState:
    """The run's state, set on the root context by the root callback (a default one without)."""
    if ctx is None:
        return CliState()
    found = ctx.find_object(CliState)
    return found if found is not None else ctx.ensure_object(CliState)


def handles_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Map the product's typed errors to SPEC §9 exit codes (2 usage, 3 rejected, 4 not found).

    The wrapped command takes `ctx: typer.Context`; its own `--json` (a `json_out` parameter)
    or the global one selects a JSON error document on stdout, otherwise the reason code,
    message and hint go to stderr.
    """

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except RuntimeFactsError as exc:
            # typer hands in its click context (not always a typer.Context instance).
            found: list[Any] = [kwargs.get("ctx"), *args]
            ctx = next((c for c in found if hasattr(c, "find_object")), None)
            state(ctx).fail(exc, bool(kwargs.get("json_out", False)))
            raise  # pragma: no cover - fail() always exits

    return wrapper


def existing_file(path: Path) -> Path:
    """The path, or `file_not_found` (exit 4) when there is no such local file."""
    if not path.exists():
        raise NotFoundError(
            Reason.FILE_NOT_FOUND,
            f"no such file: {path}",
            hint="check the path (relative paths start from the current folder)",
        )
    return path
