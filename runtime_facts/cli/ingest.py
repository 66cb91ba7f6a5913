"""`ingest` (staged batches, a kit, or `--retry` of rejected digests) and `recompute`."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from runtime_facts.cli.common import HomeOpt, JsonOpt, escape, handles_errors, is_tty, state
from runtime_facts.errors import ExitCode, NotFoundError, Reason, UsageError

if TYPE_CHECKING:
    from rich.console import Console

    from runtime_facts.home import Home

_DIGEST_RE = re.compile(r"^(?:cas://reachability/runtime/)?([0-9a-f]{64})$")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("ingest")(ingest_cmd)
    app.command("recompute")(recompute_cmd)


def retry_digests(home: Home, values: list[str]) -> list[str]:
    """The digests given to `--retry` (bare sha256 or `cas://` URI), each one staged.

    Raises:
        UsageError: a value is not a runtime batch digest (exit 2).
        NotFoundError: a digest is not staged in this home (`cas_miss`, exit 4).
    """
    shas: list[str] = []
    for value in values:
        match = _DIGEST_RE.fullmatch(value.strip().lower())
        if match is None:
            raise UsageError(
                Reason.INVALID_CONTEXT,
                f"--retry {value!r} is not a batch digest",
                hint="pass the 64-hex sha256 of a receipt (or its cas://reachability/runtime/ URI)",
            )
        sha = match.group(1)
        if not home.cas.exists("runtime", sha):
            raise NotFoundError(
                Reason.CAS_MISS,
                f"CAS miss: cas://reachability/runtime/{sha} is not staged in {home.uri}",
                hint='check the digest against `runtime-facts query "SELECT batch_sha256, status '
                'FROM ingest_receipts"`, or stage the batch again with `cas put`',
            )
        shas.append(sha)
    return sorted(set(shas))


@handles_errors
def ingest_cmd(
    ctx: typer.Context,
    from_kit: Annotated[
        Path | None, typer.Option("--from", help="Verify, load and ingest an offline kit.")
    ] = None,
    retry: Annotated[
        list[str] | None,
        typer.Option(
            "--retry",
            metavar="SHA",
            help="Re-attempt this rejected batch (after its cause was fixed); repeat for "
            "several. An accepted batch stays a duplicate.",
        ),
    ] = None,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's batches.")] = None,
    allow_partial: Annotated[
        bool | None,
        typer.Option(
            "--allow-partial/--strict",
            help="Quarantine bad lines and ingest the rest, or reject a batch with any bad "
            "line (default: the setting ingest.allow_partial, false).",
            show_default=False,
        ),
    ] = None,
    sealed: Annotated[
        bool,
        typer.Option(
            "--sealed", help="Sealed mode: verified evidence only (on when the setting is)."
        ),
    ] = False,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Ingest every staged batch not yet ingested (or a kit, or --retry digests).

    A rejected digest is final for scheduled ingest; `--retry SHA` attempts it again and the
    attempt gets its own receipt. Exit 3 on any rejection, 4 when the home or a digest is
    missing.

    Example: runtime-facts ingest --tenant acme  ·  runtime-facts ingest --from ./kit  ·
    runtime-facts ingest --retry 3f5c…
    """
    from runtime_facts.pipeline.ingest import ingest
    from runtime_facts.pipeline.outcomes import BatchOutcome
    from runtime_facts.pipeline.prepare import discover_pending
    from runtime_facts.pipeline.publish import write_metrics

    st = state(ctx)
    quiet = st.wants_json(json_out)
    if from_kit is not None and retry:
        raise UsageError(
            Reason.INVALID_CONTEXT,
            "--retry and --from do not go together",
            hint="retry a kit's rejected batch by its digest, without --from",
        )
    h = st.open_home(home, must_exist=from_kit is None)
    if retry:
        todo = retry_digests(h, retry)
    else:
        todo = [] if from_kit is not None else discover_pending(h, tenant)
    with _progress(st.err, len(todo), shown=bool(todo) and not quiet and is_tty()) as advance:

        def tick(outcome: BatchOutcome) -> None:
            advance()
            if outcome.status == "rejected" and not quiet:
                st.err.print(
                    f"[yellow]rejected[/] {outcome.batch_sha256} "
                    f"{escape(', '.join(outcome.reason_codes))}: {escape(str(outcome.detail))}",
                    highlight=False,
                )

        if from_kit is not None:
            from runtime_facts.ops.offline import ingest_kit

            summary = ingest_kit(
                h,
                from_kit,
                tenant=tenant,
                sealed=sealed,
                allow_partial=allow_partial,
                on_batch=tick,
            )
        else:
            summary = ingest(
                h,
                todo,
                tenant=tenant,
                allow_partial=allow_partial,
                sealed=sealed or None,
                on_batch=tick,
            )
    write_metrics(h)  # the Prometheus textfile, recomputed from the receipts (as the DAG does)
    if quiet:
        st.emit(summary.to_dict())
    else:
        st.out.print(
            f"batches {summary.batches} (accepted {summary.accepted}, rejected {summary.rejected}, "
            f"duplicate {summary.duplicate}) · events {summary.events} · keys {summary.keys} · "
            f"rejected lines {summary.rejected_lines}",
            highlight=False,
        )
    raise typer.Exit(ExitCode.REJECTED if summary.rejected else ExitCode.OK)


@contextlib.contextmanager
def _progress(console: Console, total: int, *, shown: bool) -> Iterator[Callable[[], None]]:
    """A transient progress bar on stderr, or nothing (rich.progress is imported only then)."""
    if not shown:
        yield lambda: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("[progress.description]{task.description}"), BarColumn(),
               MofNCompleteColumn(), TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("ingesting", total=total)
        yield lambda: progress.advance(task)


@handles_errors
def recompute_cmd(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Option(help="Tenant.")],
    callgraph_id: Annotated[str, typer.Option("--callgraph-id", help="Callgraph id.")],
    subject: Annotated[
        str | None, typer.Option(help="One subject key, e.g. scan:s-42 (default: all).")
    ] = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Recompute reachability states; unchanged subjects are left alone and emit no event.

    Exit 4 when the home, the callgraph (no facts, no graph) or the subject is unknown.

    Example: runtime-facts recompute --tenant acme --callgraph-id cg-1 --subject scan:s-42
    """
    from runtime_facts.ops.facts import check_recompute_target
    from runtime_facts.pipeline.outcomes import utc_now
    from runtime_facts.pipeline.score import recompute

    st = state(ctx)
    h = st.open_home(home, must_exist=True)
    check_recompute_target(h, tenant, callgraph_id, subject)
    result = recompute(h, tenant, callgraph_id, subject, utc_now())
    if st.wants_json(json_out):
        st.emit({"subjects": result.subjects, "changed": result.changed, "events": result.events})
    else:
        st.out.print(
            f"{result.subjects} subject(s) recomputed, {len(result.changed)} changed",
            highlight=False,
        )
