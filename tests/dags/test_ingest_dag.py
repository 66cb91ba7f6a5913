"""runtime_facts_ingest, really run with dag.test() against a temporary home."""

from __future__ import annotations

import gzip
import subprocess
import sys
import textwrap
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import polars as pl
from prometheus_client.parser import text_string_to_metric_families

from runtime_facts.home import Home
from runtime_facts.subject import SubjectContext
from tests.dags.conftest import REPO, table_versions, task_states, xcom

DAG_ID = "runtime_facts_ingest"
BAD_BATCH = b'{"symbolId":"sym:a","hitCount":1}\n{"hitCount":2}\n'
Staged = list[tuple[str, int]]


def _hits(home: Home) -> int:
    return int(home.lake.read("runtime_facts").get_column("hit_count").sum())


def test_ingests_good_batches_and_receipts_the_rejected_one(
    home: Home, ctx: SubjectContext, stage_generated: Callable[..., Staged], run_dag: Any
) -> None:
    good = stage_generated(ctx)
    bad = home.cas.put("runtime", gzip.compress(BAD_BATCH, mtime=0), ctx).sha256

    run = run_dag(DAG_ID)

    assert str(run.state) == "success"
    states = task_states(run)
    assert [s for (task, _), s in states.items() if task == "ingest_batch"] == ["success"] * 4
    receipts = home.lake.read("ingest_receipts")
    status = dict(receipts.select("batch_sha256", "status").iter_rows())
    assert status == {**{sha: "accepted" for sha, _ in good}, bad: "rejected"}
    rejected = receipts.filter(pl.col("batch_sha256") == bad).row(0, named=True)
    assert rejected["reason_codes"] == ["invalid_lines", "missing_symbol_id"]
    assert _hits(home) == sum(hits for _, hits in good)
    summary = xcom(run, "publish")
    assert (summary["batches"], summary["accepted"], summary["rejected"]) == (4, 3, 1)
    assert summary["events"] == 3000
    assert summary["rejected_batches"][0]["batch_sha256"] == bad
    assert summary["receipts"]["count"] == 4


def test_publish_writes_cumulative_metrics(
    home: Home, ctx: SubjectContext, stage_generated: Callable[..., Staged], run_dag: Any
) -> None:
    stage_generated(ctx)
    home.cas.put("runtime", gzip.compress(BAD_BATCH, mtime=0), ctx)

    run_dag(DAG_ID)

    text = (home.root / "metrics" / "runtime_facts.prom").read_text()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("signals_runtime_events_total", (("tenant", "acme"),))] == 3000
    assert samples[("signals_runtime_ingest_failures_total", (("tenant", "acme"),))] == 1
    assert samples[("signals_runtime_ingest_latency_seconds_count", ())] == 4
    assert samples[("signals_runtime_cas_miss_total", ())] == 0


def test_ingest_clears_pending_rescores_like_the_airgap_dag(
    home: Home, ctx: SubjectContext, stage_generated: Callable[..., Staged], run_dag: Any
) -> None:
    from runtime_facts.pipeline.fold import pending_recompute, write_pending

    stage_generated(ctx)
    home.ensure_lake()
    write_pending(home, "acme", {("acme", "cg-left", "scan:left-by-a-crash"): 0})

    run = run_dag(DAG_ID)

    assert str(run.state) == "success"
    assert pending_recompute(home) == {}
    assert xcom(run, "score")["subjects"] == 2  # this run's subject and the one left pending


def test_a_second_run_finds_nothing_and_changes_nothing(
    home: Home, ctx: SubjectContext, stage_generated: Callable[..., Staged], run_dag: Any
) -> None:
    stage_generated(ctx)
    run_dag(DAG_ID)
    versions = table_versions(home)
    receipts = home.receipts.count()

    run = run_dag(DAG_ID)

    assert str(run.state) == "success"
    assert xcom(run, "discover") == []
    assert table_versions(home) == versions
    assert home.receipts.count() == receipts
    assert xcom(run, "publish")["batches"] == 0


