"""Retention safety (SPEC §7) on seeded random homes, against an independent oracle.

Never deleted: a CAS object referenced by a live fact, cited by a held replay manifest, not
ingested yet, or the current graph of a callgraph still in use. A dry run lists exactly what
the real run then deletes. Afterwards `cas verify --all`, the receipts chain, the retention
log and a replay of the held manifest all still pass.
"""

from __future__ import annotations

import gzip
import os
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import polars as pl
import pytest
from typer.testing import CliRunner

from runtime_facts.cli.main import app
from runtime_facts.home import Home
from runtime_facts.ops.receipts_verify import verify_receipts
from runtime_facts.ops.replay import hold_manifest, record_manifest, replay
from runtime_facts.ops.retention import apply_retention, retention_log
from runtime_facts.pipeline.ingest import ingest
from runtime_facts.stores.cas import cas_uri
from runtime_facts.stores.graphs import current_graph_sha, stage_graph
from runtime_facts.stores.receipts import verify_chain
from runtime_facts.subject import SubjectContext
from transforms.schema import FACT_KEY

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
SUBJECTS = [
    SubjectContext("acme", "cg-1", scan_id="s-1"),
    SubjectContext("acme", "cg-1", scan_id="s-2"),
    SubjectContext("acme", "cg-2", image_digest="sha256:aa"),
    SubjectContext("globex", "cg-9", component="ledger", version="3.1"),
]
HELD = SUBJECTS[0]


def _events(rng: random.Random, observed: datetime, bad: bool) -> bytes:
    lines = []
    for j in range(rng.randrange(2, 6)):
        stamp = (observed + timedelta(seconds=j)).strftime("%Y-%m-%dT%H:%M:%SZ")
        lines.append(
            orjson.dumps(
                {"symbolId": f"sym:{rng.randrange(6)}", "hitCount": j + 1, "observedAt": stamp}
            )
        )
    if bad:
        lines.append(b'{"hitCount":1}')
    return gzip.compress(b"\n".join(lines) + b"\n", mtime=0)


def _age(home: Home, kind: str, sha: str, days: float) -> None:
    stamp = (NOW - timedelta(days=days)).timestamp()
    os.utime(home.root / "cas" / "reachability" / kind / sha, (stamp, stamp))


def _cas_files(home: Home) -> set[str]:
    return {cas_uri(k, s) for k in ("runtime", "graphs") for s in home.cas.list(k)}  # type: ignore[arg-type]


def _graph(tmp_path: Path, callgraph_id: str, version: int) -> Path:
    path = tmp_path / f"{callgraph_id}-{version}.json"
    nodes = [{"id": f"sym:{i}"} for i in range(6)]
    graph = {"schema": "runtime-facts.callgraph.v1", "callgraphId": callgraph_id,
             "language": "java", "nodes": nodes, "entrypoints": ["sym:0"],
             "edges": [{"sourceId": "sym:0", "targetId": f"sym:{version % 5 + 1}",
                        "kind": "call"}]}  # fmt: skip
    path.write_bytes(orjson.dumps(graph))
    return path


def _build(home: Home, tmp_path: Path, seed: int) -> dict[str, object]:
    """Graphs (two versions of cg-1), random batches of random ages, a held manifest."""
    rng = random.Random(seed)
    for version, cg in enumerate(["cg-1", "cg-1", "cg-2", "cg-gone"]):
        stage_graph(home, _graph(tmp_path, cg, version), "acme", NOW - timedelta(days=300))
    batches: dict[str, float] = {}
    # a fixed skeleton, so every rule is exercised whatever the seed ...
    plan: list[tuple[SubjectContext, float, bool]] = [
        (HELD, 45, False),
        (SUBJECTS[1], 50, False),
        (SUBJECTS[1], 2, False),
        (SUBJECTS[2], 55, True),
        (SUBJECTS[3], 1, False),
    ]
    # ... and random batches on top
    plan += [(rng.choice(SUBJECTS), rng.uniform(0, 60), rng.random() < 0.2) for _ in range(10)]
    for ctx, observed_days_ago, bad in plan:
        payload = _events(rng, NOW - timedelta(days=observed_days_ago), bad)
        batches[home.cas.put("runtime", payload, ctx).sha256] = rng.uniform(100, 400)
    ingest(home, clock=lambda: NOW - timedelta(days=61))
    manifest = tmp_path / "manifest.json"
    record_manifest(
        home, tenant=HELD.tenant, callgraph_id=HELD.callgraph_id,
        subject_key=HELD.subject_key, out=manifest,
    )  # fmt: skip
    hold_manifest(home, manifest)
    late = home.cas.put("runtime", _events(rng, NOW - timedelta(days=50), False), SUBJECTS[2])
    batches[late.sha256] = 300  # staged long ago, never ingested
    for sha, days in batches.items():
        _age(home, "runtime", sha, days)
    for sha in home.cas.list("graphs"):
        _age(home, "graphs", sha, 250)
    return {"manifest": manifest, "late": late.sha256}


