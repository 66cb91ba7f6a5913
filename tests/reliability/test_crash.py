"""Crash safety: `kill -9` anywhere in an ingest, rerun, and the result equals an unbroken run.

The loop reuses one staged dataset (11 small batches, two tenants, one batch rejected with
line findings, so every table is written; 8 batches per commit group, so there are two).
Child processes are started one iteration ahead and wait for a home on stdin, so the kill
delay is measured from the start of `ingest` itself, not from interpreter start-up.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import random
import shutil
import signal
import stat
import subprocess
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from runtime_facts.config import Settings
from runtime_facts.home import Home
from runtime_facts.ops.receipts_verify import verify_receipts
from runtime_facts.pipeline.ingest import ingest
from runtime_facts.stores.cas import CasStore
from runtime_facts.stores.objects import LocalObjectStore
from runtime_facts.subject import SubjectContext
from tests.reliability.conftest import PYTHON, REPO, chain_break, receipts, snapshot

ITERATIONS = 30
SEED = 20261127
START = datetime(2026, 11, 20, tzinfo=UTC)
CONTEXTS = [
    SubjectContext("acme", "cg-1", scan_id="s-1"),
    SubjectContext("acme", "cg-1", image_digest="sha256:abc"),
    SubjectContext("globex", "cg-9", component="ledger", version="3.1.0"),
]

# The child reads "<home> <k>" on stdin; k > 0 makes it SIGKILL itself right after its k-th
# durable write (Delta commit, receipt append, object put/delete, outbox append).
CHILD = """
import os, signal, sys, time
from runtime_facts.config import Settings
from runtime_facts.home import Home
from runtime_facts.pipeline.ingest import ingest
from runtime_facts.stores.lake import Lake
from runtime_facts.stores.objects import LocalObjectStore
from runtime_facts.stores.outbox import Outbox
from runtime_facts.stores.receipts import ReceiptLog
writes = 0
kill_at = 0
def counted(cls, name):
    real = getattr(cls, name)
    def write(*args, **kwargs):
        global writes
        out = real(*args, **kwargs)
        writes += 1
        if writes == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    setattr(cls, name, write)
for cls, name in [(Lake, "append"), (Lake, "replace_where"), (ReceiptLog, "append"),
                  (LocalObjectStore, "put"), (LocalObjectStore, "delete"), (Outbox, "append")]:
    counted(cls, name)
sys.stdout.write("ready\\n"); sys.stdout.flush()
root, kill = sys.stdin.readline().split()
kill_at = int(kill)
home = Home(Settings.load(root))
started = time.perf_counter()
summary = ingest(home)
sys.stdout.write(f"done {time.perf_counter() - started:.3f} {writes}\\n")
sys.stdout.flush()
"""


def _batch(i: int, rng: random.Random) -> bytes:
    lines = []
    for j in range(150):
        stamp = (START + timedelta(seconds=i * 1000 + j)).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "symbolId": f"sym:java:C{rng.randrange(40)}::m",
            "hitCount": rng.randrange(1, 1000),
            "codeId": f"b{rng.randrange(3)}",
            "process": {"id": 1, "name": f"p{rng.randrange(3)}"},
            "observedAt": stamp,
        }
        lines.append(orjson.dumps(event))
    if i == 5:  # strict mode rejects this one, with line findings in `rejections`
        lines[7] = b'{"symbolId":"sym:bad","hitCount":0}'
        lines[20] = b'{"hitCount":1}'
    return gzip.compress(b"\n".join(lines) + b"\n", mtime=0)


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with the dataset staged in CAS and nothing ingested."""
    root = tmp_path_factory.mktemp("staged") / "home"
    home = Home(Settings.load(str(root)))
    rng = random.Random(SEED)
    for i in range(11):
        home.cas.put("runtime", _batch(i, rng), CONTEXTS[i % len(CONTEXTS)])
    return root


