"""Reading the lake runs no Python code on native worker threads.

`pl.scan_delta` (and `pl.scan_pyarrow_dataset`) call back into Python from polars' tokio
workers, whose stacks are 2 MiB; Python code there (a garbage collection running
finalizers, for one) can overflow them, and that kills the process without a traceback.
The detector: with the collection threshold at its lowest, every thread that allocates
Python objects soon runs a collection, and a `gc.callbacks` hook notes each collection that
runs on a thread Python did not start (`threading` knows it only as a `_DummyThread`). Its
control is such a thread, started with `pthread_create` and a 2 MiB stack, calling Python
through ctypes. With `pl.scan_delta` the hook counted ~180 collections on native threads for
these reads; with `Lake.scan`, none.

(The detector used to tell native threads by a stack smaller than 4 MiB. Inside long suite
runs its control, a Python thread asked for 2 MiB, was sometimes blind. The cause was not
proven; one that fits is glibc handing a new thread a cached stack of up to four times the
size asked for, so the control could run on 8 MiB. Telling threads by who started them does
not depend on stack sizes at all.)
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
libc = ctypes.CDLL(None)  # a CDLL call releases the GIL: the native thread can take it
libc.pthread_self.restype = ctypes.c_ulong

def stack_size():
    attr = ctypes.create_string_buffer(256)
    libc.pthread_getattr_np(ctypes.c_ulong(libc.pthread_self()), attr)
    base, size = ctypes.c_void_p(), ctypes.c_size_t()
    libc.pthread_attr_getstack(attr, ctypes.byref(base), ctypes.byref(size))
    libc.pthread_attr_destroy(attr)
    return size.value

def native():
    # A thread Python did not start (a Rust or C worker calling back into Python) is known
    # to `threading` only as a _DummyThread, whatever its stack size.
    return isinstance(threading.current_thread(), threading._DummyThread)

def run(work):
    seen = []
    def hook(phase, _):
        if phase == "start" and native():
            seen.append(stack_size())
    gc.callbacks.append(hook)
    gc.set_threshold(1)
    try:
        work()
    finally:
        gc.set_threshold(700)
        gc.callbacks.remove(hook)
    return seen

def allocate():
    kept = [[i] for i in range(10_000)]  # held: each new list counts towards a collection
    gc.collect()  # and one collection for certain, wherever the threshold left the count
    sys.stderr.write(f"control thread: stack {stack_size()}, {len(kept)} lists\n")

ENTRY = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)

def on_native_thread():
    # The control: a thread started by pthread_create with a 2 MiB stack, as tokio starts its
    # workers, running Python through a ctypes callback, as a Rust callback into Python does.
    entry = ENTRY(lambda _: allocate())
    attr = ctypes.create_string_buffer(256)
    libc.pthread_attr_init(attr)
    libc.pthread_attr_setstacksize(attr, ctypes.c_size_t(2 << 20))
    thread = ctypes.c_ulong()
    assert libc.pthread_create(ctypes.byref(thread), attr, entry, None) == 0
    libc.pthread_join(thread, None)
    libc.pthread_attr_destroy(attr)

control = run(on_native_thread)

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
    # The control proves the detector sees Python on a native thread in this very process.
    assert counts["control"], f"the detector missed its own native thread: {out.stderr!r}"
    assert counts["lake"] == [], f"collections on native threads (their stack sizes): {counts}"


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
