"""`import runtime_facts`: what it sets before polars loads (runtime_facts.environment)."""

from __future__ import annotations

import os
import subprocess
import sys

from runtime_facts.environment import MALLOC_CONF


def _python(code: str, **env: str | None) -> subprocess.CompletedProcess[str]:
    unset = {"_RJEM_MALLOC_CONF", *(k for k, v in env.items() if v is None)}
    environ = {k: v for k, v in os.environ.items() if k not in unset}
    environ.update({k: v for k, v in env.items() if v is not None})
    return subprocess.run(
        [sys.executable, "-c", code], env=environ, capture_output=True, text=True, check=True
    )


def test_polars_allocator_gets_the_default_unless_the_operator_set_one() -> None:
    show = "import os, runtime_facts; print(repr(os.environ['_RJEM_MALLOC_CONF']))"
    assert _python(show).stdout.strip() == repr(MALLOC_CONF)
    assert _python(show, _RJEM_MALLOC_CONF="").stdout.strip() == "''"
    assert _python(show, _RJEM_MALLOC_CONF="narenas:2").stdout.strip() == "'narenas:2'"


def test_polars_allocator_is_left_alone_once_a_native_library_is_loaded() -> None:
    """Too late to matter then, and adding a variable could race a native thread's getenv."""
    show = "import os, duckdb, runtime_facts; print(os.environ.get('_RJEM_MALLOC_CONF'))"
    assert _python(show).stdout.strip() == "None"


def test_polars_allocator_takes_the_default_without_complaint() -> None:
    """jemalloc names every option it cannot parse on stderr (`<jemalloc>: Invalid conf
    pair`), and ignores it."""
    run = _python(
        "import runtime_facts, polars as pl\n"
        "frame = pl.DataFrame({'a': list(range(100_000))})\n"
        "print(frame.group_by(pl.col('a') % 7).agg(pl.len()).height)"
    )
    assert run.stdout.strip() == "7"
    assert "jemalloc" not in run.stderr


def test_openblas_gets_one_thread_unless_the_operator_chose() -> None:
    """OpenBLAS starts its extra threads when numpy loads: none with one thread."""
    show = (
        "import os\n"
        "before = len(os.listdir('/proc/self/task'))\n"
        "import runtime_facts, numpy\n"
        "print(len(os.listdir('/proc/self/task')) - before)"
    )
    assert _python(show, OPENBLAS_NUM_THREADS=None).stdout.strip() == "0"
    assert _python(show, OPENBLAS_NUM_THREADS="2").stdout.strip() == "1"


def test_openblas_is_left_alone_once_numpy_is_loaded() -> None:
    show = "import os, numpy, runtime_facts; print(os.environ.get('OPENBLAS_NUM_THREADS'))"
    assert _python(show, OPENBLAS_NUM_THREADS=None).stdout.strip() == "None"
