"""A pytest plugin for hunting native crashes: Python code on threads Python did not start.

    .venv/bin/python -m pytest -p tests.native_census tests/runtime_facts tests/transforms
    # writes native-census.json (or $NATIVE_CENSUS_OUT): per test module, each place where a
    # garbage collection ran on a native thread (Rust, C++ or C, with the thread's stack size)
    # and the threads alive when the module ended, by name

A collection on a native thread runs finalizers on a stack Python did not size (tokio's are
2 MiB), which is how `pl.scan_delta` could crash the process (docs/reliability.md). With the
collection threshold lowered to 100, every thread that allocates Python objects soon collects,
so the hook sees where Python runs. A thread Python starts is briefly unknown to `threading`
while it bootstraps; those collections (in `threading.py`) are left out.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import threading
import traceback
from collections import Counter
from typing import Any

import pytest

_libc = ctypes.CDLL(None)
_libc.pthread_self.restype = ctypes.c_ulong
_records: Counter[tuple[str, int, str]] = Counter()
_threads: dict[str, dict[str, int]] = {}
_current = ["<collection>"]


def _stack_size() -> int:
    attr = ctypes.create_string_buffer(256)
    _libc.pthread_getattr_np(ctypes.c_ulong(_libc.pthread_self()), attr)
    base, size = ctypes.c_void_p(), ctypes.c_size_t()
    _libc.pthread_attr_getstack(attr, ctypes.byref(base), ctypes.byref(size))
    _libc.pthread_attr_destroy(attr)
    return int(size.value)


def _hook(phase: str, _info: dict[str, Any]) -> None:
    if phase != "start" or not isinstance(threading.current_thread(), threading._DummyThread):
        return
    frames = traceback.extract_stack(limit=10)[:-1]
    if frames and os.path.basename(frames[0].filename) == "threading.py":
        return  # a Python thread still bootstrapping
    where = " <- ".join(
        f"{os.path.basename(f.filename)}:{f.lineno}:{f.name}" for f in reversed(frames[-5:])
    )
    _records[(_current[0].split("::")[0], _stack_size() >> 20, where)] += 1


def pytest_configure(config: pytest.Config) -> None:
    gc.callbacks.append(_hook)
    gc.set_threshold(100)


def pytest_runtest_setup(item: pytest.Item) -> None:
    _current[0] = item.nodeid


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    module = item.nodeid.split("::")[0]
    if nextitem is not None and nextitem.nodeid.split("::")[0] == module:
        return
    names: Counter[str] = Counter()
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as comm:
                names[comm.read().strip()] += 1
        except OSError:
            continue
    _threads[module] = dict(names.most_common())


def pytest_unconfigure(config: pytest.Config) -> None:
    gc.callbacks.remove(_hook)
    gc.set_threshold(700)
    native = [[m, mib, where, n] for (m, mib, where), n in _records.most_common()]
    out = os.environ.get("NATIVE_CENSUS_OUT", "native-census.json")
    with open(out, "w") as handle:
        json.dump({"native": native, "threads": _threads}, handle, indent=1)
