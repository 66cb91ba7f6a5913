"""Offline kits: export → verify → ingest round trip, and every tampered variant refused."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from runtime_facts.cli.main import app
from runtime_facts.config import OfflineSettings, Settings
from runtime_facts.errors import RuntimeFactsError
from runtime_facts.generate import GeneratorSpec, generate_batches
from runtime_facts.home import Home
from runtime_facts.ops.offline import export_kit, ingest_kit, load_kit, verify_kit
from runtime_facts.pipeline.ingest import ingest
from runtime_facts.stores.offline_kit import (
    MANIFEST,
    SIGNATURE,
    private_key_from,
    sign_manifest,
)
from runtime_facts.subject import SubjectContext
from transforms.schema import FACT_KEY

from ..conftest import FIXED_NOW, FIXTURES

Clock = Callable[[], datetime]
FIXTURE_KIT = FIXTURES / "offline-kit"
KEYS = FIXTURES / "keys"
PRIVATE = KEYS / "TEST-ONLY-offline-kit.key"
PUBLIC = (KEYS / "TEST-ONLY-offline-kit.pub").read_text().strip()
CTX = SubjectContext("acme", "cg-1", scan_id="s-1")


def _home(root: Path, public_key: str | None = PUBLIC) -> Home:
    settings = Settings.load(str(root), offline=OfflineSettings(public_key=public_key))
    return Home(settings)


def _snapshot(home: Home) -> dict[str, str]:
    return {
        str(p.relative_to(home.root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(home.root.rglob("*"))
        if p.is_file()
    }


def _facts(home: Home, subject_key: str) -> pl.DataFrame:
    return (
        home.lake.read("runtime_facts", where=pl.col("subject_key") == subject_key)
        .drop("updated_at")
        .sort(FACT_KEY, nulls_last=False)
    )


def _batches(n_events: int, seed: int, per_chunk: int) -> list[bytes]:
    spec = GeneratorSpec(
        events=n_events, symbols=30, code_ids=4, seed=seed, events_per_chunk=per_chunk
    )
    return list(generate_batches(spec))


@pytest.fixture
def kit(tmp_path: Path) -> Path:
    """A private copy of the fixture kit."""
    return Path(shutil.copytree(FIXTURE_KIT, tmp_path / "kit"))


@pytest.fixture
def busy_home(tmp_path: Path, clock: Clock) -> Home:
    """A home that already holds CAS objects, tables and receipts."""
    home = _home(tmp_path / "home")
    for chunk in _batches(40, 3, 20):
        home.cas.put("runtime", chunk, SubjectContext("acme", "cg-9", scan_id="other"))
    ingest(home, clock=clock)
    return home


# Tampered kits --------------------------------------------------------------------------


def _first_batch(kit: Path) -> Path:
    return sorted(kit.rglob("*.ndjson.gz"))[0]


def _rewrite_manifest(kit: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    doc = orjson.loads((kit / MANIFEST).read_bytes())
    edit(doc)
    _resign(kit, orjson.dumps(doc, option=orjson.OPT_INDENT_2))


def _resign(kit: Path, raw: bytes) -> None:
    """Write manifest bytes and a valid signature: the defect is then the content, not the sig."""
    (kit / MANIFEST).write_bytes(raw)
    (kit / SIGNATURE).write_bytes(sign_manifest(raw, private_key_from(PRIVATE)))


def _flip_byte(kit: Path) -> None:
    path = _first_batch(kit)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _wrong_size(kit: Path) -> None:
    with _first_batch(kit).open("ab") as handle:
        handle.write(b"\0")


def _missing_file(kit: Path) -> None:
    _first_batch(kit).unlink()


def _extra_file(kit: Path) -> None:
    (_first_batch(kit).parent / "extra.ndjson.gz").write_bytes(_first_batch(kit).read_bytes())


def _dotdot_path(kit: Path) -> None:
    def edit(doc: dict[str, Any]) -> None:
        doc["files"][0]["path"] = "reachability/runtime/../../../escape.ndjson.gz"

    (kit.parent / "escape.ndjson.gz").write_bytes(_first_batch(kit).read_bytes())
    _rewrite_manifest(kit, edit)


def _absolute_path(kit: Path) -> None:
    def edit(doc: dict[str, Any]) -> None:
        doc["files"][0]["path"] = str(kit.parent / "abs.ndjson.gz")

    _rewrite_manifest(kit, edit)


def _symlink(kit: Path) -> None:
    path = _first_batch(kit)
    outside = kit.parent / "outside.ndjson.gz"
    outside.write_bytes(path.read_bytes())
    path.unlink()
    path.symlink_to(outside)


def _symlinked_folder(kit: Path) -> None:
    folder = _first_batch(kit).parent
    moved = shutil.move(folder, kit.parent / "moved")
    folder.symlink_to(moved, target_is_directory=True)


def _hardlink(kit: Path) -> None:
    os.link(_first_batch(kit), kit.parent / "second-name.ndjson.gz")


def _fifo(kit: Path) -> None:
    os.mkfifo(kit / "reachability" / "pipe")


def _bad_signature(kit: Path) -> None:
    other = Ed25519PrivateKey.from_private_bytes(b"\x01" * 32)
    (kit / SIGNATURE).write_bytes(sign_manifest((kit / MANIFEST).read_bytes(), other))


def _garbled_signature(kit: Path) -> None:
    (kit / SIGNATURE).write_bytes(b"not base64 at all!\n")


def _edited_after_signing(kit: Path) -> None:
    raw = (kit / MANIFEST).read_bytes()
    (kit / MANIFEST).write_bytes(raw.replace(b'"acme"', b'"acmf"'))


def _malformed_manifest(kit: Path) -> None:
    _resign(kit, b'{"schemaVersion": 1, "kind": "reachability-runtime", "files": [')


def _manifest_missing_field(kit: Path) -> None:
    _rewrite_manifest(kit, lambda doc: doc["files"][0].pop("sha256"))


def _manifest_bad_subject(kit: Path) -> None:
    _rewrite_manifest(kit, lambda doc: doc["files"][0].update(subject={}))


def _unsupported_schema(kit: Path) -> None:
    _rewrite_manifest(kit, lambda doc: doc.update(schemaVersion=2))


def _no_manifest(kit: Path) -> None:
    (kit / MANIFEST).unlink()
    (kit / SIGNATURE).unlink()


def _unsigned(kit: Path) -> None:
    (kit / SIGNATURE).unlink()


TAMPERED: list[tuple[str, Callable[[Path], None], dict[str, Any], str]] = [
    ("flipped-byte", _flip_byte, {}, "kit_digest_mismatch"),
    ("wrong-size", _wrong_size, {}, "kit_size_mismatch"),
    ("missing-file", _missing_file, {}, "kit_file_missing"),
    ("extra-file", _extra_file, {}, "kit_file_unlisted"),
    ("dotdot-path", _dotdot_path, {}, "kit_path_escape"),
    ("absolute-path", _absolute_path, {}, "kit_path_escape"),
    ("symlink", _symlink, {}, "kit_symlink"),
    ("symlinked-folder", _symlinked_folder, {}, "kit_symlink"),
    ("hardlink", _hardlink, {}, "kit_hardlink"),
    ("fifo", _fifo, {}, "kit_special_file"),
    ("bad-signature", _bad_signature, {}, "kit_signature_invalid"),
    ("garbled-signature", _garbled_signature, {}, "kit_signature_invalid"),
    ("manifest-edited-after-signing", _edited_after_signing, {}, "kit_signature_invalid"),
    ("malformed-manifest", _malformed_manifest, {}, "kit_manifest_invalid"),
    ("manifest-missing-field", _manifest_missing_field, {}, "kit_manifest_invalid"),
    ("manifest-bad-subject", _manifest_bad_subject, {}, "kit_manifest_invalid"),
    ("unsupported-schema", _unsupported_schema, {}, "kit_manifest_unsupported"),
    ("no-manifest", _no_manifest, {}, "kit_manifest_missing"),
    ("other-tenant", lambda kit: None, {"tenant": "globex"}, "kit_tenant_mismatch"),
    ("sealed-unsigned", _unsigned, {"sealed": True}, "sealed_mode_evidence_invalid"),
    ("sealed-bad-signature", _bad_signature, {"sealed": True}, "sealed_mode_evidence_invalid"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("mutate", "kwargs", "reason"),
    [pytest.param(m, k, r, id=name) for name, m, k, r in TAMPERED],
)
def test_tampered_kit_is_rejected_and_nothing_is_loaded(
    busy_home: Home,
    kit: Path,
    clock: Clock,
    mutate: Callable[[Path], None],
    kwargs: dict[str, Any],
    reason: str,
) -> None:
    mutate(kit)
    before = _snapshot(busy_home)
    versions = {t: busy_home.lake.version(t) for t in ("runtime_facts", "ingest_receipts")}
    with pytest.raises(RuntimeFactsError) as caught:
        ingest_kit(busy_home, kit, clock=clock, **kwargs)
    assert caught.value.reason == reason
    assert caught.value.exit_code == 3
    assert caught.value.hint
    assert _snapshot(busy_home) == before
    assert {t: busy_home.lake.version(t) for t in versions} == versions


def test_signed_kit_without_a_configured_public_key_is_a_usage_error(
    tmp_path: Path, kit: Path
) -> None:
    home = _home(tmp_path / "home", public_key=None)
    with pytest.raises(RuntimeFactsError) as caught:
        verify_kit(home, kit)
    assert (caught.value.reason, caught.value.exit_code) == ("kit_public_key_missing", 2)
    assert verify_kit(home, kit, public_key=PUBLIC).signed


def test_missing_kit_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(RuntimeFactsError) as caught:
        verify_kit(_home(tmp_path / "home"), tmp_path / "nowhere")
    assert (caught.value.reason, caught.value.exit_code) == ("kit_not_found", 4)


def test_sealed_mode_from_settings_cannot_be_turned_off_by_the_caller(
    tmp_path: Path, kit: Path
) -> None:
    _unsigned(kit)
    settings = Settings.load(str(tmp_path / "home"))
    home = Home(settings.replace(ingest=settings.ingest.replace(sealed=True)))
    with pytest.raises(RuntimeFactsError) as caught:
        verify_kit(home, kit, sealed=False)
    assert caught.value.reason == "sealed_mode_evidence_invalid"


# The fixture kit -------------------------------------------------------------------------


def test_fixture_kit_is_what_the_script_generates(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "make_offline_kit", FIXTURES / "make_offline_kit.py"
    )
    assert spec is not None
    assert spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.make_kit(tmp_path / "kit", tmp_path / "keys")
    for folder, fresh in ((FIXTURE_KIT, tmp_path / "kit"), (KEYS, tmp_path / "keys")):
        committed = {
            p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()
        }
        made = {p.relative_to(fresh): p.read_bytes() for p in fresh.rglob("*") if p.is_file()}
        committed.pop(Path("README.md"), None)
        assert made == committed


def test_fixture_kit_verifies_and_ingests_in_sealed_mode(
    tmp_path: Path, kit: Path, clock: Clock
) -> None:
    home = _home(tmp_path / "home")
    report = verify_kit(home, kit, tenant="acme", sealed=True)
    assert (len(report.files), report.signed, report.tenant) == (2, True, "acme")
    summary = ingest_kit(home, kit, tenant="acme", sealed=True, clock=clock)
    assert (summary.accepted, summary.rejected) == (2, 0)
    assert summary.events == 24
    receipts = home.lake.read("ingest_receipts")
    assert receipts.get_column("source").unique().to_list() == ["offline-kit"]
    assert sorted(home.cas.list("runtime")) == sorted(f.sha256 for f in report.files)


def test_ingesting_a_kit_twice_changes_nothing(tmp_path: Path, kit: Path, clock: Clock) -> None:
    home = _home(tmp_path / "home")
    ingest_kit(home, kit, clock=clock)
    facts = _facts(home, "scan:scan-offline-1")
    again = ingest_kit(home, kit, clock=clock)
    assert (again.accepted, again.duplicate) == (0, 2)
    assert_frame_equal(_facts(home, "scan:scan-offline-1"), facts)


def test_load_refuses_bytes_staged_for_another_subject_before_loading_anything(
    tmp_path: Path, kit: Path
) -> None:
    home = _home(tmp_path / "home")
    first = _first_batch(kit).read_bytes()
    home.cas.put("runtime", first, SubjectContext("acme", "cg-x", scan_id="elsewhere"))
    before = _snapshot(home)
    with pytest.raises(RuntimeFactsError) as caught:
        load_kit(home, kit)
    assert caught.value.reason == "context_conflict"
    assert _snapshot(home) == before


# Export ---------------------------------------------------------------------------------


@pytest.fixture
def source(tmp_path: Path, clock: Clock) -> Home:
    """A connected site: three batches of scan s-1, one of another scan, all ingested."""
    home = _home(tmp_path / "source")
    for chunk in _batches(300, 11, 100):
        home.cas.put("runtime", chunk, CTX)
    home.cas.put("runtime", _batches(10, 12, 10)[0], SubjectContext("acme", "cg-1", scan_id="s-2"))
    ingest(home, clock=clock)
    return home


def test_export_verify_ingest_reproduces_the_source_facts(
    source: Home, tmp_path: Path, clock: Clock
) -> None:
    kit = export_kit(
        source,
        tenant="acme",
        scan_id="s-1",
        out=tmp_path / "kit",
        include_receipts=True,
        private_key=PRIVATE,
        now=FIXED_NOW,
    )
    target = _home(tmp_path / "airgap")
    report = verify_kit(target, kit, tenant="acme", sealed=True)
    assert len(report.files) == 3
    assert [r.path for r in report.receipts] == ["receipts/source-receipts.ndjson"]
    summary = ingest_kit(target, kit, tenant="acme", sealed=True, clock=clock)
    assert summary.accepted == 3
    assert_frame_equal(_facts(target, "scan:s-1"), _facts(source, "scan:s-1"))
    assert _facts(target, "scan:s-2").is_empty()


def test_export_is_deterministic(source: Home, tmp_path: Path) -> None:
    trees = []
    for name in ("a", "b"):
        kit = export_kit(
            source,
            tenant="acme",
            scan_id="s-1",
            out=tmp_path / name,
            private_key=PRIVATE,
            now=FIXED_NOW,
        )
        trees.append({p.relative_to(kit): p.read_bytes() for p in kit.rglob("*") if p.is_file()})
    assert trees[0] == trees[1]
    names = sorted(str(p) for p in trees[0])
    assert names[:2] == ["manifest.json", "manifest.json.sig"]
    assert all(n.startswith("reachability/runtime/s-1/2026") for n in names[2:])


def test_export_refuses_to_write_over_a_folder(source: Home, tmp_path: Path) -> None:
    (tmp_path / "kit").mkdir()
    (tmp_path / "kit" / "keep.txt").write_text("x")
    with pytest.raises(RuntimeFactsError) as caught:
        export_kit(source, tenant="acme", scan_id="s-1", out=tmp_path / "kit", now=FIXED_NOW)
    assert (caught.value.reason, caught.value.exit_code) == ("kit_output_exists", 2)


def test_export_of_an_unknown_scan_is_not_found(source: Home, tmp_path: Path) -> None:
    with pytest.raises(RuntimeFactsError) as caught:
        export_kit(source, tenant="acme", scan_id="nope", out=tmp_path / "kit", now=FIXED_NOW)
    assert (caught.value.reason, caught.value.exit_code) == ("unknown_subject", 4)
    assert not (tmp_path / "kit").exists()


def test_an_unlisted_file_in_the_receipts_folder_is_refused(source: Home, tmp_path: Path) -> None:
    kit = export_kit(
        source,
        tenant="acme",
        scan_id="s-1",
        out=tmp_path / "kit",
        include_receipts=True,
        now=FIXED_NOW,
    )
    (kit / "receipts" / "notes.txt").write_text("hello")
    with pytest.raises(RuntimeFactsError) as caught:
        verify_kit(source, kit)
    assert caught.value.reason == "kit_file_unlisted"


# CLI ------------------------------------------------------------------------------------


def test_cli_keygen_export_sign_verify_load(source: Home, tmp_path: Path) -> None:
    runner = CliRunner()
    keys = tmp_path / "keys"
    result = runner.invoke(app, ["offline", "keygen", "--out", str(keys)])
    assert result.exit_code == 0, result.output
    public = result.stdout.strip().splitlines()[0]
    assert (keys / "offline-kit.pub").read_text().strip() == public
    assert (keys / "offline-kit.key").stat().st_mode & 0o077 == 0
    kit = tmp_path / "kit"
    args = ["offline", "export", "--tenant", "acme", "--scan-id", "s-1", "--out", str(kit)]
    result = runner.invoke(app, [*args, "--home", str(source.root), "--json"])
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout)["signed"] is False
    result = runner.invoke(
        app, ["offline", "sign", str(kit), "--key", str(keys / "offline-kit.key")]
    )
    assert result.exit_code == 0, result.output
    target = tmp_path / "airgap"
    verify = ["offline", "verify", str(kit), "--home", str(target), "--sealed", "--json"]
    result = runner.invoke(app, [*verify, "--public-key", public])
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout)["signed"] is True
    result = runner.invoke(app, [*verify, "--public-key", PUBLIC])
    assert result.exit_code == 3
    assert orjson.loads(result.stdout)["error"] == "sealed_mode_evidence_invalid"
    load = ["offline", "load", str(kit), "--home", str(target), "--public-key", public]
    result = runner.invoke(app, load)
    assert result.exit_code == 0, result.output
    assert len(result.stdout.split()) == 3
    assert all(u.startswith("cas://reachability/runtime/") for u in result.stdout.split())


def test_cli_verify_reports_the_reason_and_exit_code(tmp_path: Path, kit: Path) -> None:
    _flip_byte(kit)
    result = CliRunner().invoke(
        app,
        ["offline", "verify", str(kit), "--home", str(tmp_path / "h"), "--public-key", PUBLIC],
    )
    assert result.exit_code == 3
    assert "kit_digest_mismatch" in result.output
    assert "hint" in result.output
    result = CliRunner().invoke(app, ["offline", "verify", str(tmp_path / "nope"), "--json"])
    assert result.exit_code == 4
    assert orjson.loads(result.stdout)["error"] == "kit_not_found"


def test_cli_keygen_does_not_overwrite_a_key(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["offline", "keygen", "--out", str(tmp_path)]).exit_code == 0
    result = runner.invoke(app, ["offline", "keygen", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "kit_output_exists" in result.output
