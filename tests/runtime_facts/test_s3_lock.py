"""The S3 commit lock on a real S3 API (moto server): renewed while held, fenced when lost."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from runtime_facts.config import Settings
from runtime_facts.errors import LockLostError
from runtime_facts.home import Home
from runtime_facts.pipeline.ingest import ingest
from runtime_facts.stores.s3 import S3Lock, S3ObjectStore
from runtime_facts.subject import SubjectContext

CTX = SubjectContext("acme", "cg-s3", scan_id="s-lease")
REPO = Path(__file__).resolve().parents[2]


def test_a_lease_is_renewed_while_its_holder_works(s3_home: Home) -> None:
    store = s3_home.objects
    assert isinstance(store, S3ObjectStore)
    holder = S3Lock(store, "locks/renewed.lock", lease_seconds=1.5)
    holder.acquire()
    refused: list[str] = []

    def contender() -> None:
        try:
            S3Lock(store, "locks/renewed.lock", lease_seconds=1.5).acquire(timeout=3.5)
        except TimeoutError:
            refused.append("timed out")

    thread = threading.Thread(target=contender)
    thread.start()
    thread.join()  # 3.5 s: more than twice the lease, and the holder still holds it
    holder.check()
    holder.release()
    assert refused == ["timed out"]
    again = S3Lock(store, "locks/renewed.lock", lease_seconds=1.5)
    again.acquire(timeout=2)
    again.release()


def test_a_stalled_holder_is_fenced(s3_home: Home) -> None:
    store = s3_home.objects
    assert isinstance(store, S3ObjectStore)
    stalled = S3Lock(store, "locks/stalled.lock", lease_seconds=1.0)
    stalled.acquire()
    stalled._stop.set()  # the holder stops renewing, as a paused process would
    time.sleep(1.2)

    with pytest.raises(LockLostError) as info:
        stalled.check()
    assert info.value.reason == "commit_lock_lost"


CHILD = """
import sys
from datetime import UTC, datetime
from runtime_facts.config import Settings
from runtime_facts.errors import LockLostError
from runtime_facts.home import Home
from runtime_facts.pipeline.commit import _commit_domain
from runtime_facts.pipeline.prepare import prepare_batch

home = Home(Settings.load(sys.argv[1]))
clock = lambda: datetime(2026, 11, 26, tzinfo=UTC)
prepared = prepare_batch(home, sys.argv[2], clock=clock)
with home.commit_lock("acme") as fence:
    print("locked", flush=True)
    sys.stdin.readline()  # the parent stops this process here for longer than the lease
    try:
        _commit_domain(home, "acme", [prepared], clock, fence)
    except LockLostError as exc:
        print("fenced", exc.reason, flush=True)
        sys.exit(0)
print("committed", flush=True)
"""


@pytest.mark.slow
def test_a_commit_held_past_its_lease_is_refused_and_writes_nothing(s3_home: Home) -> None:
    os.environ["RUNTIME_FACTS__INGEST__LOCK_LEASE_SECONDS"] = "2"
    home = Home(Settings.load(s3_home.settings.home))
    home.ensure_lake()
    late = home.cas.put("runtime", gzip.compress(b'{"symbolId":"sym:late","hitCount":5}\n'), CTX)
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CHILD), home.settings.home, late.sha256],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert child.stdout is not None
        assert child.stdin is not None
        assert child.stdout.readline().strip() == "locked"
        child.send_signal(signal.SIGSTOP)  # a GC pause, a frozen VM: the lease runs out
        other = home.cas.put(
            "runtime", gzip.compress(b'{"symbolId":"sym:other","hitCount":7}\n'), CTX
        )
        summary = ingest(home, [other.sha256])  # waits for the lapsed lease, then commits
        assert summary.accepted == 1
        versions = home.lake.version("runtime_fact_batches")
        child.send_signal(signal.SIGCONT)
        child.stdin.write("go\n")
        child.stdin.flush()
        out, _ = child.communicate(timeout=60)
    finally:
        child.kill()
    assert out.strip() == "fenced commit_lock_lost"
    assert home.lake.version("runtime_fact_batches") == versions
    assert [r["batch_sha256"] for r in home.receipts] == [other.sha256]
    facts = home.lake.read("runtime_facts")
    assert facts.get_column("symbol_id").to_list() == ["sym:other"]
