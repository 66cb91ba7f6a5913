"""Signed checkpoints (DSSE) in the receipts log and signed provenance per accepted batch."""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from runtime_facts.cli.main import app
from runtime_facts.config import ReceiptsSettings, Settings
from runtime_facts.home import Home
from runtime_facts.ops.offline import KeyPair, keygen
from runtime_facts.ops.receipts_verify import export_log, verify_receipts
from runtime_facts.pipeline.ingest import ingest
from runtime_facts.stores.chain import GENESIS, canonical_json, checkpoint_claim, seal_receipt
from runtime_facts.stores.dsse import (
    CHECKPOINT_TYPE,
    IN_TOTO_TYPE,
    Signer,
    checkpoint_body,
    pae,
    payload_of,
)
from runtime_facts.stores.offline_kit import public_key_from
from runtime_facts.stores.receipts import ReceiptLog
from runtime_facts.subject import SubjectContext

Clock = Callable[[], Any]
runner = CliRunner()


@pytest.fixture
def keys(tmp_path: Path) -> KeyPair:
    return keygen(tmp_path / "keys")


@pytest.fixture
def other_keys(tmp_path: Path) -> KeyPair:
    return keygen(tmp_path / "attacker")


def _signed_home(root: Path, keys: KeyPair, every: int = 100) -> Home:
    receipts = ReceiptsSettings(signing_key=str(keys.private_key), checkpoint_every=every)
    return Home(Settings.load(str(root)).replace(receipts=receipts))


@pytest.fixture
def signed(tmp_path: Path, keys: KeyPair, clock: Clock) -> Home:
    """A home with a signing key: three batches of two tenants, one rejected, one run."""
    home = _signed_home(tmp_path / "home", keys)
    for tenant, body in [("acme", "a"), ("globex", "b"), ("acme", "c")]:
        data = f'{{"symbolId":"sym:{body}","hitCount":2}}\n'.encode()
        home.cas.put("runtime", _gz(data), SubjectContext(tenant, "cg-1", scan_id="s-1"))
    home.cas.put("runtime", _gz(b'{"hitCount":1}\n'), SubjectContext("acme", "cg-1", scan_id="s-2"))
    ingest(home, clock=clock)
    return home


def _gz(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data, mtime=0)


def _verify(log: Path | None, home: Home, key: KeyPair | None) -> tuple[int, dict[str, Any]]:
    args = [
        "receipts",
        "verify",
        *([str(log)] if log else []),
        "--home",
        home.settings.home,
        "--json",
    ]
    if key is not None:
        args += ["--public-key", str(key.public_key)]
    result = runner.invoke(app, args)
    return result.exit_code, orjson.loads(result.stdout)


def _lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def _write(path: Path, docs: list[dict[str, Any]]) -> None:
    path.write_bytes(b"".join(canonical_json(d) + b"\n" for d in docs))


def test_every_run_ends_with_a_signed_checkpoint_per_chain(signed: Home, keys: KeyPair) -> None:
    docs = _lines(signed.receipts.path)
    claims = [checkpoint_claim(d) for d in docs if "payloadType" in d]
    assert sorted((c[0], c[1]) for c in claims if c) == [("acme", 3), ("globex", 1)]
    code, doc = _verify(None, signed, keys)
    assert code == 0, doc
    assert (doc["checkpoints"], doc["signatures_checked"], doc["unsigned_tail"]) == (2, True, {})
    assert (doc["table_checked"], doc["lake_checked"]) == (True, True)


def test_a_checkpoint_every_n_receipts_of_a_chain(tmp_path: Path, keys: KeyPair) -> None:
    log = ReceiptLog(
        tmp_path / "log", signer=Signer.from_file(keys.private_key), checkpoint_every=2
    )
    for n in range(5):
        log.append({"tenant": "acme", "batch_sha256": f"{n}", "finished_at": f"t{n}"})
    log.append({"tenant": "globex", "batch_sha256": "g", "finished_at": "tg"})
    kinds = [("c" if "payloadType" in d else "r") for d in _lines(log.path)]
    assert "".join(kinds) == "rrcrrcrr"
    claim = checkpoint_claim(_lines(log.path)[5])
    assert claim is not None
    assert claim[:2] == ("acme", 4)
    assert claim[3]["time"] == "t3"  # the covered receipt's time: no clock read
    assert [c[:2] for c in map(checkpoint_claim, log.checkpoint()) if c] == [
        ("acme", 5),
        ("globex", 1),
    ]
    assert log.checkpoint() == []  # nothing uncovered


def _reseal(
    docs: list[dict[str, Any]], tenant: str, edit: Callable[[dict[str, Any]], None]
) -> None:
    """What an attacker with write access does: edit a receipt and recompute the chain."""
    prev = GENESIS
    edited = False
    for doc in docs:
        if "payloadType" in doc or doc.get("tenant") != tenant:
            continue
        if not edited:
            edit(doc)
            edited = True
        body = {k: v for k, v in doc.items() if k not in ("receipt_sha256",)}
        doc.clear()
        doc.update(seal_receipt(body, prev))
        prev = doc["receipt_sha256"]


