"""ingest_one / plan_chunks: the unit of work of one mapped Airflow task, without Airflow."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import orjson
import pytest

from runtime_facts.errors import NotFoundError
from runtime_facts.home import Home
from runtime_facts.pipeline.fold import fold_pending
from runtime_facts.pipeline.ingest import ingest_chunk, ingest_one, plan_chunks
from runtime_facts.pipeline.outcomes import OUTCOME_FIELDS
from runtime_facts.subject import SubjectContext

Stage = Callable[..., str]
Clock = Callable[[], datetime]
GOOD = '{"symbolId":"sym:a","hitCount":3}\n{"symbolId":"sym:b","hitCount":4}\n'


def test_ingest_one_commits_and_returns_a_small_receipt(
    home: Home, stage: Stage, clock: Clock
) -> None:
    sha = stage(GOOD)

    outcome = ingest_one(home, sha, clock=clock)

    assert set(outcome) == set(OUTCOME_FIELDS)
    assert outcome["status"] == "accepted"
    assert (outcome["accepted_count"], outcome["key_count"]) == (2, 2)
    assert outcome["receipt_sha256"] == home.receipts.last()["receipt_sha256"]
    orjson.dumps(outcome)
    assert home.lake.read("runtime_fact_batches").height == 2
    assert home.lake.read("runtime_facts").is_empty()  # folding is the DAG's next task
    fold_pending(home, clock())
    assert home.lake.read("runtime_facts").get_column("hit_count").sum() == 7


def test_ingest_one_twice_is_a_duplicate(home: Home, stage: Stage, clock: Clock) -> None:
    sha = stage(GOOD)
    ingest_one(home, sha, clock=clock)

    again = ingest_one(home, sha, clock=clock)

    assert again["status"] == "duplicate"
    assert home.lake.read("runtime_fact_batches").height == 2


def test_a_rejected_batch_is_an_outcome_not_an_error(
    home: Home, stage: Stage, clock: Clock
) -> None:
    sha = stage('{"hitCount":2}\n')

    outcome = ingest_one(home, sha, clock=clock)

    assert outcome["status"] == "rejected"
    assert outcome["reason_codes"] == ["invalid_lines", "missing_symbol_id"]


def test_a_batch_of_another_tenant_is_rejected(home: Home, stage: Stage, clock: Clock) -> None:
    sha = stage(GOOD, SubjectContext("other", "cg-1", scan_id="s-1"))

    outcome = ingest_one(home, sha, tenant="acme", clock=clock)

    assert (outcome["status"], outcome["reason_codes"]) == ("rejected", ["tenant_mismatch"])


def test_a_cas_miss_raises_so_the_scheduler_retries(home: Home, stage: Stage, clock: Clock) -> None:
    sha = stage(GOOD)
    (home.root / "cas" / "reachability" / "runtime" / sha).unlink()

    with pytest.raises(NotFoundError) as info:
        ingest_one(home, sha, clock=clock)

    assert info.value.reason == "cas_miss"
    assert home.receipts.count() == 0


def test_a_missing_context_sidecar_rejects_that_batch_only(
    home: Home, stage: Stage, clock: Clock
) -> None:
    sha = stage(GOOD)
    (home.root / "cas" / "reachability" / "runtime" / f"{sha}.context.json").unlink()

    outcome = ingest_one(home, sha, clock=clock)

    assert (outcome["status"], outcome["reason_codes"]) == ("rejected", ["context_missing"])
    assert outcome["tenant"] is None
    assert home.receipts.count() == 1


def test_ingest_chunk_keeps_order(home: Home, stage: Stage, clock: Clock) -> None:
    shas = [stage(GOOD), stage('{"symbolId":"sym:z","hitCount":1}\n')]

    outcomes = ingest_chunk(home, shas, clock=clock)

    assert [o["batch_sha256"] for o in outcomes] == shas


@pytest.mark.parametrize(
    ("count", "limit", "sizes"),
    [
        (0, 4, []),
        (3, 4, [1, 1, 1]),
        (4, 4, [1, 1, 1, 1]),
        (5, 4, [2, 2, 1]),
        (9, 4, [3, 3, 3]),
        (2049, 1024, [3] * 683),
    ],
)
def test_plan_chunks_never_exceeds_the_limit(count: int, limit: int, sizes: list[int]) -> None:
    shas = [f"{i:064x}" for i in range(count)]

    chunks = plan_chunks(shas, limit)

    assert [len(c) for c in chunks] == sizes
    assert len(chunks) <= limit
    assert [s for c in chunks for s in c] == shas


def test_plan_chunks_needs_a_positive_limit() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        plan_chunks(["a"], 0)
