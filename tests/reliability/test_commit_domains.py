"""Two tenants commit at the same time: one commit domain (lock, chain, counters) per tenant."""

from __future__ import annotations

import gzip
import itertools
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson

from runtime_facts.home import Home
from runtime_facts.pipeline.ingest import ingest
from runtime_facts.stores.receipts import verify_chain
from runtime_facts.subject import SubjectContext

REPO = Path(__file__).resolve().parents[2]
# The real ingest, with each commit domain's start and end recorded. The pause inside the
# domain makes a commit last long enough that one lock for the whole home could not hide.
CHILD = """
import sys, time, orjson
from runtime_facts.config import Settings
from runtime_facts.home import Home
from runtime_facts.pipeline import commit
from runtime_facts.pipeline.ingest import ingest

home_dir, tenant, record = sys.argv[1:4]
real = commit._commit_domain

def recorded(home, name, group, clock, fence, **kw):
    start = time.time()
    time.sleep(1.0)
    out = real(home, name, group, clock, fence, **kw)
    with open(record, "ab") as handle:
        handle.write(orjson.dumps({"tenant": name, "start": start, "end": time.time()}) + b"\\n")
    return out

commit._commit_domain = recorded
home = Home(Settings.load(home_dir))
summary = ingest(home, tenant=tenant)
print(summary.accepted, flush=True)
"""


def _stage(home: Home, tenant: str, n: int) -> None:
    ctx = SubjectContext(tenant, "cg-1", scan_id="s-1")
    for i in range(n):
        line = orjson.dumps({"symbolId": f"sym:{tenant}:{i}", "hitCount": i + 1}) + b"\n"
        home.cas.put("runtime", gzip.compress(line * 3, mtime=0), ctx)


def test_two_tenants_commit_concurrently(home: Home, tmp_path: Path) -> None:
    home.ensure_lake()
    for tenant in ("acme", "beta"):
        _stage(home, tenant, 3)
    record = tmp_path / "commits.ndjson"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(CHILD), str(home.root), t, str(record)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for t in ("acme", "beta")
    ]
    outs = [c.communicate(timeout=180)[0].strip() for c in children]

    assert [c.returncode for c in children] == [0, 0]
    assert outs == ["3", "3"]
    spans = [orjson.loads(line) for line in record.read_bytes().splitlines()]
    acme = [s for s in spans if s["tenant"] == "acme"]
    beta = [s for s in spans if s["tenant"] == "beta"]
    overlaps = [
        (a, b) for a in acme for b in beta if a["start"] < b["end"] and b["start"] < a["end"]
    ]
    assert overlaps, f"no two commits of different tenants overlapped: {spans}"
    # Each tenant's commits still exclude each other.
    for mine in (acme, beta):
        ordered = sorted(mine, key=lambda s: s["start"])
        assert all(x["end"] <= y["start"] for x, y in itertools.pairwise(ordered))
    # Both chains verify, every batch counted once.
    _, chain_break = verify_chain(iter(home.receipts.path.read_bytes().splitlines()))
    assert chain_break is None
    facts = home.lake.read("runtime_facts")
    assert facts.height == 6
    assert sorted(facts.get_column("hit_count").to_list()) == [3, 3, 6, 6, 9, 9]
    again = ingest(home)
    assert again.batches == 0
