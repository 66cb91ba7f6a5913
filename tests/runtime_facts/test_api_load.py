"""Bounded load on the staging endpoint: 2,000 posts from 8 clients, then one ingest.

Loopback only, bounded in count and time. Zero errors, zero lost or duplicated batches.
Set STAGING_BENCH_OUT=<file> to keep the latency figures (docs/benchmarks.md).
"""

from __future__ import annotations

import gzip
import os
import statistics
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import httpx
import orjson
import polars as pl
import pytest

from runtime_facts.pipeline.ingest import ingest
from tests.runtime_facts.api_harness import auth, live_api, make_home

POSTS = 2000
CLIENTS = 8
EVENTS_PER_POST = 20
DEADLINE_SECONDS = 240
SUBJECTS = 8


def batch(i: int) -> bytes:
    """Batch i: distinct bytes, 20 events over a shared symbol pool."""
    events = [
        {
            "symbolId": f"sym:java:com.acme.S{(i * 7 + j) % 50}",
            "hitCount": 1 + (i + j) % 5,
            "codeId": f"build-{j % 3}",
            "metadata": {"seq": str(i)},
        }
        for j in range(EVENTS_PER_POST)
    ]
    return b"".join(orjson.dumps(e) + b"\n" for e in events)


def hits(i: int) -> int:
    return sum(1 + (i + j) % 5 for j in range(EVENTS_PER_POST))


@pytest.mark.slow
def test_load_2000_posts_8_clients_then_ingest(
    tmp_path: Path, clock: Callable[[], datetime]
) -> None:
    home = make_home(tmp_path)
    results: dict[int, tuple[str, float]] = {}
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + DEADLINE_SECONDS

    def client_loop(url: str, k: int) -> None:
        headers = {**auth("writer"), "X-Tenant": "acme", "X-Callgraph-Id": "cg-load"}
        with httpx.Client(base_url=url, timeout=30, headers=headers) as client:
            for i in range(k, POSTS, CLIENTS):
                if time.monotonic() > deadline:
                    with lock:
                        errors.append(f"deadline passed at post {i}")
                    return
                body, extra = batch(i), {}
                if i % 2:  # half the probes gzip their batches
                    body, extra = gzip.compress(body), {"Content-Encoding": "gzip"}
                started = time.perf_counter()
                try:
                    resp = client.post(
                        "/signals/runtime-facts/ndjson",
                        params={"scanId": f"s-{i % SUBJECTS}"},
                        content=body,
                        headers=extra,
                    )
                except httpx.HTTPError as exc:
                    with lock:
                        errors.append(f"post {i}: {exc!r}")
                    continue
                elapsed = time.perf_counter() - started
                with lock:
                    if resp.status_code == 202:
                        results[i] = (resp.json()["sha256"], elapsed)
                    else:
                        errors.append(f"post {i}: {resp.status_code} {resp.text[:200]}")

    with live_api(home) as live:
        wall = time.perf_counter()
        threads = [threading.Thread(target=client_loop, args=(live.url, k)) for k in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(DEADLINE_SECONDS + 60)
        wall = time.perf_counter() - wall

    assert errors == []
    assert len(results) == POSTS
    shas = {sha for sha, _ in results.values()}
    assert len(shas) == POSTS
    assert set(home.cas.list("runtime")) == shas
    latencies = sorted(elapsed for _, elapsed in results.values())
    p50 = statistics.median(latencies)
    p95 = statistics.quantiles(latencies, n=100)[94]
    assert p95 < 5.0

    t0 = time.perf_counter()
    summary = ingest(home, clock=clock)
    ingest_seconds = time.perf_counter() - t0
    assert (summary.accepted, summary.rejected, summary.duplicate) == (POSTS, 0, 0)
    rows = home.lake.read("runtime_fact_batches")
    assert rows.get_column("batch_sha256").n_unique() == POSTS
    facts = home.lake.read("runtime_facts")
    assert facts.get_column("hit_count").sum() == sum(hits(i) for i in range(POSTS))
    assert facts.get_column("subject_key").unique().sort().to_list() == sorted(
        f"scan:s-{n}" for n in range(SUBJECTS)
    )
    per_subject = rows.group_by("subject_key").agg(pl.col("batch_sha256").n_unique())
    assert per_subject.get_column("batch_sha256").to_list() == [POSTS // SUBJECTS] * SUBJECTS
    assert ingest(home, clock=clock).batches == 0

    out = os.environ.get("STAGING_BENCH_OUT")
    if out:
        doc = {
            "posts": POSTS,
            "clients": CLIENTS,
            "events_per_post": EVENTS_PER_POST,
            "wall_seconds": round(wall, 3),
            "posts_per_second": round(POSTS / wall, 1),
            "p50_ms": round(p50 * 1000, 2),
            "p95_ms": round(p95 * 1000, 2),
            "max_ms": round(latencies[-1] * 1000, 2),
            "ingest_seconds": round(ingest_seconds, 2),
        }
        Path(out).write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
