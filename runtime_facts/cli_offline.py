"""CLI for air-gapped operation: `offline ...`, `receipts verify`, `replay ...` (SPEC §9).

Registered on the main app at the end of `runtime_facts.cli`; shared helpers (`_home`,
`_emit`, `_fail`, the global `--json`) are imported from there lazily, since that module
imports this one.
"""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from runtime_facts.errors import ExitCode, Reason, RuntimeFactsError
from runtime_facts.home import Home

out = Console(soft_wrap=True)
err = Console(stderr=True)

HomeOpt = Annotated[
    str | None,
    typer.Option("--home", help="Home directory (overrides the global --home)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]
KitArg = Annotated[Path, typer.Argument(help="The kit folder (the one holding manifest.json).")]
TenantOpt = Annotated[
    str | None, typer.Option(help="Refuse the kit unless it belongs to this tenant.")
]
SealedOpt = Annotated[
    bool, typer.Option("--sealed", help="Sealed mode: a valid signature is required.")
]
PublicKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--public-key",
        help="Ed25519 public key (base64 or key file); default settings offline.public_key.",
    ),
]


class _ReplayGroup(TyperGroup):
    """`replay MANIFEST ...` is `replay run MANIFEST ...`; `replay record ...` stays itself."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


offline_app = typer.Typer(
    help="Offline kits for air-gapped sites: export, verify, load, keygen, sign.",
    no_args_is_help=True,
)
receipts_app = typer.Typer(help="Audit the receipts trail.", no_args_is_help=True)
replay_app = typer.Typer(
    cls=_ReplayGroup,
    help="Record a replay manifest, or replay one: `replay MANIFEST --section reachability`.",
    no_args_is_help=True,
    subcommand_metavar="MANIFEST | COMMAND [ARGS]...",
)


def _home(home: str | None) -> Home:
    from runtime_facts.cli import _home as home_from

    return home_from(home)


def _json(json_out: bool) -> bool:
    from runtime_facts.cli import STATE

    return json_out or STATE.json


def _emit(doc: Any) -> None:
    from runtime_facts.cli import _emit as emit

    emit(doc, True)


def _fail(exc: RuntimeFactsError, json_out: bool) -> None:
    from runtime_facts.cli import _fail as fail

    fail(exc, json_out)


def _spinner(what: str, json_out: bool) -> AbstractContextManager[Any]:
    """A progress spinner on stderr for people; nothing in --json mode."""
    return nullcontext() if _json(json_out) else err.status(escape(what))


# offline -------------------------------------------------------------------------------


@offline_app.command("export")
def offline_export(
    tenant: Annotated[str, typer.Option(help="Tenant of the batches.")],
    scan_id: Annotated[str, typer.Option("--scan-id", help="Export every batch of this scan.")],
    out_dir: Annotated[Path, typer.Option("--out", help="New kit folder to write.")],
    include_receipts: Annotated[
        bool, typer.Option("--include-receipts", help="Add this home's receipts for them.")
    ] = False,
    key: Annotated[
        Path | None, typer.Option("--key", help="Sign the manifest with this private key.")
    ] = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Export a scan's staged batches from CAS into an offline kit folder.

    Example: runtime-facts offline export --tenant acme --scan-id s-42 --out kit-s-42 --key k.key
    """
    from runtime_facts.ops.offline import export_kit
    from runtime_facts.pipeline.outcomes import utc_now
    from runtime_facts.stores.offline_kit import MANIFEST, SIGNATURE, parse_manifest

    try:
        with _spinner(f"exporting scan {scan_id}", json_out):
            kit = export_kit(
                _home(home),
                tenant=tenant,
                scan_id=scan_id,
                out=out_dir,
                include_receipts=include_receipts,
                private_key=key,
                now=utc_now(),
            )
    except RuntimeFactsError as exc:
        _fail(exc, json_out)
        return
    manifest = parse_manifest((kit / MANIFEST).read_bytes())
    signed = (kit / SIGNATURE).exists()
    if _json(json_out):
        _emit({"kit": str(kit), "files": len(manifest.files), "signed": signed})
    else:
        sys.stdout.write(f"{kit}\n")
        err.print(
            f"exported {len(manifest.files)} batches ({'signed' if signed else 'unsigned'})",
            highlight=False,
        )


