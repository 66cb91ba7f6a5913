"""Shared helpers of the reliability suite: the hostile corpus, table snapshots, receipts."""

from __future__ import annotations

import gzip
import importlib.util
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import polars as pl

from runtime_facts.home import Home
from runtime_facts.stores.receipts import verify_chain
from runtime_facts.subject import SubjectContext
from transforms.schema import FACT_KEY

REPO = Path(__file__).resolve().parents[2]
HOSTILE = REPO / "fixtures" / "hostile"
PYTHON = sys.executable

# A batch that must land whatever hostile batch is staged beside it.
GOOD_BATCH = (
    b'{"symbolId":"sym:good:a","hitCount":2,"observedAt":"2026-11-20T10:00:00Z"}\n'
    b'{"symbolId":"sym:good:a","hitCount":3,"observedAt":"2026-11-20T10:00:01Z"}\n'
    b'{"symbolId":"sym:good:b","hitCount":1,"observedAt":"2026-11-20T10:00:02Z"}\n'
)
GOOD_FACTS = [("sym:good:a", 5, 2), ("sym:good:b", 1, 1)]  # symbol, hits, events


def make_hostile() -> ModuleType:
    """The corpus generator `fixtures/hostile/make_hostile.py`, imported by path."""
    spec = importlib.util.spec_from_file_location("make_hostile", HOSTILE / "make_hostile.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def hostile_payload(name: str) -> bytes:
    """The bytes to stage for a corpus file: `.gz` files as they are, NDJSON text gzipped."""
    data = (HOSTILE / name).read_bytes()
    return data if name.endswith(".gz") else gzip.compress(data, mtime=0)


def put(home: Home, payload: bytes, ctx: SubjectContext) -> str:
    """Stage exact bytes in CAS (bypassing the CLI's size check); returns the digest."""
    return home.cas.put("runtime", payload, ctx).sha256


def snapshot(home: Home) -> dict[str, pl.DataFrame]:
    """The fact tables without their clock columns, in a canonical order."""
    batches = home.lake.read("runtime_fact_batches").drop("ingested_at")
    return {
        "runtime_facts": home.lake.read("runtime_facts")
        .drop("updated_at")
        .sort(FACT_KEY, nulls_last=False),
        "runtime_fact_batches": batches.sort(["batch_sha256", *FACT_KEY], nulls_last=False),
        "rejections": home.lake.read("rejections")
        .drop("rejected_at")
        .sort("batch_sha256", "line_number"),
    }


def receipts(home: Home) -> list[dict[str, Any]]:
    """Every receipt of the home's log, in order."""
    return list(home.receipts)


def receipts_of(home: Home, sha: str) -> list[dict[str, Any]]:
    """The receipts of one batch, in order."""
    return [r for r in home.receipts if r["batch_sha256"] == sha]


def chain_break(home: Home) -> object:
    """The first break of the home's receipts chain (None when it verifies)."""
    with home.receipts.path.open("rb") as handle:
        return verify_chain(iter(handle))[1]


def facts_summary(home: Home) -> list[tuple[str, int, int]]:
    """(symbol, hit_count, event_count) of every fact, sorted."""
    frame = home.lake.read("runtime_facts").sort("symbol_id")
    return [tuple(r) for r in frame.select("symbol_id", "hit_count", "event_count").iter_rows()]


@dataclass
class ChildResult:
    """A finished child process: exit status, output and its peak RSS (from `os.wait4`)."""

    returncode: int
    stdout: bytes
    stderr: str
    max_rss_bytes: int


def run_python(code: str, *args: str, env: dict[str, str] | None = None) -> ChildResult:
    """Run `python -c code args...` from the repo root and reap it with `os.wait4`."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [PYTHON, "-c", code, *args], cwd=REPO, env=full_env, stdout=out, stderr=err
        )
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return ChildResult(
            proc.returncode,
            out.read(),
            err.read().decode(errors="replace"),
            usage.ru_maxrss * 1024,  # kilobytes on Linux
        )


def json_lines(data: bytes) -> list[Any]:
    """Parse NDJSON output of a child process."""
    return [orjson.loads(line) for line in data.splitlines() if line.strip()]
