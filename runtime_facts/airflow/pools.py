"""The Airflow pool of the commit domains (no Airflow import: launchers read it cheaply).

`ingest_batch`, `fold` and `score` take a tenant's commit lock; they run in this pool so that
DAG runs sharing a home queue in Airflow, visibly, instead of waiting on the lock inside a
worker slot. A task in a pool that does not exist is never scheduled: every launcher creates
it (`airflow pools set runtime_facts_commit 8 "..."`; `make airflow` and
`make distributed-demo` do), and a deployment must too (docs/deploy.md).
"""

COMMIT_POOL = "runtime_facts_commit"
COMMIT_POOL_SLOTS = 8
COMMIT_POOL_DESCRIPTION = "runtime-facts: tasks that commit to the lake (one tenant lock each)"


def pool_command(airflow: str) -> list[str]:
    """The `airflow pools set` command that creates (or resizes) the pool."""
    return [airflow, "pools", "set", COMMIT_POOL, str(COMMIT_POOL_SLOTS), COMMIT_POOL_DESCRIPTION]
