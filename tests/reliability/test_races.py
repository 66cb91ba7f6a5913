"""Races between processes (not threads): the same batch counts once, different ones all land.

Three child interpreters import everything, report ready, and block on stdin; the parent
releases them together, so their ingests overlap for real (validation, commit, fold).
"""

from __future__ import annotations

import gzip
import os
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest

from runtime_facts.config import Settings
from runtime_facts.home import Home
from runtime_facts.ops.receipts_verify import verify_receipts
from runtime_facts.pipeline.ingest import ingest
from runtime_facts.subject import SubjectContext
from tests.reliability.conftest import PYTHON, REPO, chain_break, receipts, snapshot

CTX = SubjectContext("acme", "cg-1", scan_id="s-1")

CHILD = """
import sys, orjson
from runtime_facts.config import Settings
from runtime_facts.home import Home
from runtime_facts.pipeline.ingest import ingest_one
from runtime_facts.pipeline.ingest import ingest
sys.stdout.write("ready\\n"); sys.stdout.flush()
job = orjson.loads(sys.stdin.readline())
home = Home(Settings.load(job["home"]))
if job["mode"] == "one":
    out = [ingest_one(home, sha)["status"] for sha in job["shas"]]
else:
    summary = ingest(home, job["shas"])
    out = [o.status for o in summary.outcomes]
sys.stdout.write(orjson.dumps(out).decode() + "\\n")
"""


def _race(jobs: list[dict[str, Any]]) -> list[list[str]]:
    """Start one child per job, release them together, return each one's statuses."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    children = [
        subprocess.Popen(
            [PYTHON, "-c", CHILD],
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in jobs
    ]
    for child in children:
        assert child.stdout is not None
        assert child.stdout.readline() == b"ready\n"
    for child, job in zip(children, jobs, strict=True):
        assert child.stdin is not None
        child.stdin.write(orjson.dumps(job) + b"\n")
        child.stdin.flush()
    results = []
    for child in children:
        out, err = child.communicate(timeout=300)
        assert child.returncode == 0, err.decode()[-2000:]
        results.append(orjson.loads(out.splitlines()[-1]))
    return results


def _batch(*lines: tuple[str, int]) -> bytes:
    text = "".join(f'{{"symbolId":"{s}","hitCount":{h}}}\n' for s, h in lines)
    return gzip.compress(text.encode(), mtime=0)


def _audit(home: Home) -> None:
    assert chain_break(home) is None
    sequences = [r["sequence"] for r in receipts(home)]
    assert sequences == list(range(1, len(sequences) + 1))
    report = verify_receipts(home)
    assert report.ok, report.first_break


@pytest.mark.parametrize("mode", ["ingest", "one"])
def test_the_same_batch_ingested_by_three_processes_counts_once(home: Home, mode: str) -> None:
    sha = home.cas.put("runtime", _batch(("a", 2), ("a", 3), ("b", 1)), CTX).sha256
    home.ensure_lake()

    results = _race([{"home": str(home.root), "shas": [sha], "mode": mode}] * 3)

    assert sorted(s for r in results for s in r) == ["accepted", "duplicate", "duplicate"]
    if mode == "one":
        ingest(home, [])  # ingest_one does not fold: the DAG's fold task does
    facts = home.lake.read("runtime_facts").sort("symbol_id")
    assert facts.select("symbol_id", "hit_count", "batch_count").rows() == [
        ("a", 5, 1),
        ("b", 1, 1),
    ]
    assert home.lake.read("runtime_fact_batches").height == 2
    assert [r["status"] for r in receipts(home)].count("accepted") == 1
    _audit(home)


def test_different_batches_ingested_by_three_processes_all_land(home: Home) -> None:
    shas = [
        home.cas.put("runtime", _batch(("shared", i + 1), (f"own-{i}", 10)), CTX).sha256
        for i in range(3)
    ]
    home.ensure_lake()

    results = _race([{"home": str(home.root), "shas": [sha], "mode": "ingest"} for sha in shas])

    assert results == [["accepted"]] * 3
    facts = home.lake.read("runtime_facts").sort("symbol_id")
    assert facts.select("symbol_id", "hit_count", "batch_count").rows() == [
        ("own-0", 10, 1),
        ("own-1", 10, 1),
        ("own-2", 10, 1),
        ("shared", 6, 3),
    ]
    states = home.lake.read("reachability_states")
    assert states.filter(pl.col("symbol_id") == "shared").get_column(
        "runtime_hit_count"
    ).to_list() == [6]
    _audit(home)


def test_three_processes_discovering_the_same_pending_batches(home: Home, tmp_path: Path) -> None:
    """Each process ingests every staged batch (discovery): each batch still lands once."""
    payloads = [_batch(("shared", i + 1), (f"own-{i % 3}", i + 1)) for i in range(9)]
    shas = [home.cas.put("runtime", p, CTX).sha256 for p in payloads]
    home.ensure_lake()

    results = _race([{"home": str(home.root), "shas": None, "mode": "ingest"}] * 3)

    assert all(set(r) <= {"accepted", "duplicate"} for r in results)
    accepted = Counter(r["batch_sha256"] for r in receipts(home) if r["status"] == "accepted")
    assert accepted == Counter(shas)
    solo = Home(Settings.load(str(tmp_path / "solo")))
    for payload in payloads:
        solo.cas.put("runtime", payload, CTX)
    ingest(solo)
    assert snapshot(home)["runtime_facts"].equals(snapshot(solo)["runtime_facts"])
    _audit(home)
