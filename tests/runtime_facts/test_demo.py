"""`make demo`: its one rejected batch is named as intended, and only that one."""

from __future__ import annotations

from collections.abc import Callable

import polars as pl
from polars.testing import assert_frame_equal
from rich.console import Console

from runtime_facts.demo import INTENDED_REJECT, explain_rejection, rejected_receipts, stage_fixtures
from runtime_facts.home import Home
from runtime_facts.pipeline.ingest import ingest


def recorder() -> Console:
    return Console(record=True, width=400, color_system=None)


def test_the_rejected_fixture_is_named_with_its_reason_codes(home: Home) -> None:
    staged = stage_fixtures(home, generated_events=0)
    ingest(home)
    console = recorder()

    assert explain_rejection(console, home, staged)
    text = console.export_text()
    (receipt,) = rejected_receipts(home)
    assert "invalid_lines" in receipt["reason_codes"]  # strict policy: the whole batch
    assert f"1 batch rejected, as intended: fixtures/batches/{INTENDED_REJECT}" in text
    for code in receipt["reason_codes"]:
        assert code in text


def test_a_second_demo_run_changes_nothing_and_still_explains(home: Home) -> None:
    staged = stage_fixtures(home, generated_events=0)
    ingest(home)
    facts = home.lake.read("runtime_facts").drop("updated_at").sort(pl.all())

    again = stage_fixtures(home, generated_events=0)
    ingest(home)

    assert again == staged
    assert len(rejected_receipts(home)) == 1
    assert explain_rejection(recorder(), home, again)
    assert_frame_equal(home.lake.read("runtime_facts").drop("updated_at").sort(pl.all()), facts)


def test_any_other_rejection_fails_the_demo(home: Home, stage: Callable[..., str]) -> None:
    staged = stage_fixtures(home, generated_events=0)
    stage('{"hitCount": 1}\n')  # missing_symbol_id: not the intended fixture
    ingest(home)
    console = recorder()

    assert not explain_rejection(console, home, staged)
    assert "expected exactly one rejected batch" in console.export_text()
