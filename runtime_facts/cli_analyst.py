"""CLI for analysts and operators: `query`, `shell`, `report`, `doctor` (SPEC §8, §9).

Registered on the main app at the end of `runtime_facts.cli`; the shared helpers (`_home`,
`_emit`, `_fail`, the global `--json`/`--home`) are imported from there lazily, since that
module imports this one.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from runtime_facts.errors import ExitCode, RuntimeFactsError, UsageError
from runtime_facts.home import Home

out = Console(soft_wrap=True)
err = Console(stderr=True)

HomeOpt = Annotated[
    str | None, typer.Option("--home", help="Home directory (overrides the global --home).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]
TenantOpt = Annotated[
    str | None,
    typer.Option(help="Only this tenant's rows (the views hide every other tenant)."),
]
AsOfOpt = Annotated[
    str | None,
    typer.Option(
        "--as-of",
        help="Read the tables as of a version number (e.g. 3) or a UTC time "
        "(e.g. 2026-11-26T12:00:00Z).",
    ),
]


class OutputFormat(StrEnum):
    """Output formats of `query`."""

    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


def _json(json_out: bool) -> bool:
    from runtime_facts.cli import STATE

    return json_out or STATE.json


def _home(home: str | None) -> Home:
    from runtime_facts.cli import _home as home_from

    try:
        return home_from(home)
    except NotImplementedError as exc:
        raise UsageError("unsupported_home", str(exc), hint="use a local home directory") from exc


def _emit(doc: Any) -> None:
    from runtime_facts.cli import _emit as emit

    emit(doc, True)


def _fail(exc: RuntimeFactsError, json_out: bool) -> None:
    from runtime_facts.cli import _fail as fail

    fail(exc, json_out)


def query_cmd(
    sql: Annotated[str, typer.Argument(help="SQL over the views; `-` reads it from stdin.")],
    tenant: TenantOpt = None,
    as_of: AsOfOpt = None,
    fmt: Annotated[
        OutputFormat, typer.Option("--format", "-f", help="table, csv, json or parquet.")
    ] = OutputFormat.table,
    out_file: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write to this file (parquet needs one).")
    ] = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Run SQL over the fact tables, offline: no DuckDB extension is installed or loaded.

    Views: runtime_facts runtime_fact_batches reachability_states ingest_receipts rejections

    SQL errors exit 2 with DuckDB's message; a missing table or version exits 4.

    Example: runtime-facts query "SELECT symbol_id, hit_count FROM runtime_facts
    ORDER BY hit_count DESC LIMIT 10" --tenant acme --format csv
    """
    from runtime_facts.query import run_query
    from runtime_facts.query_output import render, write_output

    as_json = _json(json_out)
    chosen = OutputFormat.json if json_out else fmt
    try:
        text = sys.stdin.read() if sql == "-" else sql
        if not text.strip():
            raise UsageError("sql_error", "empty SQL", hint='pass a statement, e.g. "SELECT 1"')
        if chosen is OutputFormat.parquet and out_file is None:
            raise UsageError(
                "missing_output",
                "--format parquet needs --out FILE",
                hint="add --out facts.parquet",
            )
        result = run_query(_home(home), text, tenant=tenant, as_of=as_of)
        if out_file is not None:
            try:
                write_output(result.table, chosen.value, out_file)
            except OSError as exc:
                raise UsageError(
                    "output_unwritable",
                    f"cannot write {out_file}: {exc.strerror or exc}",
                    hint="check that the folder exists and is writable",
                ) from exc
    except RuntimeFactsError as exc:
        _fail(exc, as_json)
        return
    if out_file is not None:
        summary = {
            "path": str(out_file),
            "format": chosen.value,
            "rows": result.table.num_rows,
            "versions": result.versions,
        }
        if as_json and chosen is not OutputFormat.json:
            _emit(summary)
        else:
            err.print(f"wrote {result.table.num_rows} rows to {out_file}", highlight=False)
        return
    if as_json and not json_out and chosen is not OutputFormat.json:
        chosen = OutputFormat.json  # the global --json asks for machine output
    sys.stdout.write(render(result.table, chosen.value))


