"""The audit trail: `receipts verify` and `replay record | MANIFEST` (SPEC §6, §7)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from runtime_facts.cli.common import (
    HomeOpt,
    JsonOpt,
    escape,
    handles_errors,
    new_typer,
    state,
)
from runtime_facts.errors import ExitCode, NotFoundError, Reason


class _ReplayGroup(TyperGroup):
    """`replay MANIFEST ...` is `replay run MANIFEST ...`; `replay record ...` stays itself."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


receipts_app = new_typer(help="Audit the receipts trail.")
replay_app = new_typer(
    cls=_ReplayGroup,
    help="Record a replay manifest, or replay one: `replay MANIFEST --section reachability`.",
    subcommand_metavar="MANIFEST | COMMAND [ARGS]...",
)


# receipts ------------------------------------------------------------------------------


@receipts_app.command("verify")
@handles_errors
def receipts_verify(
    ctx: typer.Context,
    log: Annotated[
        Path | None,
        typer.Argument(help="A receipts log (default: this home's; also checks table and lake)."),
    ] = None,
    public_key: Annotated[
        str | None,
        typer.Option(
            "--public-key",
            help="The site's Ed25519 public key (base64 or key file): checkpoints must verify.",
        ),
    ] = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Verify the receipts chains and checkpoints; on this home also the table and the lake.

    Exit 0 when intact (or when nothing was ever ingested), 3 naming the findings, 4 when
    the home or LOG does not exist, or this home's log is missing or empty though its
    ingest_receipts table holds receipts.

    Example: runtime-facts receipts verify ./synced/signals-runtime-ingest.log --public-key site.pub
    """
    from runtime_facts.ops.receipts_verify import verify_receipts
    from runtime_facts.stores.offline_kit import public_key_from

    st = state(ctx)
    h = st.open_home(home, must_exist=log is None)
    key = public_key_from(public_key) if public_key else None
    report = verify_receipts(h, log, public_key=key)
    own_log_empty = log is None and not h.remote and report.receipts == 0
    if own_log_empty and report.table_rows:
        raise NotFoundError(
            Reason.RECEIPTS_LOG_MISSING,
            f"no receipts in {report.log}, though ingest_receipts holds {report.table_rows}",
            hint="the audit log was lost or emptied: restore it from a backup or a synced copy",
        )
    if st.wants_json(json_out):
        st.emit(report.to_dict())
    elif own_log_empty and report.first_break is None:
        st.out.print("receipts ok: 0 receipts (nothing ingested in this home yet)", highlight=False)
    elif report.first_break is None:
        table = f", table agrees ({report.table_rows} rows)" if report.table_checked else ""
        pending = f", {report.unmirrored} not yet mirrored" if report.unmirrored else ""
        signed = f", {report.checkpoints} checkpoints" + (
            " signed by the key" if report.signatures_checked else " (signatures not checked)"
        )
        tail = sum(report.unsigned_tail.values())
        unsigned = f", {tail} after the last checkpoint" if tail and report.checkpoints else ""
        lake = ", lake agrees" if report.lake_checked else ""
        st.out.print(
            f"receipts ok: {report.receipts} receipts in {report.chains} "
            f"chain{'' if report.chains == 1 else 's'}"
            f"{signed}{unsigned}{table}{pending}{lake}",
            highlight=False,
        )
    else:
        for found in report.findings:
            where = (
                f" line {found.line_number}"
                if found.line_number
                else (f" sequence {found.sequence}" if found.sequence else "")
            )
            st.err.print(
                f"[bold red]error[/] {escape(f'[{found.reason_code}]')} {escape(report.log)}"
                f"{where}: {escape(found.reason)}",
                highlight=False,
            )
        st.err.print(
            "  [dim]hint:[/] the audit trail or the lake was altered after it was written; "
            "compare with a synced copy or backup (docs/runbook.md lists each code)",
            highlight=False,
        )
    raise typer.Exit(ExitCode.OK if report.ok else ExitCode.REJECTED)


@receipts_app.command("export")
@handles_errors
def receipts_export(
    ctx: typer.Context,
    out_file: Annotated[Path, typer.Argument(help="The NDJSON file to write (must not exist).")],
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Write this home's receipts log as one NDJSON file (joins the segments of an s3:// home).

    Example: runtime-facts receipts export /media/usb/signals-runtime-ingest.log
    """
    from runtime_facts.ops.receipts_verify import export_log

    st = state(ctx)
    result = export_log(st.open_home(home, must_exist=True), out_file)
    if st.wants_json(json_out):
        st.emit(result)
    else:
        st.out.print(
            f"wrote {result['path']}: {result['receipts']} receipts, "
            f"{result['checkpoints']} checkpoints",
            highlight=False,
        )


# replay --------------------------------------------------------------------------------


@replay_app.command("record")
@handles_errors
def replay_record(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Option(help="Tenant.")],
    callgraph_id: Annotated[str, typer.Option("--callgraph-id", help="Callgraph id.")],
    subject: Annotated[str, typer.Option(help="Subject key, e.g. scan:s-42 or image:sha256:…")],
    out_file: Annotated[Path, typer.Option("--out", help="Where to write manifest.json.")],
    hold: Annotated[
        bool, typer.Option("--hold", help="Also hold it: retention keeps what it cites.")
    ] = False,
    name: Annotated[
        str | None, typer.Option("--name", help="Name of the held copy (default: a digest).")
    ] = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Write the replay manifest of one subject's reachability section.

    Example: runtime-facts replay record --tenant acme --callgraph-id cg-1 --subject scan:s-42
    --out manifest.json --hold
    """
    from runtime_facts.ops.replay import hold_manifest, record_manifest

    st = state(ctx)
    h = st.open_home(home, must_exist=True)
    doc = record_manifest(
        h, tenant=tenant, callgraph_id=callgraph_id, subject_key=subject, out=out_file
    )
    held = hold_manifest(h, out_file, name) if hold else None
    section = doc["reachability"]
    if st.wants_json(json_out):
        st.emit({"manifest": str(out_file), "held": str(held) if held else None, **doc})
    else:
        sys.stdout.write(f"{out_file}\n")
        st.err.print(
            f"{len(section['runtimeTraces'])} runtime traces, {len(section['graphs'])} graphs; "
            f"facts {section['factsDigest']}" + (f"; held as {held}" if held else ""),
            highlight=False,
        )


@replay_app.command("run")
@handles_errors
def replay_run(
    ctx: typer.Context,
    manifest: Annotated[Path, typer.Argument(help="The replay manifest.json.")],
    section: Annotated[str, typer.Option(help="Section to replay.")] = "reachability",
    scratch: Annotated[
        Path | None, typer.Option(help="Keep the scratch home here (default: temporary).")
    ] = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Re-derive a manifest's section from CAS (--home) and compare its digests.

    Exit 0 identical, 3 when a digest differs or a cited object was altered, 4 when one is
    missing (or the home is). `replay MANIFEST --section reachability` is the same command.

    Example: runtime-facts replay manifest.json --section reachability
    """
    from runtime_facts.ops.replay import replay

    st = state(ctx)
    as_json = st.wants_json(json_out)
    source = st.open_home(home, must_exist=True)
    with st.spinner(f"replaying {manifest}", json_out):
        report = replay(manifest, source=source, scratch=scratch, section=section)
    if as_json:
        failed = {} if report.ok else {"error": str(Reason.REPLAY_DIGEST_MISMATCH)}
        st.emit({**report.to_dict(), **failed})
    elif report.ok:
        st.out.print(
            f"replay ok: {report.runtime_traces} traces, {report.graphs} graphs reproduce "
            f"factsDigest and statesDigest of {report.subject_key}",
            highlight=False,
            markup=False,
        )
    if report.ok:
        return
    if not as_json:
        for name in report.mismatches:
            st.err.print(
                f"[bold red]error[/] {escape(f'[{Reason.REPLAY_DIGEST_MISMATCH}]')} {name} "
                f"differs: recorded {report.recorded[name]}, replayed {report.replayed[name]}",
                highlight=False,
            )
        for batch in report.rejected_batches:
            st.err.print(
                f"  rejected on replay: {batch['batch_sha256']} {batch['reason_codes']}",
                highlight=False,
                markup=False,
            )
        st.err.print(
            "  [dim]hint:[/] the source tables no longer match what CAS derives; find the "
            "altered rows (facts list) or re-ingest, then record a new manifest",
            highlight=False,
        )
    raise typer.Exit(ExitCode.REJECTED)
