"""publish_run without Airflow: metrics recomputed from receipts, run summary, receipt export."""

from __future__ import annotations

import gzip
import shutil
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson
import polars as pl
import pytest
from prometheus_client.parser import text_string_to_metric_families

from runtime_facts.config import Settings
from runtime_facts.errors import NotFoundError
from runtime_facts.home import Home
from runtime_facts.pipeline.ingest import ingest, ingest_one
from runtime_facts.pipeline.publish import (
    LATENCY_BUCKETS,
    export_receipts,
    publish_run,
    summarize,
    to_jsonable,
)
from runtime_facts.stores.receipts import canonical_json

Stage = Callable[..., str]
Clock = Callable[[], datetime]
GOOD = '{"symbolId":"sym:a","hitCount":3}\n{"symbolId":"sym:b","hitCount":4}\n'
BAD = '{"symbolId":"sym:a","hitCount":1}\n{"hitCount":2}\n'


def _metrics(home: Home) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = (home.root / "metrics" / "runtime_facts.prom").read_text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _outcomes(home: Home, clock: Clock) -> list[dict[str, Any]]:
    summary = ingest(home, clock=clock)
    return [to_jsonable(o) for o in summary.outcomes]


def test_metrics_are_computed_from_the_receipts(home: Home, stage: Stage, clock: Clock) -> None:
    stage(GOOD)
    stage(BAD)
    outcomes = _outcomes(home, clock)

    publish_run(home, outcomes)

    m = _metrics(home)
    assert m[("signals_runtime_events_total", (("tenant", "acme"),))] == 2
    assert m[("signals_runtime_ingest_failures_total", (("tenant", "acme"),))] == 1
    assert m[("signals_runtime_cas_miss_total", ())] == 0
    assert m[("signals_runtime_batches_total", (("status", "rejected"), ("tenant", "acme")))] == 1
    assert m[("signals_runtime_ingest_latency_seconds_count", ())] == 2
    buckets = [
        m[("signals_runtime_ingest_latency_seconds_bucket", (("le", str(b)),))]
        for b in LATENCY_BUCKETS
    ]
    assert buckets == sorted(buckets)
    assert m[("signals_runtime_ingest_latency_seconds_bucket", (("le", "+Inf"),))] == 2


def test_counters_are_cumulative_and_survive_a_lost_metrics_file(
    home: Home, stage: Stage, clock: Clock
) -> None:
    stage(GOOD)
    publish_run(home, _outcomes(home, clock))
    (home.root / "metrics" / "runtime_facts.prom").unlink()
    stage('{"symbolId":"sym:c","hitCount":1}\n')

    publish_run(home, _outcomes(home, clock))

    assert _metrics(home)[("signals_runtime_events_total", (("tenant", "acme"),))] == 3


def test_the_metrics_file_is_replaced_atomically(home: Home, stage: Stage, clock: Clock) -> None:
    stage(GOOD)
    publish_run(home, _outcomes(home, clock))
    publish_run(home, [])

    assert sorted(p.name for p in (home.root / "metrics").iterdir()) == ["runtime_facts.prom"]


def test_cas_misses_are_counted(home: Home, stage: Stage, clock: Clock) -> None:
    sha = stage(GOOD)
    (home.root / "cas" / "reachability" / "runtime" / sha).unlink()

    with pytest.raises(NotFoundError):
        ingest_one(home, sha, clock=clock)
    publish_run(home, [])

    assert _metrics(home)[("signals_runtime_cas_miss_total", ())] == 1


def test_the_run_summary_counts_this_runs_outcomes(home: Home, stage: Stage, clock: Clock) -> None:
    stage(GOOD)
    bad = stage(BAD)
    outcomes = _outcomes(home, clock)

    summary = publish_run(home, [*outcomes, None])  # type: ignore[list-item]

    assert {k: summary[k] for k in ("batches", "accepted", "rejected", "duplicate")} == {
        "batches": 2,
        "accepted": 1,
        "rejected": 1,
        "duplicate": 0,
    }
    assert (summary["events"], summary["keys"], summary["rejected_lines"]) == (2, 2, 1)
    assert summary["reason_codes"] == {"invalid_lines": 1, "missing_symbol_id": 1}
    assert summary["rejected_batches"][0]["batch_sha256"] == bad
    assert summary["receipts"]["count"] == 2
    assert summary["receipts"]["head_sha256"] == home.receipts.last()["receipt_sha256"]
    assert summary["cumulative"] == {"cas_misses": 0, "events": 2, "failures": 1, "receipts": 2}
    orjson.dumps(summary)  # XCom-friendly


