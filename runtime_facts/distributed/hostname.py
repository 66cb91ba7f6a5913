"""Worker names for `[core] hostname_callable`: tell apart Celery workers sharing one host.

Airflow records `socket.getfqdn()` as each task instance's `hostname`, which is the same for
every worker on one machine. A worker started with `RUNTIME_FACTS_WORKER_NAME=w1` reports
`w1@<fqdn>` instead, the name Celery knows it by (`--celery-hostname w1@%h`).
"""

from __future__ import annotations

import os
import socket

WORKER_NAME_VAR = "RUNTIME_FACTS_WORKER_NAME"


def worker_hostname() -> str:
    """`<worker name>@<fqdn>` when the worker has a name, else the fqdn (Airflow's default)."""
    fqdn = socket.getfqdn()
    name = os.environ.get(WORKER_NAME_VAR)
    return f"{name}@{fqdn}" if name else fqdn
