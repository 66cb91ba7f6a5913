"""Two tenants ingest at once: how much of their commit time overlaps.

Run: ``.venv/bin/python -m benchmarks.bench_commit_domains [BATCHES] [EVENTS]``. Stages
BATCHES batches of EVENTS events for each of two tenants in a fresh home, then runs one
``ingest --tenant`` process per tenant at the same time, committing one batch per commit
domain entry (``COMMIT_GROUP = 1``), and records each commit's start and end. Prints the
commit time of each tenant, the time during which both were committing, and the overlap as a
share of the shorter tenant's commit time (0 % would mean one lock for the whole home).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import orjson

from runtime_facts.config import Settings
from runtime_facts.generate import GeneratorSpec, generate_batches
from runtime_facts.home import Home
from runtime_facts.subject import SubjectContext

CHILD = """
import sys, time, orjson
from runtime_facts.config import Settings
from runtime_facts.home import Home
from runtime_facts.pipeline import commit, ingest as run

home_dir, tenant, record = sys.argv[1:4]
real = commit._commit_domain

def recorded(home, name, group, clock, fence):
    start = time.time()
    out = real(home, name, group, clock, fence)
    with open(record, "ab") as handle:
        handle.write(orjson.dumps({"tenant": name, "start": start, "end": time.time()}) + b"\\n")
    return out

commit._commit_domain = recorded
run.COMMIT_GROUP = 1
run.ingest(Home(Settings.load(home_dir)), tenant=tenant, fold=False)
"""


def _union(spans: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for s, e in sorted(spans):
        if e > end:
            total += e - max(s, end)
            end = e
    return total


def main(batches: int = 8, events: int = 50_000) -> None:
    """Stage, run both tenants at once, print the overlap."""
    root = Path(tempfile.mkdtemp(prefix="bench-domains-"))
    home = Home(Settings.load(str(root / "home")))
    home.ensure_lake()
    for i, tenant in enumerate(("acme", "beta")):
        spec = GeneratorSpec(events=batches * events, seed=11 + i, events_per_chunk=events)
        for chunk in generate_batches(spec):
            home.cas.put("runtime", chunk, SubjectContext(tenant, "cg-1", scan_id="s-1"))
    record = root / "commits.ndjson"
    t0 = time.perf_counter()
    children = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(CHILD), str(home.root), t, str(record)]
        )
        for t in ("acme", "beta")
    ]
    for child in children:
        child.wait()
    wall = time.perf_counter() - t0
    spans = [orjson.loads(line) for line in record.read_bytes().splitlines()]
    per = {t: [(s["start"], s["end"]) for s in spans if s["tenant"] == t] for t in ("acme", "beta")}
    busy = {t: _union(v) for t, v in per.items()}
    both = busy["acme"] + busy["beta"] - _union(per["acme"] + per["beta"])
    print(f"batches per tenant: {batches} x {events} events; wall {wall:.2f} s")
    for t, v in busy.items():
        print(f"  {t}: {len(per[t])} commits, {v:.2f} s committing")
    print(
        f"  both committing at once: {both:.2f} s = {100 * both / min(busy.values()):.0f} %"
        " of the shorter tenant's commit time"
    )


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    main(*args)
