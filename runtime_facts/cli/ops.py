"""Operator verbs on a home: `retention`, `compact`, `doctor`, `status`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from runtime_facts.cli.common import CliState, HomeOpt, JsonOpt, escape, handles_errors, state
from runtime_facts.errors import ExitCode, Reason, UsageError


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("retention")(retention_cmd)
    app.command("compact")(compact_cmd)
    app.command("doctor")(doctor_cmd)
    app.command("status")(status_cmd)


def parse_now(value: str | None) -> datetime:
    """`--now`: an ISO-8601 time (UTC when no offset is given), default the current time."""
    if value is None:
        from runtime_facts.pipeline.outcomes import utc_now

        return utc_now()
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(
            Reason.INVALID_CONTEXT,
            f"--now {value!r} is not an ISO-8601 time",
            hint="e.g. --now 2026-11-26T12:00:00Z",
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@handles_errors
def retention_cmd(
    ctx: typer.Context,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what a real run deletes; delete nothing.")
    ] = False,
    now: Annotated[
        str | None,
        typer.Option(
            "--now",
            help="Reference time of the cutoffs (default: now); a dry run and the real run "
            "given the same --now decide the same.",
        ),
    ] = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Apply retention (SPEC §7): expire old facts, delete old unreferenced CAS objects.

    Facts older than retention.retention_days (by last_observed_at) are expired; CAS objects
    older than retention.cas_retention_days are deleted unless a live fact, a pending batch,
    a current graph or a held replay manifest still needs them. Every deletion is recorded in
    receipts/retention.log first. Exit 4 when the home does not exist.

    Example: runtime-facts retention --dry-run
    """
    from runtime_facts.ops.retention import apply_retention

    st = state(ctx)
    h = st.open_home(home, must_exist=True)
    report = apply_retention(h, dry_run=dry_run, now=parse_now(now))
    if st.wants_json(json_out):
        st.emit(report.to_dict())
        return
    _print_retention(st, report, dry_run)


def _print_retention(st: CliState, report: Any, dry_run: bool) -> None:
    verb = "would delete" if dry_run else "deleted"
    expire = "would expire" if dry_run else "expired"
    for item in report.cas_deleted:
        st.out.print(f"{verb} {item['cas_uri']} ({item['size']} bytes)", highlight=False)
    for group in report.expired_facts_by_subject:
        st.out.print(
            f"{expire} {group['facts']} facts of {group['tenant']} {group['subject_key']} "
            f"(callgraph {group['callgraph_id']})",
            highlight=False,
            markup=False,
        )
    for uri, reason in report.cas_kept.items():
        st.err.print(f"[dim]kept[/] {uri}: {reason}", highlight=False)
    st.out.print(
        f"{'dry run: ' if dry_run else ''}{verb} {len(report.cas_deleted)} CAS objects "
        f"({report.cas_deleted_bytes} bytes) and {expire.split()[-1]} {report.expired_facts} "
        f"facts{' (nothing changed)' if dry_run else ''}; cutoffs: facts {report.facts_cutoff}, "
        f"CAS {report.cas_cutoff}",
        highlight=False,
    )


@handles_errors
def compact_cmd(
    ctx: typer.Context,
    no_vacuum: Annotated[bool, typer.Option("--no-vacuum", help="Only merge files.")] = False,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Merge small files, checkpoint the Delta logs and vacuum (never below 7 days).

    Example: runtime-facts compact
    """
    from runtime_facts.ops.compact import compact

    st = state(ctx)
    report = compact(st.open_home(home, must_exist=True), vacuum=not no_vacuum)
    if st.wants_json(json_out):
        st.emit(report.tables)
        return
    for name, t in report.tables.items():
        st.out.print(
            f"{name}: {t['files_before']} -> {t['files_after']} files, "
            f"{t['vacuumed']} vacuumed, version {t['version']}",
            highlight=False,
        )


@handles_errors
def status_cmd(
    ctx: typer.Context,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Say which home is in use and what it holds: staged, pending, receipts, table versions.

    Exit 4 when the home does not exist (a typo in --home, or run from another folder).

    Example: runtime-facts status
    """
    from runtime_facts.ops.status import home_status

    st = state(ctx)
    h = st.open_home(home, must_exist=True)
    if not st.wants_json(json_out):
        st.out.print(f"home: {h.uri}", highlight=False, markup=False)
    status = home_status(h)
    if st.wants_json(json_out):
        st.emit(status.to_dict())
        return
    receipts = ", ".join(f"{k} {v}" for k, v in status.receipts.items()) or "none"
    versions = ", ".join(f"{k} v{v}" for k, v in status.table_versions.items()) or "none yet"
    for line in (
        f"staged batches: {status.staged_batches} ({status.pending_batches} pending ingest)",
        f"callgraphs: {status.graphs}",
        f"receipts: {receipts}",
        f"tables: {versions}",
    ):
        st.out.print(line, highlight=False, markup=False)


_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}


@handles_errors
def doctor_cmd(
    ctx: typer.Context,
    sample: Annotated[int, typer.Option(help="How many random CAS objects to rehash.", min=0)] = 20,
    seed: Annotated[int, typer.Option(help="Seed of the random CAS sample.")] = 0,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Say which home is in use and check its health; exit 3 when a check fails.

    Checks: home writable, seeded CAS sample rehash, tables, receipts chain, metrics file.

    Example: runtime-facts doctor --sample 50 --json
    """
    from rich.table import Table

    from runtime_facts.ops.doctor import run_doctor
    from runtime_facts.pipeline.outcomes import utc_now

    st = state(ctx)
    as_json = st.wants_json(json_out)
    h = st.open_home(home)
    if not as_json:  # first, before any check can take long: which home this is
        st.out.print(f"home: {h.uri}", highlight=False, markup=False)
    report = run_doctor(h, sample=sample, seed=seed, now=utc_now())
    if as_json:
        st.emit({"home_uri": h.uri, **report.to_dict()})
    else:
        table = Table(title=f"doctor: {escape(h.uri)}", show_lines=False)
        table.add_column("check")
        table.add_column("status")
        table.add_column("summary", overflow="fold")
        for check in report.checks:
            summary = escape(check.summary)
            if check.hint and check.status in ("warn", "fail"):
                summary += f"\n[dim]hint: {escape(check.hint)}[/]"
            style = _STYLE[check.status]
            table.add_row(check.name, f"[{style}]{check.status}[/]", summary)
        st.out.print(table)
        settings = next(c for c in report.checks if c.name == "config").details["settings"]
        st.out.print(_flatten(settings), highlight=False, markup=False)
    raise typer.Exit(int(ExitCode.OK if report.ok else ExitCode.REJECTED))


def _flatten(settings: dict[str, Any], prefix: str = "") -> str:
    lines = []
    for key, value in settings.items():
        if isinstance(value, dict):
            lines.append(_flatten(value, f"{prefix}{key}."))
        else:
            lines.append(f"  {prefix}{key} = {value}")
    return "\n".join(lines)