def test_a_rewritten_chain_with_recomputed_hashes_exits_3(
    signed: Home, keys: KeyPair, tmp_path: Path
) -> None:
    copy = tmp_path / "synced.log"
    export_log(signed, copy)
    assert _verify(copy, signed, keys)[0] == 0
    docs = _lines(copy)
    _reseal(docs, "acme", lambda d: d.update(line_count=999))
    _write(copy, docs)
    code, doc = _verify(copy, signed, None)  # the hashes alone cannot tell...
    assert code == 3  # ...but the checkpoint's head no longer matches, even unsigned
    assert doc["first_break"]["reason_code"] == "receipt_checkpoint_mismatch"
    stripped = [d for d in docs if "payloadType" not in d]
    _write(copy, stripped)
    assert _verify(copy, signed, None)[0] == 0  # without the key nothing proves who wrote it
    code, doc = _verify(copy, signed, keys)
    assert code == 3
    assert doc["first_break"]["reason_code"] == "receipt_checkpoint_missing"


def test_a_checkpoint_signed_by_another_key_exits_3(
    signed: Home, keys: KeyPair, other_keys: KeyPair, tmp_path: Path
) -> None:
    copy = tmp_path / "synced.log"
    export_log(signed, copy)
    docs = _lines(copy)
    _reseal(docs, "acme", lambda d: d.update(status="rejected"))
    forger = Signer.from_file(other_keys.private_key)
    heads: dict[str | None, tuple[int, str]] = {}
    for i, doc in enumerate(docs):  # re-sign every checkpoint over the forged heads
        if "payloadType" not in doc:
            heads[doc["tenant"]] = (doc["sequence"], doc["receipt_sha256"])
            continue
        claim = checkpoint_claim(doc)
        assert claim is not None
        count, head = heads[claim[0]]
        body = checkpoint_body(claim[0], "tenant", count, head, claim[3]["time"])
        docs[i] = forger.envelope(CHECKPOINT_TYPE, body)
    _write(copy, docs)
    assert _verify(copy, signed, other_keys)[0] == 0  # consistent under the forger's key
    code, doc = _verify(copy, signed, keys)
    assert code == 3
    assert doc["first_break"]["reason_code"] == "receipt_checkpoint_invalid"


def test_receipts_after_the_last_checkpoint(signed: Home, keys: KeyPair, tmp_path: Path) -> None:
    unsigned = ReceiptLog(signed.receipts.path)  # a writer without the key appends a tail
    unsigned.append({"tenant": "acme", "batch_sha256": "late", "status": "accepted"})
    copy = tmp_path / "synced.log"
    export_log(signed, copy)
    code, doc = _verify(copy, signed, keys)
    assert code == 0
    assert doc["unsigned_tail"] == {"acme": 1}
    lines = copy.read_bytes().splitlines(keepends=True)
    lines[-1] = lines[-1].replace(b'"status":"accepted"', b'"status":"rejected"')
    copy.write_bytes(b"".join(lines))
    code, doc = _verify(copy, signed, keys)
    assert code == 3
    assert doc["first_break"]["reason_code"] == "receipt_chain_broken"
    assert doc["first_break"]["line_number"] == len(lines)


def test_each_accepted_batch_has_a_signed_provenance_statement(
    signed: Home, keys: KeyPair, other_keys: KeyPair
) -> None:
    accepted = [r for r in signed.receipts if r["status"] == "accepted"]
    assert len(accepted) == 3
    for receipt in accepted:
        path = signed.root / "receipts" / "provenance" / f"{receipt['batch_sha256']}.dsse.json"
        envelope = orjson.loads(path.read_bytes())
        assert envelope["payloadType"] == IN_TOTO_TYPE
        statement = orjson.loads(payload_of(envelope) or b"")
        assert statement["_type"] == "https://in-toto.io/Statement/v1"
        assert statement["subject"] == [
            {"name": receipt["cas_uri"], "digest": {"sha256": receipt["batch_sha256"]}}
        ]
        predicate = statement["predicate"]
        assert predicate["tableVersions"] == receipt["table_versions"]
        assert predicate["receipt"]["sha256"] == receipt["receipt_sha256"]
        assert predicate["counts"]["key"] == receipt["key_count"] == 1
    rejected = [r for r in signed.receipts if r["status"] == "rejected"]
    assert not (
        signed.root / "receipts/provenance" / f"{rejected[0]['batch_sha256']}.dsse.json"
    ).exists()
    report = verify_receipts(signed, public_key=public_key_from(str(keys.public_key)))
    assert (report.ok, report.provenance_checked) == (True, 3)
    target = signed.root / "receipts" / "provenance" / f"{accepted[0]['batch_sha256']}.dsse.json"
    statement = orjson.loads(payload_of(orjson.loads(target.read_bytes())) or b"")
    statement["predicate"]["counts"]["key"] = 5
    forged = Signer.from_file(other_keys.private_key).envelope(
        IN_TOTO_TYPE, canonical_json(statement)
    )
    target.write_bytes(canonical_json(forged))
    report = verify_receipts(signed, public_key=public_key_from(str(keys.public_key)))
    assert report.first_break is not None
    assert report.first_break.reason_code == "receipt_provenance_invalid"
    assert "another key" in report.first_break.reason
    honest = Signer.from_file(keys.private_key).envelope(IN_TOTO_TYPE, canonical_json(statement))
    target.write_bytes(canonical_json(honest))  # signed by the site, but not what the receipt says
    report = verify_receipts(signed, public_key=public_key_from(str(keys.public_key)))
    assert report.first_break is not None
    assert "differs from the receipt" in report.first_break.reason


