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