def shell_cmd(
    tenant: TenantOpt = None,
    as_of: AsOfOpt = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Interactive SQL prompt over the fact views (DuckDB dialect, .help for commands).

    Piped input runs as a script and exits 2 if any statement failed.

    Example: echo "SELECT count(*) FROM runtime_facts;" | runtime-facts shell --tenant acme
    """
    from runtime_facts.query import connect
    from runtime_facts.shell import run_shell

    as_json = _json(json_out)
    try:
        conn = connect(_home(home), tenant=tenant, as_of=as_of)
    except RuntimeFactsError as exc:
        _fail(exc, as_json)
        return
    interactive = sys.stdin.isatty()
    with conn:
        errors = run_shell(
            conn,
            sys.stdin,
            sys.stdout,
            sys.stderr,
            interactive=interactive,
            mode="json" if as_json else "table",
        )
    if errors and not interactive:
        raise typer.Exit(int(ExitCode.USAGE))


def report_cmd(
    out_file: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write.")] = Path(
        "report.html"
    ),
    tenant: Annotated[
        str | None, typer.Option(help="Report on one tenant (default: every tenant).")
    ] = None,
    as_of: AsOfOpt = None,
    top: Annotated[int, typer.Option(help="How many top symbols to show.", min=1)] = 15,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Write a self-contained HTML report (inline SVG charts, no scripts, nothing fetched).

    Example: runtime-facts report --tenant acme --out report.html
    """
    from runtime_facts.pipeline.outcomes import utc_now
    from runtime_facts.report import write_report

    as_json = _json(json_out)
    try:
        try:
            info = write_report(
                _home(home), out_file, tenant=tenant, now=utc_now(), as_of=as_of, top=top
            )
        except OSError as exc:
            raise UsageError(
                "output_unwritable",
                f"cannot write {out_file}: {exc.strerror or exc}",
                hint="check that the folder is writable",
            ) from exc
    except RuntimeFactsError as exc:
        _fail(exc, as_json)
        return
    if as_json:
        _emit(info)
    else:
        sys.stdout.write(f"{info['path']}\n")
        err.print(f"{len(info['charts'])} charts, {info['bytes']} bytes", highlight=False)


_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}


def doctor_cmd(
    sample: Annotated[int, typer.Option(help="How many random CAS objects to rehash.", min=0)] = 20,
    seed: Annotated[int, typer.Option(help="Seed of the random CAS sample.")] = 0,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Check a home's health; exit 3 when a check fails.

    Checks: home writable, seeded CAS sample rehash, tables, receipts chain, metrics file.

    Example: runtime-facts doctor --sample 50 --json
    """
    from runtime_facts.ops.doctor import run_doctor
    from runtime_facts.pipeline.outcomes import utc_now

    as_json = _json(json_out)
    try:
        report = run_doctor(_home(home), sample=sample, seed=seed, now=utc_now())
    except RuntimeFactsError as exc:
        _fail(exc, as_json)
        return
    if as_json:
        _emit(report.to_dict())
    else:
        table = Table(title=f"doctor: {report.home}", show_lines=False)
        table.add_column("check")
        table.add_column("status")
        table.add_column("summary", overflow="fold")
        for check in report.checks:
            summary = escape(check.summary)
            if check.hint and check.status in ("warn", "fail"):
                summary += f"\n[dim]hint: {escape(check.hint)}[/]"
            style = _STYLE[check.status]
            table.add_row(check.name, f"[{style}]{check.status}[/]", summary)
        out.print(table)
        settings = next(c for c in report.checks if c.name == "config").details["settings"]
        out.print(_flatten(settings), highlight=False)
    raise typer.Exit(int(ExitCode.OK if report.ok else ExitCode.REJECTED))


def _flatten(settings: dict[str, Any], prefix: str = "") -> str:
    lines = []
    for key, value in settings.items():
        if isinstance(value, dict):
            lines.append(_flatten(value, f"{prefix}{key}."))
        else:
            lines.append(f"  {prefix}{key} = {value}")
    return "\n".join(lines)