@offline_app.command("verify")
def offline_verify(
    kit: KitArg,
    tenant: TenantOpt = None,
    sealed: SealedOpt = False,
    public_key: PublicKeyOpt = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Verify a kit completely (tree, manifest, signature, sizes, digests); loads nothing.

    Exit 0 when the kit is intact, 3 with a kit_* reason code when it is not.

    Example: runtime-facts offline verify /media/usb/kit-s-42 --tenant acme --sealed
    """
    from runtime_facts.ops.offline import verify_kit

    try:
        with _spinner(f"verifying {kit}", json_out):
            report = verify_kit(
                _home(home), kit, tenant=tenant, sealed=sealed, public_key=public_key
            )
    except RuntimeFactsError as exc:
        _fail(exc, json_out)
        return
    if _json(json_out):
        _emit({"ok": True, **report.to_dict()})
    else:
        out.print(
            f"kit ok: {len(report.files)} batches, {report.total_bytes} bytes, tenant "
            f"{report.tenant}, {'signature verified' if report.signed else 'unsigned'}",
            highlight=False,
        )


@offline_app.command("load")
def offline_load(
    kit: KitArg,
    tenant: TenantOpt = None,
    sealed: SealedOpt = False,
    public_key: PublicKeyOpt = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Verify a kit, then stage its batches in CAS (ingest them with `ingest --from KIT`).

    Example: runtime-facts offline load /media/usb/kit-s-42 --tenant acme
    """
    from runtime_facts.ops.offline import load_kit
    from runtime_facts.stores.cas import cas_uri

    try:
        with _spinner(f"verifying and loading {kit}", json_out):
            shas = load_kit(_home(home), kit, tenant=tenant, sealed=sealed, public_key=public_key)
    except RuntimeFactsError as exc:
        _fail(exc, json_out)
        return
    uris = [cas_uri("runtime", sha) for sha in shas]
    if _json(json_out):
        _emit({"loaded": uris})
    else:
        sys.stdout.write("".join(f"{u}\n" for u in uris))


@offline_app.command("keygen")
def offline_keygen(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the key pair.")],
    force: Annotated[bool, typer.Option("--force", help="Replace an existing pair.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Create an Ed25519 signing key pair; prints the base64 public key to configure.

    The private key (offline-kit.key, mode 0600) stays at the exporting site; verifying sites
    set RUNTIME_FACTS__OFFLINE__PUBLIC_KEY to the printed public key.

    Example: runtime-facts offline keygen --out ~/.runtime-facts/keys
    """
    from runtime_facts.ops.offline import keygen

    try:
        pair = keygen(out_dir, force=force)
    except RuntimeFactsError as exc:
        _fail(exc, json_out)
        return
    if _json(json_out):
        _emit(
            {
                "privateKey": str(pair.private_key),
                "publicKey": str(pair.public_key),
                "publicKeyBase64": pair.public_key_b64,
            }
        )
    else:
        sys.stdout.write(pair.public_key_b64 + "\n")
        err.print(f"wrote {pair.private_key} (keep it secret) and {pair.public_key}")


@offline_app.command("sign")
def offline_sign(
    kit: KitArg,
    key: Annotated[Path, typer.Option("--key", help="Ed25519 private key file.")],
    json_out: JsonOpt = False,
) -> None:
    """Sign a kit's manifest.json (writes manifest.json.sig).

    Example: runtime-facts offline sign kit-s-42 --key ~/.runtime-facts/keys/offline-kit.key
    """
    from runtime_facts.ops.offline import sign_kit

    try:
        sig, public = sign_kit(kit, key)
    except RuntimeFactsError as exc:
        _fail(exc, json_out)
        return
    if _json(json_out):
        _emit({"signature": str(sig), "publicKeyBase64": public})
    else:
        sys.stdout.write(f"{sig}\n")
        err.print(f"signed with public key {public}", highlight=False)


# receipts ------------------------------------------------------------------------------


@receipts_app.command("verify")
def receipts_verify(
    log: Annotated[
        Path | None,
        typer.Argument(help="A receipts log (default: this home's; also checks the table)."),
    ] = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Verify the receipts hash chain and that ingest_receipts agrees with the log.

    Exit 0 when intact, 3 naming the first broken line when not, 4 when LOG does not exist.

    Example: runtime-facts receipts verify ./synced/signals-runtime-ingest.log
    """
    from runtime_facts.ops.receipts_verify import verify_receipts

    try:
        report = verify_receipts(_home(home), log)
    except RuntimeFactsError as exc:
        _fail(exc, json_out)
        return
    if _json(json_out):
        _emit(report.to_dict())
    elif report.first_break is None:
        table = f", table agrees ({report.table_rows} rows)" if report.table_checked else ""
        pending = f", {report.unmirrored} not yet mirrored" if report.unmirrored else ""
        out.print(f"receipts ok: {report.receipts} receipts{table}{pending}", highlight=False)
    else:
        found = report.first_break
        where = f"line {found.line_number}" if found.line_number else f"sequence {found.sequence}"
        err.print(
            f"[bold red]error[/] {escape(f'[{found.reason_code}]')} {escape(report.log)} "
            f"{where}: {escape(found.reason)}",
            highlight=False,
        )
        err.print(
            "  [dim]hint:[/] the audit trail was altered or truncated after it was written; "
            "compare with a synced copy or backup",
            highlight=False,
        )
    raise typer.Exit(ExitCode.OK if report.ok else ExitCode.REJECTED)


# replay --------------------------------------------------------------------------------


@replay_app.command("record")
def replay_record(
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

    try:
        h = _home(home)
        doc = record_manifest(
            h, tenant=tenant, callgraph_id=callgraph_id, subject_key=subject, out=out_file
        )
        held = hold_manifest(h, out_file, name) if hold else None
    except RuntimeFactsError as exc:
        _fail(exc, json_out)
        return
    section = doc["reachability"]
    if _json(json_out):
        _emit({"manifest": str(out_file), "held": str(held) if held else None, **doc})
    else:
        sys.stdout.write(f"{out_file}\n")
        err.print(
            f"{len(section['runtimeTraces'])} runtime traces, {len(section['graphs'])} graphs; "
            f"facts {section['factsDigest']}" + (f"; held as {held}" if held else ""),
            highlight=False,
        )


@replay_app.command("run")
def replay_run(
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
    missing. `replay MANIFEST --section reachability` is the same command.

    Example: runtime-facts replay manifest.json --section reachability
    """
    from runtime_facts.ops.replay import replay

    try:
        with _spinner(f"replaying {manifest}", json_out):
            report = replay(manifest, source=_home(home), scratch=scratch, section=section)
    except RuntimeFactsError as exc:
        _fail(exc, json_out)
        return
    if _json(json_out):
        failed = {} if report.ok else {"error": str(Reason.REPLAY_DIGEST_MISMATCH)}
        _emit({**report.to_dict(), **failed})
    elif report.ok:
        out.print(
            f"replay ok: {report.runtime_traces} traces, {report.graphs} graphs reproduce "
            f"factsDigest and statesDigest of {report.subject_key}",
            highlight=False,
        )
    if not report.ok:
        if not _json(json_out):
            for name in report.mismatches:
                err.print(
                    f"[bold red]error[/] {escape(f'[{Reason.REPLAY_DIGEST_MISMATCH}]')} {name} "
                    f"differs: recorded {report.recorded[name]}, replayed {report.replayed[name]}",
                    highlight=False,
                )
            for batch in report.rejected_batches:
                err.print(f"  rejected on replay: {batch['batch_sha256']} {batch['reason_codes']}")
            err.print(
                "  [dim]hint:[/] the source tables no longer match what CAS derives; find the "
                "altered rows (facts list) or re-ingest, then record a new manifest",
                highlight=False,
            )
        raise typer.Exit(ExitCode.REJECTED)


__all__ = ["offline_app", "receipts_app", "replay_app"]
