"""`serve` (run the HTTP staging endpoint) and `serve token add` (mint a bearer token)."""

from __future__ import annotations

import errno
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from runtime_facts.cli.common import HomeOpt, JsonOpt, escape, handles_errors, new_typer, state
from runtime_facts.errors import Reason, UsageError

if TYPE_CHECKING:
    from runtime_facts.config import ServeSettings

TOKEN_FILE_SETTING = "RUNTIME_FACTS__SERVE__TOKEN_FILE"

serve_app = new_typer(
    help="Run the HTTP staging endpoint (POST /signals/runtime-facts/ndjson) and manage tokens.",
    invoke_without_command=True,
    no_args_is_help=False,
)
token_app = new_typer(help="Bearer tokens of the staging endpoint.")
serve_app.add_typer(token_app, name="token")

TokenFileOpt = Annotated[
    Path | None,
    typer.Option("--token-file", help=f"Token file (default: the setting {TOKEN_FILE_SETTING})."),
]


def bind(host: str, port: int) -> socket.socket:
    """Listen on host:port before the server starts, so a busy port is a clear error.

    Raises:
        UsageError: `port_in_use` (exit 2) or another bind failure (`invalid_context`).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(
                Reason.PORT_IN_USE,
                f"{host}:{port} is already in use",
                hint="pick another --port (or settings serve.port), or stop what listens there "
                "(`ss -ltnp` shows it)",
            ) from exc
        raise UsageError(
            Reason.INVALID_CONTEXT,
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            hint="check --host (an address of this machine) and --port (1-65535)",
        ) from exc


def _run(app: Any, sock: socket.socket, cfg: ServeSettings, log_level: str) -> None:
    """Serve the ASGI app on an already bound socket until interrupted."""
    import uvicorn

    from runtime_facts.api.server import server_config

    # The staging endpoint's server: bounded request heads, an upload limit taken after auth.
    uvicorn.Server(server_config(app, cfg, log_level=log_level)).run(sockets=[sock])


@serve_app.callback()
@handles_errors
def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Interface (default 127.0.0.1).")] = None,
    port: Annotated[
        int | None,
        typer.Option(help="TCP port (default 8765; 0 picks a free one).", min=0, max=65535),
    ] = None,
    token_file: TokenFileOpt = None,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level.")] = "info",
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Serve the staging endpoint until interrupted.

    The address is printed once listening (`--json`: {"host", "port", "url"} on stdout).
    A busy port exits 2 (port_in_use).

    Example: runtime-facts serve --host 127.0.0.1 --port 8765 --token-file /etc/rtf/tokens.json
    """
    if ctx.invoked_subcommand is not None:
        return
    from runtime_facts.api import create_app
    from runtime_facts.logs import configure_logging

    st = state(ctx)
    h = st.open_home(home)
    update: dict[str, object] = {}
    if host is not None:
        update["host"] = host
    if port is not None:
        update["port"] = port
    if token_file is not None:
        update["token_file"] = str(token_file)
    serve_cfg = h.settings.serve.replace(**update)
    h.settings = h.settings.replace(serve=serve_cfg)
    sock = bind(serve_cfg.host, serve_cfg.port)
    bound_host, bound_port = sock.getsockname()[:2]
    url = f"http://{f'[{bound_host}]' if ':' in bound_host else bound_host}:{bound_port}"
    if st.wants_json(json_out):
        st.emit({"host": bound_host, "port": bound_port, "url": url, "home": h.uri})
    else:
        st.err.print(f"serving {url} (home {escape(h.uri)})", highlight=False)
    sys.stdout.flush()
    configure_logging()
    app = create_app(h)
    problem = app.state.api.tokens.problem()
    if problem:
        st.err.print(f"[yellow]warning[/] {escape(problem)}: protected routes will answer 401/503")
    _run(app, sock, serve_cfg, log_level)


@token_app.command("add")
@handles_errors
def token_add(
    ctx: typer.Context,
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
    json_out: JsonOpt = False,
) -> None:
    """Mint a random token, append its sha256 to the token file, print the token once.

    The token file is created when missing (mode 0600).

    Example: runtime-facts serve token add --tenant acme --scope signals.runtime:write
    --token-file /etc/runtime-facts/tokens.json
    """
    import orjson

    from runtime_facts.api.auth import add_token, hash_token

    st = state(ctx)
    path = token_file
    if path is None:
        configured = st.open_home(home).settings.serve.token_file
        if configured is None:
            raise UsageError(
                Reason.NO_TOKEN_FILE,
                f"no token file: neither --token-file nor the setting {TOKEN_FILE_SETTING} "
                "(serve.token_file) is set",
                hint=f"pass --token-file PATH (created if missing), or export "
                f"{TOKEN_FILE_SETTING}=PATH for this command and for `runtime-facts serve`",
            )
        path = Path(configured)
    try:
        token = add_token(path, tenant, scope, name)
    except (ValueError, OSError) as exc:
        raise UsageError(Reason.INVALID_CONTEXT, str(exc)) from exc
    if st.wants_json(json_out):
        doc = {"token": token, "sha256": hash_token(token), "tenant": tenant, "scopes": scope}
        sys.stdout.write(orjson.dumps(doc).decode() + "\n")
    else:
        sys.stdout.write(token + "\n")
    st.err.print(f"added to {path}; the token is shown only this once", highlight=False)
