"""CLI for the staging endpoint: `serve` (run it) and `serve token add` (mint a bearer token).

Registered on the main app at the end of `runtime_facts.cli`; helpers come from there lazily.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from runtime_facts.errors import ExitCode

err = Console(stderr=True)

serve_app = typer.Typer(
    help="Run the HTTP staging endpoint (POST /signals/runtime-facts/ndjson) and manage tokens.",
    invoke_without_command=True,
)
token_app = typer.Typer(help="Bearer tokens of the staging endpoint.", no_args_is_help=True)
serve_app.add_typer(token_app, name="token")

HomeOpt = Annotated[
    str | None, typer.Option("--home", help="Home directory (overrides the global --home).")
]
TokenFileOpt = Annotated[
    Path | None,
    typer.Option("--token-file", help="Token file (default: settings serve.token_file)."),
]


@serve_app.callback()
def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Interface (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port (default 8080).")] = None,
    token_file: TokenFileOpt = None,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level.")] = "info",
    home: HomeOpt = None,
) -> None:
    """Serve the staging endpoint until interrupted.

    Example: runtime-facts serve --host 127.0.0.1 --port 8080 --token-file /etc/rtf/tokens.json
    """
    if ctx.invoked_subcommand is not None:
        return
    from runtime_facts.api.server import serve as serve_endpoint
    from runtime_facts.cli import _home
    from runtime_facts.logs import configure_logging

    h = _home(home)
    update: dict[str, object] = {}
    if host is not None:
        update["host"] = host
    if port is not None:
        update["port"] = port
    if token_file is not None:
        update["token_file"] = str(token_file)
    serve_cfg = h.settings.serve.model_copy(update=update)
    h.settings = h.settings.model_copy(update={"serve": serve_cfg})
    configure_logging()
    serve_endpoint(
        h, log_level=log_level, warn=lambda text: err.print(f"[yellow]warning[/] {escape(text)}")
    )


@token_app.command("add")
def token_add(
    tenant: Annotated[str, typer.Option(help="Tenant the token acts for.")],
    scope: Annotated[
        list[str],
        typer.Option(
            "--scope",
            help="signals.runtime:write, signals:read or signals.reachability:recompute "
            "(repeat for several).",
        ),
    ],
    name: Annotated[str | None, typer.Option(help="A label for operators.")] = None,
    token_file: TokenFileOpt = None,
    home: HomeOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")] = False,
) -> None:
    """Mint a random token, append its sha256 to the token file, print the token once.

    Example: runtime-facts serve token add --tenant acme --scope signals.runtime:write
    """
    import orjson

    from runtime_facts.api.auth import add_token, hash_token
    from runtime_facts.cli import STATE, _home

    path = token_file
    if path is None:
        configured = _home(home).settings.serve.token_file
        if configured is None:
            err.print("[bold red]error[/] no token file: pass --token-file or set serve.token_file")
            raise typer.Exit(ExitCode.USAGE)
        path = Path(configured)
    try:
        token = add_token(path, tenant, scope, name)
    except (ValueError, OSError) as exc:
        err.print(f"[bold red]error[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(ExitCode.USAGE) from exc
    if json_out or STATE.json:
        doc = {"token": token, "sha256": hash_token(token), "tenant": tenant, "scopes": scope}
        sys.stdout.write(orjson.dumps(doc).decode() + "\n")
    else:
        sys.stdout.write(token + "\n")
    err.print(f"added to {path}; the token is shown only this once", highlight=False)
