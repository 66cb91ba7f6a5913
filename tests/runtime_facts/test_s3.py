"""An s3:// home against a real S3 API (moto's server on 127.0.0.1): same results as local."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from runtime_facts.config import Settings
from runtime_facts.generate import GeneratorSpec, generate_batches
from runtime_facts.home import Home
from runtime_facts.ops.facts import list_facts
from runtime_facts.pipeline.ingest import ingest
from runtime_facts.pipeline.publish import receipt_sums, write_metrics
from runtime_facts.stores.s3 import S3Lock, S3ObjectStore
from runtime_facts.subject import SubjectContext
from transforms.schema import FACT_KEY

NOW = datetime(2026, 11, 26, tzinfo=UTC)
CTX = SubjectContext("acme", "cg-s3", image_digest="sha256:" + "ab" * 32)


def _chunks(n: int = 4) -> list[bytes]:
    spec = GeneratorSpec(events=2000, symbols=200, code_ids=4, seed=5, events_per_chunk=2000 // n)
    return list(generate_batches(spec))


def _facts(home: Home) -> pl.DataFrame:
    return home.lake.read("runtime_facts").drop("updated_at").sort(FACT_KEY, nulls_last=False)


def test_put_ingest_recompute_query_over_s3_equals_local(s3_home: Home, tmp_path: Path) -> None:
    local = Home(Settings.load(str(tmp_path / "local-home")))
    for home in (s3_home, local):
        for chunk in _chunks():
            home.cas.put("runtime", chunk, CTX)
        home.cas.put(
            "runtime", b"\x1f\x8bnot really gzip", SubjectContext("acme", "cg-s3", scan_id="bad")
        )
        summary = ingest(home, clock=lambda: NOW)
        assert (summary.accepted, summary.rejected) == (4, 1)
    assert_frame_equal(_facts(s3_home), _facts(local))
    states = s3_home.lake.read("reachability_states")
    assert set(states.get_column("state")) == {"RO"}
    assert list_facts(s3_home, "acme", CTX.subject_key).height == _facts(local).height
    assert [r["status"] for r in s3_home.receipts] == [r["status"] for r in local.receipts]
    assert len(list(s3_home.outbox)) == 1
    again = ingest(s3_home, clock=lambda: NOW)
    assert again.batches == 0


def test_metrics_over_s3_sum_every_receipt_once(s3_home: Home, tmp_path: Path) -> None:
    """The per-file sums resolve the object store's file names as a local home's do."""
    local = Home(Settings.load(str(tmp_path / "local-home")))
    for home in (s3_home, local):
        for chunk in _chunks():
            home.cas.put("runtime", chunk, CTX)
        ingest(home, clock=lambda: NOW)
    totals = write_metrics(local)
    assert write_metrics(s3_home) == totals
    assert write_metrics(s3_home) == totals  # from the cached sums
    assert totals["receipts"] == 4
    assert receipt_sums(s3_home).get_column("n").sum() == 4


def test_cas_objects_are_never_overwritten(s3_home: Home) -> None:
    store = s3_home.objects
    assert isinstance(store, S3ObjectStore)
    assert store.put("cas/x", b"first", overwrite=False)
    assert not store.put("cas/x", b"second", overwrite=False)
    assert store.get("cas/x") == b"first"
    result = s3_home.cas.put("runtime", b"batch", CTX)
    assert s3_home.cas.put("runtime", b"batch", CTX).created is False
    assert s3_home.cas.get("runtime", result.sha256) == b"batch"


def test_lock_excludes_and_expired_leases_are_taken_over(s3_home: Home) -> None:
    store = s3_home.objects
    assert isinstance(store, S3ObjectStore)
    first = S3Lock(store, "locks/test.lock", lease_seconds=30)
    first.acquire()
    order: list[str] = []

    def contender() -> None:
        second = S3Lock(store, "locks/test.lock", lease_seconds=30)
        second.acquire(timeout=20)
        order.append("second")
        second.release()

    thread = threading.Thread(target=contender)
    thread.start()
    time.sleep(0.5)
    order.append("first")
    first.release()
    thread.join()
    assert order == ["first", "second"]
    dead = S3Lock(store, "locks/dead.lock", lease_seconds=0.2)
    dead.acquire()  # never released: its holder "died" (it stops renewing)
    dead._stop.set()
    survivor = S3Lock(store, "locks/dead.lock", lease_seconds=30)
    survivor.acquire(timeout=10)
    survivor.release()


@pytest.mark.slow
def test_concurrent_processes_ingest_different_batches_over_s3(s3_home: Home) -> None:
    chunks = _chunks(6)
    shas = [s3_home.cas.put("runtime", c, CTX).sha256 for c in chunks]
    code = textwrap.dedent(
        """
        import sys
        from runtime_facts.config import Settings
        from runtime_facts.home import Home
        from runtime_facts.pipeline.ingest import ingest
        ingest(Home(Settings.load(sys.argv[1])), sys.argv[2:])
        """
    )
    groups = [shas[0:2], shas[2:4], shas[4:] + shas[0:1]]  # one batch offered twice
    procs = [
        subprocess.Popen([sys.executable, "-c", code, s3_home.settings.home, *group])
        for group in groups
    ]
    assert [p.wait(timeout=240) for p in procs] == [0, 0, 0]
    ingest(s3_home, [])  # fold anything a process left unfolded
    batches = s3_home.lake.read("runtime_fact_batches")
    assert sorted(batches.get_column("batch_sha256").unique()) == sorted(shas)
    facts = s3_home.lake.read("runtime_facts")
    assert facts.get_column("event_count").sum() == 2000
    accepted = [r["batch_sha256"] for r in s3_home.receipts if r["status"] == "accepted"]
    assert sorted(accepted) == sorted(shas)
