"""Per-tenant receipts chains on a local home: sealing, verification, torn lines, concurrency."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import orjson
import pytest

from runtime_facts.stores.chain import GENESIS, LEGACY, canonical_json, verify_log
from runtime_facts.stores.receipts import ANY, ReceiptIndex, ReceiptLog


def _draft(tenant: str | None, n: int, status: str = "accepted") -> dict[str, Any]:
    sha = hashlib.sha256(f"{tenant}-{n}".encode()).hexdigest()
    return {
        "tenant": tenant,
        "batch_sha256": sha,
        "status": status,
        "finished_at": f"2026-11-26T12:00:{n % 60:02d}+00:00",
        "hit_count_total": "1",
    }


def _legacy_log(path: Path, tenants: list[str]) -> list[dict[str, Any]]:
    """A log as written before per-tenant chains: one global chain, no `chain_scope`."""
    prev, out = GENESIS, []
    for i, tenant in enumerate(tenants, start=1):
        body = {**_draft(tenant, 100 + i), "sequence": i, "prev_receipt_sha256": prev}
        body["receipt_sha256"] = hashlib.sha256(canonical_json(body)).hexdigest()
        out.append(body)
        prev = body["receipt_sha256"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(canonical_json(r) + b"\n" for r in out))
    return out


@pytest.fixture
def log(tmp_path: Path) -> ReceiptLog:
    return ReceiptLog(tmp_path / "receipts" / "signals-runtime-ingest.log")


def test_each_tenant_has_its_own_chain(log: ReceiptLog) -> None:
    sealed = [log.append(_draft(t, i)) for i, t in enumerate(["acme", "globex", "acme", None])]
    assert [(r["tenant"], r["sequence"]) for r in sealed] == [
        ("acme", 1),
        ("globex", 1),
        ("acme", 2),
        (None, 1),
    ]
    assert sealed[0]["prev_receipt_sha256"] == GENESIS
    assert sealed[1]["prev_receipt_sha256"] == GENESIS
    assert sealed[2]["prev_receipt_sha256"] == sealed[0]["receipt_sha256"]
    result = verify_log(log.lines())
    assert (result.receipts, result.first_break) == (4, None)
    assert {k: s.count for k, s in result.chains.items()} == {"acme": 2, "globex": 1, None: 1}
    assert log.last("acme") == sealed[2]
    assert log.last(None) == sealed[3]
    assert log.last() == sealed[3]
    assert log.last("initech") is None
    assert log.after("acme", 1) == [sealed[2]]
    assert log.after("globex", 0) == [sealed[1]]
    assert log.after("acme", 2) == []


def test_an_edit_breaks_the_edited_tenants_chain_at_its_line(log: ReceiptLog) -> None:
    for i, tenant in enumerate(["acme", "globex", "acme", "globex"]):
        log.append(_draft(tenant, i))
    lines = log.path.read_bytes().splitlines(keepends=True)
    lines[3] = lines[3].replace(b'"hit_count_total":"1"', b'"hit_count_total":"9"')
    log.path.write_bytes(b"".join(lines))
    found = verify_log(log.lines()).first_break
    assert found is not None
    assert (found.line_number, found.tenant, found.reason_code) == (
        4,
        "globex",
        "receipt_chain_broken",
    )


def test_a_receipt_removed_from_one_chain_is_found(log: ReceiptLog) -> None:
    for i, tenant in enumerate(["acme", "globex", "acme", "acme"]):
        log.append(_draft(tenant, i))
    lines = log.path.read_bytes().splitlines(keepends=True)
    log.path.write_bytes(b"".join([lines[0], lines[1], lines[3]]))
    found = verify_log(log.lines()).first_break
    assert found is not None
    assert (found.line_number, found.tenant) == (3, "acme")
    assert "prev_receipt_sha256" in found.reason


def test_a_log_from_before_per_tenant_chains_still_verifies(log: ReceiptLog) -> None:
    old = _legacy_log(log.path, ["acme", "globex", "acme"])
    new = log.append(_draft("acme", 7))
    assert (new["sequence"], new["prev_receipt_sha256"], new["chain_scope"]) == (
        1,
        GENESIS,
        "tenant",
    )
    result = verify_log(log.lines())
    assert result.first_break is None
    assert {k: s.count for k, s in result.chains.items()} == {LEGACY: 3, "acme": 1}
    assert log.last(LEGACY) == old[-1]
    assert log.after(LEGACY, 1) == old[1:]
    lines = log.path.read_bytes().splitlines(keepends=True)
    log.path.write_bytes(b"".join([lines[0], lines[2], lines[3]]))  # cut a legacy receipt
    found = verify_log(log.lines()).first_break
    assert found is not None
    assert (found.line_number, found.tenant) == (2, LEGACY)


def test_a_torn_last_line_is_cut_before_the_next_append(log: ReceiptLog) -> None:
    first = log.append(_draft("acme", 1))
    with log.path.open("ab") as handle:  # a writer of another tenant died mid-line
        handle.write(canonical_json(_draft("globex", 2))[:40])
    assert verify_log(log.lines()).first_break is not None  # the torn line is visible
    assert log.last() == first  # ...but never read as a receipt
    second = log.append(_draft("initech", 3))
    assert log.path.read_bytes() == canonical_json(first) + b"\n" + canonical_json(second) + b"\n"
    assert verify_log(log.lines()).first_break is None


def test_repair_cuts_only_a_torn_tail(log: ReceiptLog) -> None:
    log.append(_draft("acme", 1))
    intact = log.path.read_bytes()
    assert log.repair() is False
    with log.path.open("ab") as handle:
        handle.write(b'{"tenant":"glo')
    assert log.repair() is True
    assert log.path.read_bytes() == intact


def test_index_reads_only_new_entries_and_skips_a_torn_tail(log: ReceiptLog) -> None:
    index = ReceiptIndex(log)
    log.append(_draft("acme", 1))
    assert index.refresh().accepted(hashlib.sha256(b"acme-1").hexdigest())
    offset = index.offset
    with log.path.open("ab") as handle:
        handle.write(b'{"batch_sha256":"x"')
    index.refresh()
    assert index.offset == offset
    log.append(_draft("globex", 2, status="rejected"))
    index.refresh(ANY)
    assert index.status[hashlib.sha256(b"globex-2").hexdigest()] == "rejected"
    assert index.tenant_hits == {"acme": 1}


WRITER = textwrap.dedent(
    """
    import fcntl, os, sys
    from pathlib import Path
    from runtime_facts.stores.receipts import ReceiptLog
    path, tenant, count, crash = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
    log = ReceiptLog(path)
    for n in range(count):
        log.append({"tenant": tenant, "batch_sha256": f"{tenant}-{n}", "status": "accepted"})
        if crash == "yes" and n % 25 == 24:
            # die the way a crash mid-write would: a partial line, no newline, lock released
            fd = os.open(path, os.O_WRONLY | os.O_APPEND)
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, b'{"tenant":"' + tenant.encode() + b'","partial')
            os._exit(0) if n == count - 1 else os.close(fd)
    """
)


def test_concurrent_processes_of_different_tenants_never_glue_or_lose_lines(
    log: ReceiptLog,
) -> None:
    count = 100
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(log.path), tenant, str(count), crash],
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        )
        for tenant, crash in [("acme", "no"), ("globex", "no"), ("initech", "yes")]
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    log.repair()  # the crashing writer may have left the very last torn line
    result = verify_log(log.lines())
    assert result.first_break is None, result.first_break
    assert {k: s.count for k, s in result.chains.items()} == {
        "acme": count,
        "globex": count,
        "initech": count,
    }
    for line in log.path.read_bytes().splitlines():
        doc = orjson.loads(line)  # every line is one whole receipt
        assert doc["batch_sha256"].startswith(doc["tenant"])
