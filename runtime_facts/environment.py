"""The process environment is written at start-up only, never while native threads run.

glibc's `setenv` reallocates the C `environ` array whenever a variable is *added*, and frees
the old one. `getenv` in another thread may be walking that old array at that moment; polars
calls `getenv` from its tokio and pool threads all the time (`POLARS_LOG_CONCURRENCY`, ...).
It then reads freed memory, and the process dies of SIGSEGV (a core of such a crash:
docs/reliability.md). Replacing the value of a variable that exists swaps one pointer and is
safe. So: runtime_facts code writes no variable after start-up
(`tests/runtime_facts/test_environment.py` checks the source), and a process that will run
Airflow tasks in-process gives the variables Airflow's task runner exports a value up front,
so that the runner's `os.environ.update` only replaces them.
"""

from __future__ import annotations

import os
import sys

# What Airflow's task runner exports before each task (airflow.sdk.execution_time.context,
# `context_to_airflow_vars(..., in_env_var_format=True)`).
AIRFLOW_CONTEXT_VARS = (
    "AIRFLOW_CTX_DAG_EMAIL", "AIRFLOW_CTX_DAG_OWNER", "AIRFLOW_CTX_DAG_ID",
    "AIRFLOW_CTX_TASK_ID", "AIRFLOW_CTX_LOGICAL_DATE", "AIRFLOW_CTX_TRY_NUMBER",
    "AIRFLOW_CTX_DAG_RUN_ID", "AIRFLOW_CTX_TEAM_NAME",
)  # fmt: skip


def reserve_airflow_context() -> None:
    """Give Airflow's context variables a value now (at start-up), so that running tasks in
    this process later replaces values instead of adding variables."""
    for name in AIRFLOW_CONTEXT_VARS:
        os.environ.setdefault(name, "")


# polars' allocator (jemalloc) reads this once, at its first allocation. Its defaults keep freed
# pages for ten seconds in each of eight arenas; an ingest frees hundreds of MiB between
# commits while another library (the Delta writer) asks the system for more, so the peak held
# the freed pages too. One arena returning them after 0.3 s: the 2M-event ingest's peak RSS
# 645 -> 575 MiB for 2 % more CPU (docs/benchmarks.md, "Speed v2, seventh step").
MALLOC_CONF = "narenas:1,dirty_decay_ms:300,muzzy_decay_ms:0"
# Loaded, any of these may run native threads already (and polars has read its setting).
_NATIVE = ("polars", "duckdb", "deltalake", "pyarrow")


def tune_allocator() -> None:
    """Give polars' allocator `MALLOC_CONF` unless the operator set `_RJEM_MALLOC_CONF`
    (empty: jemalloc's defaults) or a native library is loaded already: then it is too late
    to matter, and adding a variable could race a native thread's `getenv`."""
    if any(name in sys.modules for name in _NATIVE):
        return
    os.environ.setdefault("_RJEM_MALLOC_CONF", MALLOC_CONF)


# numpy's OpenBLAS starts a thread per core when numpy loads, and those threads spin while
# they wait. Nothing here multiplies matrices (the graph searches are integer numpy and
# scipy.sparse), so they only took CPU from the prepare threads: ~0.1 CPU-s and ~3 % of the
# 2M-event ingest's wall time on 2 cores (docs/benchmarks.md, "Speed v2, eighth step").
BLAS_THREADS = "1"


def limit_blas_threads() -> None:
    """One OpenBLAS thread unless the operator set `OPENBLAS_NUM_THREADS`, or numpy (or a
    native library that may run threads) is loaded already."""
    if any(name in sys.modules for name in (*_NATIVE, "numpy")):
        return
    os.environ.setdefault("OPENBLAS_NUM_THREADS", BLAS_THREADS)