def test_overlapping_ingests_count_each_batch_once(
    home: Home,
    ctx: SubjectContext,
    stage_generated: Callable[..., Staged],
    run_dag: Any,
    monkeypatch: Any,
) -> None:
    staged = stage_generated(ctx, events=12_000, per_batch=1500)
    shas = [sha for sha, _ in staged]
    # Both sides attempt every batch at the same time: the DAG (its discovery pinned to the
    # staged list, as if it had run just before) and the CLI's job in another process.
    monkeypatch.setattr("runtime_facts.pipeline.ingest.discover_pending", lambda *a, **k: shas)
    script = textwrap.dedent(
        f"""
        import sys
        from runtime_facts.config import Settings
        from runtime_facts.home import Home
        from runtime_facts.pipeline.ingest import ingest
        home = Home(Settings.load({str(home.root)!r}))
        print("ready", flush=True)
        sys.stdin.readline()
        ingest(home, {shas!r})
        """
    )
    other = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert other.stdout is not None
    assert other.stdin is not None
    assert other.stdout.readline().strip() == "ready"
    other.stdin.write("go\n")
    other.stdin.flush()

    run = run_dag(DAG_ID)

    assert other.wait(timeout=300) == 0
    assert str(run.state) == "success"
    receipts = home.lake.read("ingest_receipts")
    counts = dict(receipts.group_by("status").len().iter_rows())
    assert counts == {"accepted": len(shas), "duplicate": len(shas)}
    accepted = receipts.filter(pl.col("status") == "accepted")
    assert sorted(accepted.get_column("batch_sha256").to_list()) == sorted(shas)
    keys = dict(accepted.select("batch_sha256", "key_count").iter_rows())
    rows = home.lake.read("runtime_fact_batches")
    assert dict(rows.group_by("batch_sha256").len().iter_rows()) == keys
    assert _hits(home) == sum(hits for _, hits in staged)


def test_a_cas_miss_fails_the_run_after_retries(
    home: Home,
    ctx: SubjectContext,
    stage_generated: Callable[..., Staged],
    run_dag: Any,
    monkeypatch: Any,
) -> None:
    (sha, _), *_ = stage_generated(ctx, events=1000)
    (home.root / "cas" / "reachability" / "runtime" / sha).unlink()
    # Discovery saw the batch; it vanished before the mapped task read it.
    monkeypatch.setattr("runtime_facts.pipeline.ingest.discover_pending", lambda *a, **k: [sha])

    def retry_at_once(dag: Any) -> None:
        ingest = dag.task_dict["ingest_batch"]
        ingest.retry_delay = timedelta(0)
        ingest.retry_exponential_backoff = False
        ingest.retries = 2

    run = run_dag(DAG_ID, prepare=retry_at_once)

    assert str(run.state) == "failed"
    states = task_states(run)
    assert states[("ingest_batch", 0)] == "failed"
    assert states[("fold", -1)] == "upstream_failed"
    assert run.get_task_instance("ingest_batch", map_index=0).try_number == 3
    assert home.receipts.count() == 0
    misses = (home.root / "metrics" / "cas_misses.log").read_text().splitlines()
    assert len(misses) == 3


def test_a_sealed_false_param_cannot_switch_off_sealed_mode(
    home: Home, ctx: SubjectContext, run_dag: Any, monkeypatch: Any
) -> None:
    monkeypatch.setenv("RUNTIME_FACTS__INGEST__SEALED", "true")
    sha = home.cas.put("runtime", gzip.compress(b'{"symbolId":"sym:a","hitCount":1}\n'), ctx).sha256
    obj = home.root / "cas" / "reachability" / "runtime" / sha
    obj.write_bytes(gzip.compress(b'{"symbolId":"sym:forged","hitCount":9}\n'))  # not its digest

    run = run_dag(DAG_ID, {"sealed": False})

    assert str(run.state) == "success"
    receipt = next(iter(home.receipts))
    assert (receipt["status"], receipt["reason_codes"]) == (
        "rejected",
        ["sealed_mode_evidence_invalid"],
    )
