"""Folding batch rows into cumulative facts."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest

from runtime_facts.errors import BatchRejected
from transforms.fold import fold_facts
from transforms.schema import BATCH_ROW_SCHEMA, FACT_SCHEMA

NOW = datetime(2026, 2, 1, tzinfo=UTC)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _batch(sha: str, symbol: str, hits: int, code: str | None = None) -> dict[str, object]:
    return {
        "batch_sha256": sha, "cas_uri": f"cas://reachability/runtime/{sha}", "tenant": "t",
        "callgraph_id": "cg", "subject_key": "scan:s", "symbol_id": symbol, "code_id": code,
        "loader_base": None, "hit_count": hits, "event_count": 1, "first_observed_at": T0,
        "last_observed_at": T0, "process_names": [], "container_ids": [], "evidence_uris": [],
        "ingested_at": T0,
    }  # fmt: skip


def test_fold_adds_batches_to_existing_facts() -> None:
    first = fold_facts(
        pl.DataFrame(schema=FACT_SCHEMA),
        pl.DataFrame([_batch("1", "a", 2)], schema=BATCH_ROW_SCHEMA),
        T0,
    )
    second = fold_facts(
        first,
        pl.DataFrame([_batch("2", "a", 3), _batch("2", "b", 1)], schema=BATCH_ROW_SCHEMA),
        NOW,
    )
    assert second.select("symbol_id", "hit_count", "batch_count").rows() == [
        ("a", 5, 2),
        ("b", 1, 1),
    ]
    assert second.get_column("updated_at").to_list() == [NOW, NOW]


def test_cumulative_overflow_is_an_error() -> None:
    first = fold_facts(
        pl.DataFrame(schema=FACT_SCHEMA),
        pl.DataFrame([_batch("1", "a", 2**63 - 1)], schema=BATCH_ROW_SCHEMA),
        T0,
    )
    with pytest.raises(BatchRejected) as info:
        fold_facts(first, pl.DataFrame([_batch("2", "a", 1)], schema=BATCH_ROW_SCHEMA), NOW)
    assert info.value.reason == "hit_count_overflow"
