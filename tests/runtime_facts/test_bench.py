"""Smoke test so the benchmark cannot rot (no timing assertions: figures live in `make bench`)."""

from __future__ import annotations

import pytest

from runtime_facts.bench import BenchConfig, run_bench


@pytest.mark.slow
def test_quick_bench_produces_every_figure() -> None:
    result = run_bench(BenchConfig.quick(), log=lambda _msg: None)
    figures = result.figures
    assert result.events == BenchConfig.quick().events
    assert len(result.product_seconds) == len(result.baseline_seconds) == 1
    assert figures["ratio_product_over_baseline"] > 0
    assert figures["growth"]["batches"] == 4
    assert figures["growth_subjects"]["subjects"] == 2
    assert set(figures["rss"]) == {
        "peak_rss_mib_1_batches",
        "peak_rss_mib_3_batches",
        "peak_rss_mib_4_batches",
    }
    assert figures["lattice"]["large_s"] > 0
    startup = figures["startup"]
    assert 0 < startup["interpreter_s"] < startup["nothing_pending_s"]
    # the batch's path imports what it folds and writes with (a clean batch was ingested)
    assert {"deltalake", "polars"} <= set(startup["clean_batch_imports"])
