"""`offline export --subject`, and `receipts verify` on missing, new and log-less homes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.runtime_facts.cli.conftest import SUBJECT, Cli, write_batch

IMAGE = "sha256:" + "ab" * 32


def _stage(cli: Cli, tmp_path: Path, name: str, *subject: str) -> None:
    batch = write_batch(tmp_path / f"{name}.ndjson.gz", f'{{"symbolId":"{name}","hitCount":1}}\n')
    run = cli("cas", "put", str(batch), "--tenant", "acme", "--callgraph-id", "cg-1", *subject)
    assert run.code == 0, run.err


@pytest.mark.parametrize(
    ("subject", "key"),
    [
        (("--image-digest", IMAGE), f"image:{IMAGE}"),
        (("--component", "svc", "--version", "1.2.0"), "component:svc@1.2.0"),
        (("--scan-id", "s-9"), "scan:s-9"),
    ],
)
def test_export_by_any_subject_makes_a_kit_another_home_ingests(
    cli: Cli, tmp_path: Path, subject: tuple[str, ...], key: str
) -> None:
    _stage(cli, tmp_path, "mine", *subject)
    _stage(cli, tmp_path, "other", "--scan-id", "s-other")
    kit = tmp_path / "kit"
    run = cli(
        "--json", "offline", "export", "--tenant", "acme", "--subject", key, "--out", str(kit)
    )
    assert run.code == 0, run.out
    assert json.loads(run.out)["files"] == 1
    target = tmp_path / "air-gapped"
    assert cli("offline", "verify", str(kit), home=target).code == 0
    ingested = cli("--json", "ingest", "--from", str(kit), home=target)
    assert ingested.code == 0, ingested.out
    listed = cli("--json", "facts", "list", "--tenant", "acme", "--subject", key, home=target)
    assert [f["symbol_id"] for f in json.loads(listed.out)] == ["mine"]


def test_export_by_scan_id_is_the_scan_subject(cli: Cli, tmp_path: Path) -> None:
    _stage(cli, tmp_path, "mine", "--scan-id", "s-9")
    out = tmp_path / "kit"
    run = cli("offline", "export", "--tenant", "acme", "--scan-id", "s-9", "--out", str(out))
    assert run.code == 0, run.err
    assert [p.parent.name for p in out.glob("reachability/runtime/*/*")] == ["s-9"]


def test_export_needs_exactly_one_subject(cli: Cli, tmp_path: Path) -> None:
    _stage(cli, tmp_path, "mine", "--scan-id", "s-9")
    base = ("offline", "export", "--tenant", "acme", "--out", str(tmp_path / "kit"))
    assert cli(*base).code == 2
    assert cli(*base, "--scan-id", "s-9", "--subject", "scan:s-9").code == 2


def test_export_of_an_unknown_subject_exits_4(cli: Cli, tmp_path: Path) -> None:
    _stage(cli, tmp_path, "mine", "--scan-id", "s-9")
    run = cli("offline", "export", "--tenant", "acme", "--subject", "image:sha256:nope",
              "--out", str(tmp_path / "kit"))  # fmt: skip
    assert run.code == 4
    assert "[unknown_subject]" in run.err


def test_receipts_verify_on_a_missing_home_exits_4(cli: Cli, tmp_path: Path) -> None:
    run = cli("receipts", "verify", home=tmp_path / "nonexistent")
    assert run.code == 4
    assert "[home_not_found]" in run.err
    assert "receipts ok" not in run.out


def test_receipts_verify_on_a_new_home_says_nothing_was_ingested(cli: Cli, tmp_path: Path) -> None:
    _stage(cli, tmp_path, "staged-only", "--scan-id", "s-1")
    run = cli("receipts", "verify")
    assert (run.code, run.out) == (
        0,
        "receipts ok: 0 receipts (nothing ingested in this home yet)\n",
    )


def test_receipts_verify_with_the_log_gone_exits_4(
    cli: Cli, tmp_path: Path, home_dir: Path
) -> None:
    assert cli("cas", "put", str(write_batch(tmp_path / "b.ndjson.gz")), *SUBJECT).code == 0
    assert cli("ingest").code == 0
    assert cli("receipts", "verify").code == 0
    (home_dir / "receipts" / "signals-runtime-ingest.log").write_bytes(b"")
    run = cli("--json", "receipts", "verify")
    assert run.code == 4
    assert json.loads(run.out)["error"] == "receipts_log_missing"
