"""Offline kits for air-gapped sites: `offline export | verify | load | keygen | sign`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from runtime_facts.cli.common import (
    HomeOpt,
    JsonOpt,
    handles_errors,
    new_typer,
    state,
)
from runtime_facts.errors import Reason, UsageError

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


offline_app = new_typer(
    help="Offline kits for air-gapped sites: export, verify, load, keygen, sign."
)


# offline -------------------------------------------------------------------------------


@offline_app.command("export")
@handles_errors
def offline_export(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Option(help="Tenant of the batches.")],
    out_dir: Annotated[Path, typer.Option("--out", help="New kit folder to write.")],
    scan_id: Annotated[
        str | None, typer.Option("--scan-id", help="Export every batch of this scan.")
    ] = None,
    subject: Annotated[
        str | None,
        typer.Option(
            help="Export every batch of this subject key (image:<digest>, scan:<id> or "
            "component:<name>@<version>). One of --scan-id or --subject is required."
        ),
    ] = None,
    include_receipts: Annotated[
        bool, typer.Option("--include-receipts", help="Add this home's receipts for them.")
    ] = False,
    key: Annotated[
        Path | None, typer.Option("--key", help="Sign the manifest with this private key.")
    ] = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Export one subject's staged batches from CAS into an offline kit folder.

    Exit 4 when the home does not exist or has no staged batch for that tenant and subject.

    Example: runtime-facts offline export --tenant acme --scan-id s-42 --out kit-s-42 --key k.key
    """
    from runtime_facts.ops.offline import export_kit
    from runtime_facts.pipeline.outcomes import utc_now
    from runtime_facts.stores.offline_kit import MANIFEST, SIGNATURE, parse_manifest

    st = state(ctx)
    if (scan_id is None) == (subject is None):
        raise UsageError(
            Reason.INVALID_CONTEXT,
            "give exactly one of --scan-id or --subject",
            hint="e.g. --scan-id s-42, or --subject image:sha256:<digest>",
        )
    subject_key = subject if subject is not None else f"scan:{scan_id}"
    h = st.open_home(home, must_exist=True)
    with st.spinner(f"exporting {subject_key}", json_out):
        kit = export_kit(
            h,
            tenant=tenant,
            subject_key=subject_key,
            out=out_dir,
            include_receipts=include_receipts,
            private_key=key,
            now=utc_now(),
        )
    manifest = parse_manifest((kit / MANIFEST).read_bytes())
    signed = (kit / SIGNATURE).exists()
    if st.wants_json(json_out):
        st.emit({"kit": str(kit), "files": len(manifest.files), "signed": signed})
    else:
        sys.stdout.write(f"{kit}\n")
        st.err.print(
            f"exported {len(manifest.files)} batches ({'signed' if signed else 'unsigned'})",
            highlight=False,
        )


@offline_app.command("verify")
@handles_errors
def offline_verify(
    ctx: typer.Context,
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

    st = state(ctx)
    with st.spinner(f"verifying {kit}", json_out):
        report = verify_kit(
            st.open_home(home), kit, tenant=tenant, sealed=sealed, public_key=public_key
        )
    if st.wants_json(json_out):
        st.emit({"ok": True, **report.to_dict()})
    else:
        st.out.print(
            f"kit ok: {len(report.files)} batches, {report.total_bytes} bytes, tenant "
            f"{report.tenant}, {'signature verified' if report.signed else 'unsigned'}",
            highlight=False,
            markup=False,
        )


@offline_app.command("load")
@handles_errors
def offline_load(
    ctx: typer.Context,
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
    from runtime_facts.stores.airflow_api import RUNTIME_ASSET, announce_staged
    from runtime_facts.stores.cas import cas_uri

    st = state(ctx)
    target = st.open_home(home)
    with st.spinner(f"verifying and loading {kit}", json_out):
        shas = load_kit(target, kit, tenant=tenant, sealed=sealed, public_key=public_key)
    uris = [cas_uri("runtime", sha) for sha in shas]
    if uris:
        extra = {"source": "offline-kit", "kit": str(kit), "batches": len(uris)}
        announce_staged(target.settings.airflow, RUNTIME_ASSET, {**extra, "casUris": uris[:100]})
    if st.wants_json(json_out):
        st.emit({"loaded": uris})
    else:
        sys.stdout.write("".join(f"{u}\n" for u in uris))


@offline_app.command("keygen")
@handles_errors
def offline_keygen(
    ctx: typer.Context,
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

    st = state(ctx)
    pair = keygen(out_dir, force=force)
    if st.wants_json(json_out):
        st.emit(
            {
                "privateKey": str(pair.private_key),
                "publicKey": str(pair.public_key),
                "publicKeyBase64": pair.public_key_b64,
            }
        )
    else:
        sys.stdout.write(pair.public_key_b64 + "\n")
        st.err.print(
            f"wrote {pair.private_key} (keep it secret) and {pair.public_key}", highlight=False
        )


@offline_app.command("sign")
@handles_errors
def offline_sign(
    ctx: typer.Context,
    kit: KitArg,
    key: Annotated[Path, typer.Option("--key", help="Ed25519 private key file.")],
    json_out: JsonOpt = False,
) -> None:
    """Sign a kit's manifest.json (writes manifest.json.sig).

    Example: runtime-facts offline sign kit-s-42 --key ~/.runtime-facts/keys/offline-kit.key
    """
    from runtime_facts.ops.offline import sign_kit

    st = state(ctx)
    sig, public = sign_kit(kit, key)
    if st.wants_json(json_out):
        st.emit({"signature": str(sig), "publicKeyBase64": public})
    else:
        sys.stdout.write(f"{sig}\n")
        st.err.print(f"signed with public key {public}", highlight=False)


__all__ = ["offline_app"]
