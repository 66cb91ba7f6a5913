"""`cas put`, `cas put-graph`, `cas verify`: stage and verify objects in the CAS (SPEC §3)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from runtime_facts.cli.common import (
    CliState,
    HomeOpt,
    JsonOpt,
    escape,
    existing_file,
    handles_errors,
    is_tty,
    new_typer,
    state,
)
from runtime_facts.errors import ExitCode, NotFoundError, Reason, RuntimeFactsError

app = new_typer(help="Stage and verify objects in the content-addressed store.")

BATCH_PATTERNS = ("*.ndjson.gz", "*.ndjson")
"""What a folder given to `cas put` stands for: its batch files (not recursive), sorted."""

SUBJECT_HELP = "One of --image-digest, --scan-id or --component with --version is required."


def batch_files(paths: list[Path]) -> list[Path]:
    """Expand folders into their `*.ndjson.gz` / `*.ndjson` files, sorted; keep files as given.

    Raises:
        NotFoundError: a path does not exist, or a folder holds no batch file
            (`file_not_found`, exit 4); nothing is staged then.
    """
    found: list[Path] = []
    for path in paths:
        existing_file(path)
        if not path.is_dir():
            found.append(path)
            continue
        inside = sorted(
            {p for pattern in BATCH_PATTERNS for p in path.glob(pattern) if p.is_file()}
        )
        if not inside:
            raise NotFoundError(
                Reason.FILE_NOT_FOUND,
                f"no *.ndjson.gz or *.ndjson file in {path}",
                hint="a folder given to `cas put` stands for its batch files (not sub-folders)",
            )
        found.extend(inside)
    return found


@contextmanager
def _progress(st: CliState, total: int, quiet: bool) -> Iterator[Any]:
    """A progress bar on a terminal's stderr; `advance()` is a no-op everywhere else."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=st.err,
        disable=quiet or total < 2 or not is_tty(),
        transient=True,
    ) as progress:
        task = progress.add_task("staging", total=total)
        yield lambda: progress.advance(task)


