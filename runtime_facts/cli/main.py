"""The `runtime-facts` command line (SPEC §9): the root app, global options, the entry point.

Every command: `--help`, `--json`, stable exit codes (0 ok, 1 unexpected, 2 usage, 3 rejected
or verification failed, 4 not found). The commands live in the sibling modules; this one only
wires them, so importing it loads typer and rich and nothing heavier.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from runtime_facts.cli import analyst, audit, cas, facts, ingest, offline, ops, serve, tools
from runtime_facts.cli.common import CliState, JsonOpt, console, new_typer
from runtime_facts.errors import RuntimeFactsError

app = new_typer(
    help="Runtime reachability evidence: stage batches in CAS, ingest them into Delta facts.",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)

GlobalHomeOpt = Annotated[
    str | None,
    typer.Option(
        "--home",
        envvar="RUNTIME_FACTS_HOME",
        help="Home directory or s3://bucket/prefix (default ./var).",
    ),
]


def _print_version(value: bool) -> None:
    if value:
        from runtime_facts import __version__

        sys.stdout.write(f"runtime-facts {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    home: GlobalHomeOpt = None,
    json_out: JsonOpt = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the package version and exit.",
        ),
    ] = False,
) -> None:
    ctx.obj = CliState(home=home, json=json_out)


app.add_typer(cas.app, name="cas")
app.add_typer(facts.app, name="facts")
app.add_typer(facts.events_app, name="events")
app.add_typer(offline.offline_app, name="offline")
app.add_typer(audit.receipts_app, name="receipts")
app.add_typer(audit.replay_app, name="replay")
app.add_typer(serve.serve_app, name="serve")
for register in (ingest.register, ops.register, analyst.register, tools.register):
    register(app)


def main() -> None:
    """Entry point: structured logs when asked for, exit 1 for an unexpected error."""
    try:
        if os.environ.get("RUNTIME_FACTS__LOG__FORMAT") or os.environ.get(
            "RUNTIME_FACTS__LOG__LEVEL"
        ):
            from runtime_facts.logs import configure_logging

            configure_logging()  # structured logs on stderr when an operator asks for them
        app()
    except RuntimeFactsError as exc:  # pragma: no cover - commands report their own
        console(stderr=True).print(str(exc), highlight=False, markup=False)
        sys.exit(int(exc.exit_code))