def _must_keep(home: Home, manifest: Path) -> dict[str, str]:
    """The oracle: which CAS objects retention must keep at NOW, computed from the tables."""
    cutoff = NOW - timedelta(days=home.settings.retention.retention_days)
    facts = home.lake.read("runtime_facts")
    age = pl.coalesce("last_observed_at", "updated_at")
    live = facts.filter(age >= cutoff)
    rows = home.lake.read("runtime_fact_batches")
    alive = rows.join(live.select(FACT_KEY), on=FACT_KEY, how="semi", nulls_equal=True)
    keep = {cas_uri("runtime", s): "live_fact" for s in alive.get_column("batch_sha256")}
    index = home.receipt_index.refresh()
    for sha in home.cas.list("runtime"):
        if not index.done(sha):
            keep[cas_uri("runtime", sha)] = "not_ingested"
    doc = orjson.loads(manifest.read_bytes())["reachability"]
    for cited in [*doc["graphs"], *doc["runtimeTraces"]]:
        keep[cited["casUri"]] = "held_manifest"
    used = set(live.get_column("callgraph_id")) | set(
        home.lake.read("reachability_states").get_column("callgraph_id")
    )
    for tenant, cg in {(t, c) for t, c in facts.select("tenant", "callgraph_id").iter_rows()}:
        graph = current_graph_sha(home, tenant, cg)
        if graph and cg in used:
            keep[cas_uri("graphs", graph)] = "graph_in_use"
    return keep


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_retention_never_deletes_what_is_still_referenced(
    seed: int, home: Home, tmp_path: Path
) -> None:
    built = _build(home, tmp_path, seed)
    manifest = built["manifest"]
    assert isinstance(manifest, Path)
    must_keep = _must_keep(home, manifest)
    live_before = (
        home.lake.read("runtime_facts")
        .filter(pl.col("last_observed_at") >= NOW - timedelta(days=30))
        .drop("updated_at")
        .sort(FACT_KEY, nulls_last=False)
    )
    files_before = _cas_files(home)

    dry = apply_retention(home, dry_run=True, now=NOW)
    assert _cas_files(home) == files_before  # a dry run deletes nothing
    real = apply_retention(home, dry_run=False, now=NOW)

    deleted = files_before - _cas_files(home)
    assert real == dry  # the same decisions (RetentionReport compares only those)
    assert {d["cas_uri"] for d in dry.cas_deleted} == deleted  # ... and exactly those files
    assert not deleted & set(must_keep), {u: must_keep[u] for u in deleted & set(must_keep)}
    assert deleted, "the scenario must delete something, or it proves nothing"
    assert {"live_fact", "held_manifest", "not_ingested"} <= set(real.cas_kept.values())
    assert cas_uri("runtime", str(built["late"])) in real.cas_kept
    # live facts untouched, expired ones gone
    assert_live = (
        home.lake.read("runtime_facts").drop("updated_at").sort(FACT_KEY, nulls_last=False)
    )
    assert assert_live.equals(live_before)
    assert real.expired_facts > 0

    # the audit trail and the store still verify
    result = CliRunner().invoke(app, ["--home", str(home.root), "--json", "cas", "verify", "--all"])
    assert result.exit_code == 0, result.output
    assert verify_receipts(home).ok
    log = retention_log(home).path
    with log.open("rb") as handle:
        count, broken = verify_chain(iter(handle))
    assert (count, broken) == (1, None)
    record = orjson.loads(log.read_bytes())
    assert {d["cas_uri"] for d in record["cas_deleted"]} == deleted  # digests of what went
    # the held manifest still replays from CAS alone
    report = replay(manifest, source=home, scratch=tmp_path / "scratch")
    assert report.ok, report.mismatches
    # and a second run finds nothing more to delete
    assert apply_retention(home, dry_run=False, now=NOW).cas_deleted == []


def test_a_batch_staged_during_retention_is_not_lost(home: Home, tmp_path: Path) -> None:
    """A staged, never-ingested old batch survives retention and is still ingested after it."""
    ctx = SUBJECTS[0]
    sha = home.cas.put("runtime", _events(random.Random(0), NOW, False), ctx).sha256
    home.ensure_lake()
    _age(home, "runtime", sha, 365)
    report = apply_retention(home, dry_run=False, now=NOW)
    assert report.cas_kept == {cas_uri("runtime", sha): "not_ingested"}
    assert ingest(home, clock=lambda: NOW).accepted == 1