def test_an_empty_home_publishes_zeros(home: Home) -> None:
    summary = publish_run(home, [])

    assert summary["batches"] == 0
    assert summary["receipts"]["count"] == 0
    assert _metrics(home)[("signals_runtime_ingest_latency_seconds_count", ())] == 0


def test_summarize_ignores_missing_outcomes() -> None:
    assert summarize([None, None])["batches"] == 0


def test_export_receipts_copies_the_sealed_receipts(home: Home, stage: Stage, clock: Clock) -> None:
    stage(GOOD)
    stage(gzip.compress(BAD.encode(), mtime=0), raw=True)
    outcomes = _outcomes(home, clock)

    export = export_receipts(home, outcomes[:1], "airgap-manual__2026-11-26T12:00:00+00:00")

    path = home.root / "receipts" / "exports" / "airgap-manual__2026-11-26T12_00_00_00_00.ndjson"
    assert export == {"path": str(path), "receipts": 1, "missing": []}
    sealed = [r for r in home.receipts if r["receipt_sha256"] == outcomes[0]["receipt_sha256"]]
    assert path.read_bytes() == canonical_json(sealed[0]) + b"\n"


def test_each_receipts_file_is_summed_once_and_the_sums_follow_compaction(
    home: Home, stage: Stage, clock: Clock, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """The per-file sums give the metrics a full read gives, read only the files written
    since the last run, and drop files compaction replaced (their rows are in the new file)."""
    import runtime_facts.pipeline.publish as publish
    from runtime_facts.ops.compact import compact

    read: list[str] = []
    real = publish._sum_receipts

    def counting(receipts: Any, **kw: Any) -> Any:
        read.extend(receipts.get_column("file").unique().to_list())  # the files summed
        return real(receipts, **kw)

    monkeypatch.setattr(publish, "_sum_receipts", counting)

    def fresh() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        (home.root / publish.SUMS_KEY).unlink()
        publish_run(home, [])
        return _metrics(home)

    for text in (GOOD, BAD, '{"symbolId":"sym:c","hitCount":1}\n'):
        stage(text)
        publish_run(home, _outcomes(home, clock))
    files = len(home.lake.table("ingest_receipts").file_uris())
    assert files >= 3
    assert len(read) == files  # every file once, not once per run
    cached = _metrics(home)
    assert cached == fresh()
    assert cached[("signals_runtime_events_total", (("tenant", "acme"),))] == 3

    compact(home, vacuum=False)
    read.clear()
    publish_run(home, [])
    assert len(home.lake.table("ingest_receipts").file_uris()) < files
    assert len(read) == len(home.lake.table("ingest_receipts").file_uris())
    assert _metrics(home) == cached == fresh()

    # the sums are kept by the file's path in the table: a home moved elsewhere keeps them
    moved = tmp_path / "moved"
    shutil.copytree(home.root, moved)
    read.clear()
    publish_run(Home(Settings.load(str(moved))), [])
    assert read == []
    assert _metrics(Home(Settings.load(str(moved)))) == cached


def test_receipts_files_the_scan_names_otherwise_are_read_one_by_one(
    home: Home, stage: Stage, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    import runtime_facts.pipeline.publish as publish

    for text in (GOOD, BAD):
        stage(text)
        ingest(home, clock=clock)
    expected = publish_run(home, [])
    (home.root / publish.SUMS_KEY).unlink()
    real = publish.scan_table

    def renaming(*args: Any, file_column: str | None = None, **kw: Any) -> Any:
        frame = real(*args, file_column=file_column, **kw)
        if file_column is None:
            return frame
        return frame.with_columns(pl.lit("elsewhere/part-0.parquet").alias(file_column))

    monkeypatch.setattr(publish, "scan_table", renaming)
    assert publish_run(home, []) == expected
    assert publish.receipt_sums(home).get_column("n").sum() == 2
