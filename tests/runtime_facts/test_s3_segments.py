"""Append-only logs on S3 (moto's server on 127.0.0.1): one new segment per append, one stream."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest

from runtime_facts.config import Settings
from runtime_facts.home import OUTBOX_LOG, RECEIPTS_LOG, Home
from runtime_facts.ops.receipts_verify import export_log
from runtime_facts.stores.chain import GENESIS, LEGACY, canonical_json, verify_log
from runtime_facts.stores.outbox import Outbox
from runtime_facts.stores.receipts import ObjectReceiptLog
from runtime_facts.stores.s3 import S3ObjectStore


def _draft(tenant: str | None, n: int) -> dict[str, Any]:
    return {
        "tenant": tenant,
        "batch_sha256": hashlib.sha256(f"{tenant}-{n}".encode()).hexdigest(),
        "status": "accepted",
        "finished_at": f"2026-11-26T12:{n // 60:02d}:{n % 60:02d}+00:00",
        "detail": "x" * 200,
    }


class PutCounter:
    """Bytes of every PutObject request the client sends (a hook on the real client)."""

    def __init__(self, store: S3ObjectStore) -> None:
        self.puts: list[tuple[str, int]] = []
        store.client.meta.events.register("before-call.s3.PutObject", self._record)

    def _record(self, params: dict[str, Any], **_: Any) -> None:
        body = params.get("body", b"")
        size = len(body.getvalue()) if hasattr(body, "getvalue") else len(body or b"")
        self.puts.append((str(params.get("url_path", "")), size))


def _objects(store: S3ObjectStore) -> dict[str, tuple[str, Any]]:
    pages = store.client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket)
    return {
        o["Key"]: (o["ETag"], o["LastModified"]) for page in pages for o in page.get("Contents", [])
    }


def test_receipt_appends_write_new_segments_and_never_rewrite(s3_home: Home) -> None:
    store = s3_home.objects
    assert isinstance(store, S3ObjectStore)
    counter = PutCounter(store)
    log = s3_home.receipts
    seen: dict[str, tuple[str, Any]] = {}
    for n in range(40):
        log.append(_draft("acme" if n % 3 else "globex", n))
        now = _objects(store)
        assert {k: v for k, v in now.items() if k in seen} == seen  # nothing earlier changed
        assert len(now) == len(seen) + 1
        seen = now
    sizes = [size for _, size in counter.puts]
    assert len(sizes) == 40
    assert max(sizes) < 2 * min(sizes)  # the 40th append costs what the first did
    assert not store.exists(RECEIPTS_LOG)
    assert sorted(store.folders(f"{RECEIPTS_LOG}.d")) == ["acme", "globex"]
    assert next(iter(store.list(f"{RECEIPTS_LOG}.d/acme"))).endswith("/000000000001-receipt.ndjson")


def test_a_fresh_reader_sees_one_ordered_stream_and_export_verifies(
    s3_home: Home, tmp_path: Path
) -> None:
    for n, tenant in enumerate(["acme", "globex", None, "acme", "globex", "acme"]):
        s3_home.receipts.append(_draft(tenant, n))
    reader = Home(Settings.load(s3_home.settings.home))  # another process's view
    receipts = list(reader.receipts)
    assert [(r["tenant"], r["sequence"]) for r in receipts] == [
        ("acme", 1),
        ("globex", 1),
        (None, 1),
        ("acme", 2),
        ("globex", 2),
        ("acme", 3),
    ]
    result = verify_log(reader.receipts.lines())
    assert (result.receipts, result.first_break) == (6, None)
    assert reader.receipts.after("acme", 1) == [receipts[3], receipts[5]]
    assert reader.receipts.last("globex") == receipts[4]
    out = export_log(reader, tmp_path / "export.log")
    assert out == {"path": str(tmp_path / "export.log"), "receipts": 6, "checkpoints": 0}
    exported = (tmp_path / "export.log").read_bytes()
    assert exported == b"".join(canonical_json(r) + b"\n" for r in receipts)
    s3_home.receipts.append(_draft("globex", 9))
    index = reader.receipt_index.refresh()
    assert index.offset == 7  # the reader read only the new segment
    assert index.accepted(hashlib.sha256(b"globex-9").hexdigest())


def test_two_unlocked_writers_of_one_tenant_never_fork_the_chain(s3_home: Home) -> None:
    logs = [ObjectReceiptLog(s3_home.objects, RECEIPTS_LOG) for _ in range(2)]
    errors: list[BaseException] = []

    def write(log: ObjectReceiptLog, base: int) -> None:
        try:
            for n in range(8):
                log.append(_draft("acme", base + n))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(log, 100 * i)) for i, log in enumerate(logs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    fresh = ObjectReceiptLog(s3_home.objects, RECEIPTS_LOG)
    result = verify_log(fresh.lines())
    assert result.first_break is None
    assert result.chains["acme"].count == 16
    assert len({r["batch_sha256"] for r in fresh}) == 16


def test_a_log_object_from_before_segments_is_read_first(s3_home: Home) -> None:
    body = {**_draft("acme", 1), "sequence": 1, "prev_receipt_sha256": GENESIS}
    body["receipt_sha256"] = hashlib.sha256(canonical_json(body)).hexdigest()
    s3_home.objects.put(RECEIPTS_LOG, canonical_json(body) + b"\n")
    sealed = s3_home.receipts.append(_draft("acme", 2))
    assert (sealed["sequence"], sealed["prev_receipt_sha256"]) == (1, GENESIS)
    fresh = ObjectReceiptLog(s3_home.objects, RECEIPTS_LOG)
    assert [r["receipt_sha256"] for r in fresh] == [
        body["receipt_sha256"],
        sealed["receipt_sha256"],
    ]
    result = verify_log(fresh.lines())
    assert result.first_break is None
    assert {k: s.count for k, s in result.chains.items()} == {LEGACY: 1, "acme": 1}


def _event(tenant: str, version: int) -> dict[str, Any]:
    return {
        "event_id": f"{tenant}-{version}",
        "emitted_at": f"2026-11-26T12:00:0{version}+00:00",
        "tenant": tenant,
        "subject_key": "scan:shared",
        "fact_kind": "reachability_states",
        "fact_version": version,
    }


@pytest.mark.parametrize("where", ["s3", "local"])
def test_outbox_versions_are_per_tenant_and_appends_are_segments(
    where: str, s3_home: Home, tmp_path: Path
) -> None:
    outbox = s3_home.outbox if where == "s3" else Outbox(tmp_path / "outbox")
    outbox.append([_event("acme", 1)])
    outbox.append([_event("acme", 2)])
    outbox.append([_event("globex", 1)])
    assert outbox.last_version("acme", "scan:shared", "reachability_states") == 2
    assert outbox.last_version("globex", "scan:shared", "reachability_states") == 1
    assert outbox.last_version("initech", "scan:shared", "reachability_states") == 0
    order = ["acme-1", "globex-1", "acme-2"] if where == "s3" else ["acme-1", "acme-2", "globex-1"]
    assert [e["event_id"] for e in outbox] == order  # S3: by emitted_at; local: file order
    if where == "s3":
        store = s3_home.objects
        assert not store.exists(OUTBOX_LOG)
        keys = [*store.list(f"{OUTBOX_LOG}.d/acme"), *store.list(f"{OUTBOX_LOG}.d/globex")]
        assert [k.rsplit("/", 2)[1:] for k in keys] == [
            ["acme", "000000000001.ndjson"],
            ["acme", "000000000002.ndjson"],
            ["globex", "000000000001.ndjson"],
        ]
        assert orjson.loads(store.get(keys[0])) == _event("acme", 1)