class Warm:
    """A child interpreter that has imported everything and waits for a home."""

    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            [PYTHON, "-c", CHILD],
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )

    def start(self, home: Path, kill_after_write: int = 0) -> float:
        """Wait until ready, hand it the home; returns the moment ingest starts."""
        assert self.proc.stdout is not None
        assert self.proc.stdin is not None
        assert self.proc.stdout.readline() == b"ready\n"
        self.proc.stdin.write(f"{home} {kill_after_write}\n".encode())
        self.proc.stdin.flush()
        return time.perf_counter()

    def finish(self) -> tuple[float, int]:
        """Wait for a clean end; returns the ingest duration and the durable writes made."""
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        assert self.proc.wait(timeout=120) == 0
        _, seconds, writes = line.split()
        return float(seconds), int(writes)

    def killed(self) -> bool:
        """True when the child died of SIGKILL."""
        return self.proc.wait(timeout=120) == -signal.SIGKILL

    def kill(self) -> None:
        """SIGKILL, no clean-up of any kind."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=60)


@dataclass
class Reference:
    """An unbroken run of the dataset: its tables, receipt statuses, duration and writes."""

    batches: list[str]
    state: dict[str, pl.DataFrame]
    statuses: dict[str, str]
    seconds: float
    writes: int


@pytest.fixture(scope="module")
def pool() -> Iterator[deque[Warm]]:
    """Warm children; each test takes one and starts the next before using it."""
    warm: deque[Warm] = deque([Warm()])
    yield warm
    for child in warm:
        child.kill()


def _take(pool: deque[Warm], more: bool = True) -> Warm:
    child = pool.popleft()
    if more or not pool:
        pool.append(Warm())
    return child


@pytest.fixture(scope="module")
def reference(
    staged: Path, pool: deque[Warm], tmp_path_factory: pytest.TempPathFactory
) -> Reference:
    root = tmp_path_factory.mktemp("reference") / "home"
    shutil.copytree(staged, root)
    child = _take(pool)
    child.start(root)
    seconds, writes = child.finish()
    statuses = {r["batch_sha256"]: r["status"] for r in receipts(Home(Settings.load(str(root))))}
    batches = sorted(CasStore(LocalObjectStore(staged)).list("runtime"))
    assert sorted(statuses) == batches
    assert list(statuses.values()).count("rejected") == 1
    return Reference(batches, _state(root), statuses, seconds, writes)


def _state(root: Path) -> dict[str, pl.DataFrame]:
    home = Home(Settings.load(str(root)))
    tables = snapshot(home)
    tables["reachability_states"] = (
        home.lake.read("reachability_states")
        .drop("computed_at", "fact_version")
        .sort("tenant", "callgraph_id", "subject_key", "symbol_id")
    )
    return tables


def _rerun_and_compare(root: Path, ref: Reference, what: str) -> None:
    """Ingest to completion after the kill; everything must equal the unbroken run."""
    ingest(Home(Settings.load(str(root))))
    state = _state(root)
    for name, frame in ref.state.items():
        try:
            assert_frame_equal(state[name], frame)
        except AssertionError as exc:
            raise AssertionError(f"{what}: {name} differs from the unbroken run") from exc
    home = Home(Settings.load(str(root)))
    log = receipts(home)
    assert Counter(r["batch_sha256"] for r in log) == Counter(ref.batches), (
        f"{what}: a batch was lost or receipted twice"
    )
    assert {r["batch_sha256"]: r["status"] for r in log} == ref.statuses, what
    assert chain_break(home) is None, what
    report = verify_receipts(home)
    assert report.ok, (what, report.first_break)
    assert report.unmirrored == 0, what


@pytest.mark.slow
def test_kill_9_at_random_points_then_rerun_equals_an_unbroken_run(
    staged: Path, pool: deque[Warm], reference: Reference, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    killed_mid_run = 0
    for i in range(ITERATIONS):
        root = tmp_path / f"run-{i:02d}"
        shutil.copytree(staged, root)
        child = _take(pool)
        delay = reference.seconds * (i + rng.random()) / ITERATIONS  # 0 .. the full run
        started = child.start(root)
        time.sleep(max(0.0, started + delay - time.perf_counter()))
        killed_mid_run += child.proc.poll() is None
        child.kill()
        _rerun_and_compare(root, reference, f"kill -9 after {delay:.2f}s")
        shutil.rmtree(root)
    assert killed_mid_run >= ITERATIONS * 2 // 3  # most kills really interrupted an ingest


@pytest.mark.slow
def test_kill_9_after_every_durable_write_then_rerun_equals_an_unbroken_run(
    staged: Path, pool: deque[Warm], reference: Reference, tmp_path: Path
) -> None:
    """Timed kills rarely land in a millisecond window (Delta commit done, receipt not yet
    written); here the child kills itself right after each of its writes in turn."""
    assert reference.writes >= 20
    for k in range(1, reference.writes + 1):
        root = tmp_path / f"write-{k:02d}"
        shutil.copytree(staged, root)
        child = _take(pool, more=k < reference.writes)
        child.start(root, kill_after_write=k)
        assert child.killed(), f"the child did not reach write {k}"
        _rerun_and_compare(root, reference, f"kill -9 after write {k}")
        shutil.rmtree(root)


# --- the atomic CAS write --------------------------------------------------------------------

CTX = SubjectContext("acme", "cg-1", scan_id="s-1")
DATA = gzip.compress(b'{"symbolId":"a","hitCount":1}\n', mtime=0)


def _leftovers(home: Home) -> list[str]:
    folder = home.root / "cas" / "reachability" / "runtime"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _is_object(fd_or_path: int | str) -> bool:
    """True for the batch's own bytes (not its sidecar): matched on size."""
    size = (
        os.fstat(fd_or_path).st_size
        if isinstance(fd_or_path, int)
        else Path(fd_or_path).stat().st_size
    )
    return size == len(DATA)