@app.command("put")
@handles_errors
def cas_put(
    ctx: typer.Context,
    files: Annotated[
        list[Path],
        typer.Argument(
            help="Batch files (.ndjson.gz; see the runbook for plain .ndjson) or folders: "
            "a folder stands for its *.ndjson.gz and *.ndjson files, sorted.",
            metavar="PATH",
            show_default=False,
        ),
    ],
    tenant: Annotated[str, typer.Option(help="Tenant, lower-case [a-z0-9][a-z0-9._-]{0,63}.")],
    callgraph_id: Annotated[
        str, typer.Option("--callgraph-id", help="Callgraph the batches belong to.")
    ],
    image_digest: Annotated[
        str | None,
        typer.Option("--image-digest", help=f"Subject: a container image digest. {SUBJECT_HELP}"),
    ] = None,
    scan_id: Annotated[
        str | None, typer.Option("--scan-id", help=f"Subject: a scan id. {SUBJECT_HELP}")
    ] = None,
    component: Annotated[
        str | None,
        typer.Option("--component", help="Subject: a component name (with --version)."),
    ] = None,
    version: Annotated[
        str | None,
        typer.Option("--version", help="Subject: the component's version (with --component)."),
    ] = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Stage batches in CAS and print one cas:// URI per file.

    Exit 0 when every file is staged, 3 when any was refused (the others are staged), 4 when
    a file or folder does not exist (then nothing is staged).

    Example: runtime-facts cas put chunks/ --tenant acme --callgraph-id cg-1 --scan-id s-42
    """
    from runtime_facts.pipeline.stage import stage_batch
    from runtime_facts.subject import SubjectContext

    st = state(ctx)
    as_json = st.wants_json(json_out)
    subject = SubjectContext(tenant, callgraph_id, image_digest, scan_id, component, version)
    paths = batch_files(files)
    target = st.open_home(home)
    docs: list[dict[str, Any]] = []
    refused = 0
    with _progress(st, len(paths), as_json) as advance:
        for path in paths:
            try:
                result = stage_batch(target, path, subject)
            except RuntimeFactsError as exc:
                refused += 1
                docs.append(
                    {
                        "file": str(path),
                        "error": exc.reason,
                        "message": exc.message,
                        "hint": exc.hint,
                    }
                )
                if not as_json:
                    st.err.print(
                        f"[yellow]refused[/] {escape(str(path))}: "
                        f"{escape(f'[{exc.reason}]')} {escape(exc.message)}",
                        highlight=False,
                    )
                    if exc.hint:
                        st.err.print(f"  [dim]hint:[/] {escape(exc.hint)}", highlight=False)
            else:
                docs.append({"file": str(path), **result.to_json()})
                if not as_json:
                    sys.stdout.write(result.uri + "\n")
            advance()
    staged = [d["uri"] for d in docs if "uri" in d]
    if staged:
        from runtime_facts.stores.airflow_api import RUNTIME_ASSET, announce_staged

        extra = {"source": "cas put", "tenant": tenant, "batches": len(staged)}
        announce_staged(target.settings.airflow, RUNTIME_ASSET, {**extra, "casUris": staged[:100]})
    if as_json:
        st.emit(docs)
    else:
        _summary(st, docs, refused)
    raise typer.Exit(ExitCode.REJECTED if refused else ExitCode.OK)


def _summary(st: CliState, docs: list[dict[str, Any]], refused: int) -> None:
    staged = [d for d in docs if "uri" in d]
    old = sum(1 for d in staged if not d["created"])
    if len(docs) == 1:
        if old:
            st.err.print("[dim]already staged: nothing written[/]")
        return
    st.err.print(
        f"staged {len(staged)} of {len(docs)} files ({len(staged) - old} new, {old} already "
        f"staged){f', {refused} refused' if refused else ''}",
        highlight=False,
    )


@app.command("verify")
@handles_errors
def cas_verify(
    ctx: typer.Context,
    digests: Annotated[
        list[str] | None, typer.Argument(help="Runtime batch digests to check.")
    ] = None,
    all_objects: Annotated[bool, typer.Option("--all", help="Rehash every object.")] = False,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Rehash CAS objects; exit 3 if any does not match its address, 4 if the home is missing.

    Example: runtime-facts cas verify --all
    """
    from runtime_facts.pipeline.stage import verify_cas

    st = state(ctx)
    target = st.open_home(home, must_exist=True)
    shas = None if all_objects or not digests else digests
    report = verify_cas(target, shas)
    if st.wants_json(json_out):
        st.emit({"checked": report.checked, "ok": report.ok, "bad": report.bad})
    else:
        for kind, sha, reason in report.bad:
            st.err.print(f"[red]{reason}[/] cas://reachability/{kind}/{sha}", highlight=False)
        st.out.print(
            f"checked {report.checked} objects: {'ok' if report.ok else f'{len(report.bad)} bad'}",
            highlight=False,
        )
    raise typer.Exit(ExitCode.OK if report.ok else ExitCode.REJECTED)


@app.command("put-graph")
@handles_errors
def cas_put_graph(
    ctx: typer.Context,
    file: Annotated[
        Path, typer.Argument(help="A runtime-facts.callgraph.v1 JSON (gzip or plain).")
    ],
    tenant: Annotated[str, typer.Option(help="Tenant the graph belongs to.")],
    recompute: Annotated[
        bool, typer.Option("--recompute/--no-recompute", help="Re-score its subjects now.")
    ] = True,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Validate a callgraph, store it in CAS and make it current for its callgraphId.

    Example: runtime-facts cas put-graph graph.json.gz --tenant acme
    """
    from runtime_facts.pipeline.outcomes import utc_now
    from runtime_facts.pipeline.score import recompute as recompute_job
    from runtime_facts.stores.graphs import stage_graph

    st = state(ctx)
    existing_file(file)
    target = st.open_home(home)
    staged = stage_graph(target, file, tenant, utc_now())
    changed = (
        recompute_job(target, tenant, staged.callgraph_id, None, utc_now()).changed
        if recompute
        else []
    )
    if not recompute:  # let Airflow's reachability_recompute re-score the subjects
        from runtime_facts.stores.airflow_api import GRAPHS_ASSET, announce_staged

        announce_staged(
            target.settings.airflow,
            GRAPHS_ASSET,
            {"tenant": tenant, "callgraphId": staged.callgraph_id, "casUri": staged.uri},
        )
    if st.wants_json(json_out):
        st.emit({**staged.__dict__, "recomputed_subjects": changed})
    else:
        sys.stdout.write(staged.uri + "\n")
        st.err.print(
            f"{staged.callgraph_id}: {staged.nodes} nodes, {staged.edges} edges; "
            f"{len(changed)} subject(s) re-scored",
            highlight=False,
        )
