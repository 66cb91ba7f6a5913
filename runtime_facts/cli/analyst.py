"""Analysts' commands: `query`, `shell`, `report` (SPEC §8, §9), over the offline SQL views."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from runtime_facts.cli.common import HomeOpt, JsonOpt, handles_errors, state
from runtime_facts.errors import ExitCode, UsageError

if TYPE_CHECKING:
    from runtime_facts.home import Home

TenantOpt = Annotated[
    str | None,
    typer.Option(help="Only this tenant's rows (the views hide every other tenant)."),
]
AsOfOpt = Annotated[
    str | None,
    typer.Option(
        "--as-of",
        help="Read the tables as of a version number (e.g. 3) or a UTC time "
        "(e.g. 2026-11-26T12:00:00Z); before a table's first version is an error.",
    ),
]


class OutputFormat(StrEnum):
    """Output formats of `query`."""

    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("query")(query_cmd)
    app.command("shell")(shell_cmd)
    app.command("report")(report_cmd)


def _home(ctx: typer.Context, home: str | None) -> Home:
    try:
        return state(ctx).open_home(home, must_exist=True)
    except NotImplementedError as exc:
        raise UsageError("unsupported_home", str(exc), hint="use a local home directory") from exc


@handles_errors
def query_cmd(
    ctx: typer.Context,
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

    SQL errors exit 2 with DuckDB's message; a missing home, table or version exits 4.

    Example: runtime-facts query "SELECT symbol_id, hit_count FROM runtime_facts
    ORDER BY hit_count DESC LIMIT 10" --tenant acme --format csv
    """
    from runtime_facts.analyst.query import run_query
    from runtime_facts.analyst.query_output import render, write_output

    st = state(ctx)
    as_json = st.wants_json(json_out)
    chosen = OutputFormat.json if json_out else fmt
    text = sys.stdin.read() if sql == "-" else sql
    if not text.strip():
        raise UsageError("sql_error", "empty SQL", hint='pass a statement, e.g. "SELECT 1"')
    if chosen is OutputFormat.parquet and out_file is None:
        raise UsageError(
            "missing_output", "--format parquet needs --out FILE", hint="add --out facts.parquet"
        )
    result = run_query(_home(ctx, home), text, tenant=tenant, as_of=as_of)
    if out_file is not None:
        try:
            write_output(result.table, chosen.value, out_file)
        except OSError as exc:
            raise UsageError(
                "output_unwritable",
                f"cannot write {out_file}: {exc.strerror or exc}",
                hint="check that the folder exists and is writable",
            ) from exc
        summary = {
            "path": str(out_file),
            "format": chosen.value,
            "rows": result.table.num_rows,
            "versions": result.versions,
        }
        if as_json and chosen is not OutputFormat.json:
            st.emit(summary)
        else:
            st.err.print(f"wrote {result.table.num_rows} rows to {out_file}", highlight=False)
        return
    if as_json and not json_out and chosen is not OutputFormat.json:
        chosen = OutputFormat.json  # the global --json asks for machine output
    sys.stdout.write(render(result.table, chosen.value))


@handles_errors
def shell_cmd(
    ctx: typer.Context,
    tenant: TenantOpt = None,
    as_of: AsOfOpt = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Interactive SQL prompt over the fact views (DuckDB dialect, .help for commands).

    Piped input runs as a script and exits 2 if any statement failed.

    Example: echo "SELECT count(*) FROM runtime_facts;" | runtime-facts shell --tenant acme
    """
    from runtime_facts.analyst.query import connect
    from runtime_facts.analyst.shell import run_shell

    as_json = state(ctx).wants_json(json_out)
    conn = connect(_home(ctx, home), tenant=tenant, as_of=as_of)
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


@handles_errors
def report_cmd(
    ctx: typer.Context,
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
    from runtime_facts.analyst.report import write_report
    from runtime_facts.pipeline.outcomes import utc_now

    st = state(ctx)
    try:
        info = write_report(
            _home(ctx, home), out_file, tenant=tenant, now=utc_now(), as_of=as_of, top=top
        )
    except OSError as exc:
        raise UsageError(
            "output_unwritable",
            f"cannot write {out_file}: {exc.strerror or exc}",
            hint="check that the folder is writable",
        ) from exc
    if st.wants_json(json_out):
        st.emit(info)
    else:
        sys.stdout.write(f"{info['path']}\n")
        st.err.print(f"{len(info['charts'])} charts, {info['bytes']} bytes", highlight=False)