RECIPE = r"""
set -euo pipefail
printf '302a300506032b6570032100' | xxd -r -p > pub.der
base64 -d "$PUBKEY" >> pub.der
openssl pkey -pubin -inform DER -in pub.der -out pub.pem
line=$(grep '"payloadType"' "$LOG" | tail -n 1)
printf '%s' "$line" | jq -r .payload | base64 -d > payload.json
printf '%s' "$line" | jq -r '.signatures[0].sig' | base64 -d > sig.bin
type=$(printf '%s' "$line" | jq -r .payloadType)
printf 'DSSEv1 %d %s %d ' "${#type}" "$type" "$(stat -c %s payload.json)" > pae.bin
cat payload.json >> pae.bin
openssl pkeyutl -verify -pubin -inkey pub.pem -rawin -in pae.bin -sigfile sig.bin
"""


@pytest.mark.skipif(
    not all(shutil.which(t) for t in ("bash", "openssl", "jq", "xxd")), reason="needs the tools"
)
def test_a_checkpoint_verifies_with_standard_tools(
    signed: Home, keys: KeyPair, tmp_path: Path
) -> None:
    work = tmp_path / "recipe"
    work.mkdir()
    env = {
        "PUBKEY": str(keys.public_key),
        "LOG": str(signed.receipts.path),
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run(["bash", "-c", RECIPE], cwd=work, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "Signature Verified Successfully" in done.stdout
    assert (work / "pae.bin").read_bytes() == pae(
        CHECKPOINT_TYPE, (work / "payload.json").read_bytes()
    )
    sig = bytearray((work / "sig.bin").read_bytes())
    sig[0] ^= 1
    (work / "sig.bin").write_bytes(bytes(sig))
    check = ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-rawin"]
    bad = subprocess.run(
        [*check, "-in", "pae.bin", "-sigfile", "sig.bin"], cwd=work, capture_output=True, text=True
    )
    assert bad.returncode != 0


def test_signed_checkpoints_on_an_s3_home(
    s3_home: Home, keys: KeyPair, clock: Clock, tmp_path: Path
) -> None:
    receipts = ReceiptsSettings(signing_key=str(keys.private_key))
    home = Home(s3_home.settings.replace(receipts=receipts))
    home.cas.put(
        "runtime",
        _gz(b'{"symbolId":"sym:s3","hitCount":1}\n'),
        SubjectContext("acme", "cg-1", scan_id="s"),
    )
    ingest(home, clock=clock)
    keys_listed = list(home.objects.list("receipts/signals-runtime-ingest.log.d/acme"))
    assert [k.rsplit("/", 1)[1] for k in keys_listed] == [
        "000000000001-receipt.ndjson",
        "000000000001-signed-checkpoint.ndjson",
    ]
    assert len(list(home.objects.list("receipts/provenance"))) == 1
    out = tmp_path / "export.log"
    assert export_log(home, out)["checkpoints"] == 1
    code, doc = _verify(out, home, keys)
    assert code == 0, doc
    raw = base64.b64decode(keys.public_key.read_text())
    assert (
        hashlib.sha256(raw).hexdigest()
        == orjson.loads(out.read_bytes().splitlines()[1])["signatures"][0]["keyid"]
    )


def test_verify_an_s3_home_itself(s3_home: Home, keys: KeyPair, clock: Clock) -> None:
    receipts = ReceiptsSettings(signing_key=str(keys.private_key))
    home = Home(s3_home.settings.replace(receipts=receipts))
    for tenant in ("acme", "globex"):
        data = _gz(f'{{"symbolId":"sym:{tenant}","hitCount":1}}\n'.encode())
        home.cas.put("runtime", data, SubjectContext(tenant, "cg-1", scan_id="s"))
    ingest(home, clock=clock)
    report = verify_receipts(home, public_key=public_key_from(str(keys.public_key)))
    assert report.ok, report.findings
    assert (report.chains, report.checkpoints, report.table_rows) == (2, 2, 2)
    assert (report.provenance_checked, report.lake_checked) == (2, True)