class _TornWriter:
    """A file handle whose write stores half the bytes, then fails (disk full)."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    def __enter__(self) -> _TornWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()

    def write(self, data: bytes) -> None:
        self.handle.write(data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.handle, name)


def _inject(failing: str, patch: pytest.MonkeyPatch) -> None:
    real_fsync, real_link, real_fdopen = os.fsync, os.link, os.fdopen

    def fsync(fd: int) -> None:
        if stat.S_ISREG(os.fstat(fd).st_mode) and _is_object(fd):
            raise OSError(5, "I/O error")
        real_fsync(fd)

    def link(src: str, dst: str) -> None:
        if _is_object(src):
            raise OSError(28, "No space left on device")
        real_link(src, dst)

    def fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
        handle = real_fdopen(fd, *args, **kwargs)
        opened.append(fd)
        return _TornWriter(handle) if len(opened) == 2 else handle

    opened: list[int] = []  # the sidecar is written first, the object second
    patch.setattr(os, {"fsync": "fsync", "link": "link", "write": "fdopen"}[failing],
                  {"fsync": fsync, "link": link, "write": fdopen}[failing])  # fmt: skip


@pytest.mark.parametrize("failing", ["fsync", "link", "write"])
def test_a_put_that_fails_midway_leaves_no_object_and_no_temp_file(
    failing: str, home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The object's fsync, its create-if-absent link, or its write fails (EIO, ENOSPC)."""
    with monkeypatch.context() as patch:
        _inject(failing, patch)
        with pytest.raises(OSError, match=r"I/O error|No space left"):
            home.cas.put("runtime", DATA, CTX)
    names = _leftovers(home)
    assert not [n for n in names if n.startswith(".tmp-")], names  # no temp file left
    assert list(home.cas.list("runtime")) == []  # no (partial) object visible
    assert ingest(home).batches == 0
    # and the retry after the fault succeeds, intact
    result = home.cas.put("runtime", DATA, CTX)
    assert result.created
    assert home.cas.get("runtime", result.sha256) == DATA


def test_temp_files_left_by_a_killed_writer_are_invisible(home: Home) -> None:
    """What `kill -9` between write and rename leaves: a `.tmp-*.part` file, never an object."""
    sha = home.cas.put("runtime", DATA, CTX).sha256
    folder = home.root / "cas" / "reachability" / "runtime"
    (folder / ".tmp-abc123.part").write_bytes(DATA[:10])
    assert list(home.cas.list("runtime")) == [sha]
    summary = ingest(home)
    assert (summary.batches, summary.accepted) == (1, 1)


def test_a_sidecar_without_its_object_is_not_a_batch_until_the_put_is_retried(
    home: Home,
) -> None:
    """A crash between the sidecar write and the object write: nothing half-staged is ingested."""
    sha = home.cas.put("runtime", DATA, CTX).sha256
    (home.root / "cas" / "reachability" / "runtime" / sha).unlink()
    assert list(home.cas.list("runtime")) == []
    assert ingest(home).batches == 0
    assert home.cas.put("runtime", DATA, CTX).created  # the retry completes the staging
    assert ingest(home).accepted == 1


def test_a_torn_receipt_line_is_cut_and_the_chain_still_verifies(home: Home) -> None:
    """`kill -9` inside a log append leaves a newline-less tail; the next run repairs it."""
    home.cas.put("runtime", DATA, CTX)
    ingest(home)
    good = home.receipts.path.read_bytes()
    with home.receipts.path.open("ab") as handle:
        handle.write(b'{"batch_sha256":"torn","status":"acc')
    home.cas.put("runtime", gzip.compress(b'{"symbolId":"b","hitCount":1}\n', mtime=0), CTX)
    assert ingest(home).accepted == 1
    assert home.receipts.path.read_bytes().startswith(good)
    assert chain_break(home) is None
    assert [r["status"] for r in receipts(home)] == ["accepted", "accepted"]


def test_subjects_folded_but_never_rescored_are_rescored_by_the_next_run(home: Home) -> None:
    """The window the kill loop found: fold committed, process gone before the recompute."""
    home.cas.put("runtime", DATA, CTX)
    ingest(home, recompute=False)  # stops exactly where a kill after the fold would
    assert home.lake.read("reachability_states").is_empty()
    assert (home.root / "state" / "recompute-pending" / f"{CTX.tenant}.json").exists()

    summary = ingest(home)  # nothing new to fold

    assert summary.batches == 0
    states = home.lake.read("reachability_states")
    assert states.select("symbol_id", "state", "runtime_hit_count").rows() == [("a", "RO", 1)]
    assert not (home.root / "state" / "recompute-pending" / f"{CTX.tenant}.json").exists()
