"""Reading the lake runs no Python code on native worker threads with small stacks.

`pl.scan_delta` (and `pl.scan_pyarrow_dataset`) call back into Python from polars' tokio
workers, whose stacks are 2 MiB; Python code there (a garbage collection running
finalizers, for one) can overflow them, and that kills the process without a traceback.
The detector: with the collection threshold at its lowest, every thread that allocates
Python objects soon runs a collection, and a `gc.callbacks` hook notes the stack size of
the thread it runs on (glibc's `pthread_getattr_np`). With `pl.scan_delta` it counted
hundreds of collections on 2 MiB stacks for these reads; with `Lake.scan`, none.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import orjson
import polars as pl
import pytest

from runtime_facts.home import Home
from runtime_facts.pipeline.ingest import ingest

# Run in a child process: the collection threshold and the hook must not leak into (or be
# disturbed by) the test process.
DETECTOR = r"""
import ctypes, gc, sys, threading
import orjson
SMALL_STACK = 4 << 20  # Python's own threads get the 8 MiB default; tokio's get 2 MiB
libc = ctypes.CDLL(None)
libc.pthread_self.restype = ctypes.c_ulong

def stack_size():
    attr = ctypes.create_string_buffer(256)
    libc.pthread_getattr_np(ctypes.c_ulong(libc.pthread_self()), attr)
    base, size = ctypes.c_void_p(), ctypes.c_size_t()
    libc.pthread_attr_getstack(attr, ctypes.byref(base), ctypes.byref(size))
    libc.pthread_attr_destroy(attr)
    return size.value

def run(work):
    seen = []
    def hook(phase, _):
        if phase == "start" and stack_size() < SMALL_STACK:
            seen.append(stack_size())
    gc.callbacks.append(hook)
    gc.set_threshold(1)
    try:
        work()
    finally:
        gc.set_threshold(700)
        gc.callbacks.remove(hook)
    return len(seen)

def allocate():
    kept = [[i] for i in range(10_000)]  # held: each new list counts towards a collection
    gc.collect()  # and one collection for certain, wherever the threshold left the count
    sys.stderr.write(f"control thread: stack {stack_size()}, {len(kept)} lists\n")

def on_small_python_thread():
    previous = threading.stack_size(2 << 20)
    worker = threading.Thread(target=allocate)
    worker.start()
    worker.join()
    threading.stack_size(previous)

# First, in a process without exited threads: glibc reuses a dead thread's cached (larger)
# stack for a new thread, so later the control thread could get 8 MiB.
control = run(on_small_python_thread)

from runtime_facts.config import Settings
from runtime_facts.home import Home
from runtime_facts.analyst.query import read_table

home = Home(Settings.load(sys.argv[1]))
lake = home.lake

def read_lake():
    for _ in range(3):
        lake.read("runtime_facts", tenant="acme")
        lake.scan("runtime_fact_batches").select("batch_sha256").collect()
        read_table("reachability_states", tenant="acme", home=home).collect()
        lake.changes("runtime_fact_batches", 0, lake.version("runtime_fact_batches"))

read_lake()  # imports and first opens outside the measured block: they are slow at threshold 1
print(orjson.dumps({"control": control, "lake": run(read_lake)}).decode())
"""


@pytest.fixture
def filled(home: Home, stage: Callable[..., str], clock: Callable[[], datetime]) -> Home:
    stage('{"symbolId":"sym:a","hitCount":2}\n')
    stage('{"symbolId":"sym:b","hitCount":3}\n')
    ingest(home, clock=clock)
    return home


def test_reading_the_lake_runs_no_python_on_small_stacks(filled: Home) -> None:
    out = subprocess.run(
        [sys.executable, "-c", DETECTOR, str(filled.root)],
        capture_output=True,
        check=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    counts = orjson.loads(out.stdout)
    if counts["control"] == 0:
        # The detector is blind in this process (seen only inside a long suite run, cause
        # not yet known): it proves nothing either way, so it must not pass or fail.
        pytest.skip(f"the gc hook saw no collection on a 2 MiB control thread: {out.stderr!r}")
    assert counts["lake"] == 0


def test_scans_keep_the_tenant_partition_and_the_version(
    filled: Home, stage: Callable[..., str], clock: Callable[[], datetime]
) -> None:
    lake = filled.lake
    before = lake.version("runtime_facts")
    stage('{"symbolId":"sym:c","hitCount":4}\n')
    ingest(filled, clock=clock)
    assert lake.scan("runtime_facts", tenant="nobody").collect().height == 0
    now = (
        lake.scan("runtime_facts", tenant="acme").select(pl.col("hit_count").sum()).collect().item()
    )
    then = (
        lake.scan("runtime_facts", version=before)
        .select(pl.col("hit_count").sum())
        .collect()
        .item()
    )
    assert (now, then) == (9, 5)
    assert lake.scan("runtime_facts").collect_schema().names() == list(
        lake.read("runtime_facts").columns
    )
