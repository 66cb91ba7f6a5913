"""The lake decides exactly-once: a lost or cut receipts record never lets a batch in twice."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import datetime
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from runtime_facts.home import Home
from runtime_facts.pipeline.ingest import ingest
from runtime_facts.pipeline.ledger import COMMIT_RECEIPTS_KEY, batches_in_lake
from runtime_facts.stores.receipts import verify_chain
from runtime_facts.subject import SubjectContext

Stage = Callable[..., str]
Clock = Callable[[], datetime]
BATCHES = [
    '{"symbolId":"sym:a","hitCount":1200}\n{"symbolId":"sym:b","hitCount":75}\n',
    '{"symbolId":"sym:a","hitCount":1275}\n',
    '{"symbolId":"sym:c","hitCount":1275}\n{"symbolId":"sym:a","hitCount":1}\n',
]


def _facts(home: Home) -> pl.DataFrame:
    return home.lake.read("runtime_facts").drop("updated_at").sort("symbol_id")


def _log(home: Home) -> bytes:
    return home.receipts.path.read_bytes()


def _ingested(home: Home, stage: Stage, clock: Clock) -> pl.DataFrame:
    for text in BATCHES:
        stage(text)
    ingest(home, clock=clock)
    return _facts(home)


def _cut_last_line(home: Home) -> None:
    lines = _log(home).splitlines(keepends=True)
    home.receipts.path.write_bytes(b"".join(lines[:-1]))


def _chain_ok(home: Home) -> bool:
    _, chain_break = verify_chain(iter(_log(home).splitlines()))
    return chain_break is None


def test_cutting_the_logs_last_line_changes_no_fact(home: Home, stage: Stage, clock: Clock) -> None:
    before = _ingested(home, stage, clock)
    full = _log(home)
    _cut_last_line(home)

    summary = ingest(home, clock=clock)

    assert summary.accepted == 0
    assert_frame_equal(_facts(home), before)
    assert _log(home) == full  # the lost receipt came back from ingest_receipts, verbatim
    assert _chain_ok(home)


def test_deleting_the_log_changes_no_fact(home: Home, stage: Stage, clock: Clock) -> None:
    before = _ingested(home, stage, clock)
    full = _log(home)
    home.receipts.path.unlink()

    ingest(home, clock=clock)

    assert_frame_equal(_facts(home), before)
    assert sorted(_log(home).splitlines()) == sorted(full.splitlines())
    assert _chain_ok(home)
    assert before.get_column("batch_count").to_list() == [3, 1, 1]


def test_deleting_the_receipts_table_changes_no_fact(
    home: Home, stage: Stage, clock: Clock
) -> None:
    before = _ingested(home, stage, clock)
    shutil.rmtree(home.root / "lake" / "ingest_receipts")

    ingest(home, clock=clock)

    assert_frame_equal(_facts(home), before)
    mirrored = home.lake.read("ingest_receipts")
    assert sorted(mirrored.get_column("batch_sha256").to_list()) == sorted(
        r["batch_sha256"] for r in home.receipts
    )


def test_losing_the_log_and_the_table_reseals_receipts_from_the_lake(
    home: Home, stage: Stage, clock: Clock
) -> None:
    before = _ingested(home, stage, clock)
    home.receipts.path.unlink()
    shutil.rmtree(home.root / "lake" / "ingest_receipts")

    summary = ingest(home, clock=clock)

    assert summary.accepted == 0
    assert_frame_equal(_facts(home), before)
    receipts = list(home.receipts)
    assert len(receipts) == len(BATCHES)
    assert all(r["repaired"] and r["status"] == "accepted" for r in receipts)
    assert sum(int(r["hit_count_total"]) for r in receipts) == sum(
        before.get_column("hit_count").to_list()
    )
    assert _chain_ok(home)


def test_restaging_a_batch_whose_receipt_was_lost_is_a_duplicate(
    home: Home, stage: Stage, clock: Clock
) -> None:
    before = _ingested(home, stage, clock)
    sha = stage(BATCHES[0])
    home.receipts.path.unlink()
    shutil.rmtree(home.root / "lake" / "ingest_receipts")
    shutil.rmtree(home.root / "cache", ignore_errors=True)  # the lake index is derived, too

    summary = ingest(home, [sha], clock=clock)

    assert [o.status for o in summary.outcomes] == ["duplicate"]
    assert_frame_equal(_facts(home), before)


def test_each_batch_commit_carries_its_receipt_drafts(
    home: Home, stage: Stage, clock: Clock
) -> None:
    _ingested(home, stage, clock)

    commits = [
        c for c in home.lake.table("runtime_fact_batches").history() if COMMIT_RECEIPTS_KEY in c
    ]

    assert len(commits) == 1
    shas = {r["batch_sha256"] for r in home.receipts}
    assert batches_in_lake(home, "acme", sorted(shas)) == shas


@pytest.mark.parametrize("tenant", ["acme", "beta"])
def test_the_lake_index_is_per_tenant(home: Home, stage: Stage, clock: Clock, tenant: str) -> None:
    other = "beta" if tenant == "acme" else "acme"
    mine = stage(BATCHES[0], SubjectContext(tenant, "cg-1", scan_id="s-1"))
    ingest(home, clock=clock)

    assert batches_in_lake(home, tenant, [mine]) == {mine}
    assert batches_in_lake(home, other, [mine]) == set()


def test_a_batch_in_the_lake_is_a_duplicate_whatever_a_retry_validates(
    home: Home, stage: Stage, clock: Clock
) -> None:
    sha = stage('{"symbolId":"sym:a","hitCount":2}\n{"hitCount":1}\n')
    assert ingest(home, allow_partial=True, clock=clock).accepted == 1
    before = _facts(home)

    retry = ingest(home, [sha], allow_partial=False, clock=clock)  # strict would reject it

    assert [(o.status, o.reason_codes) for o in retry.outcomes] == [("duplicate", [])]
    assert_frame_equal(_facts(home), before)


def test_a_commit_of_this_process_advances_the_index_without_reading_it_back(
    home: Home, stage: Stage, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    import runtime_facts.pipeline.ledger as ledger

    reads: list[int] = []
    real = home.lake.change_reader

    def counting(name: str, start: int, end: int, columns: Any = None, **kw: Any) -> Any:
        if columns == ["batch_sha256", "hit_count"]:
            reads.append(start)
        return real(name, start, end, columns, **kw)

    monkeypatch.setattr(home.lake, "change_reader", counting)
    shas = []
    for text in BATCHES:
        shas.append(stage(text))
        ingest(home, [shas[-1]], clock=clock)
    assert reads == []  # each commit brought the index along; nothing was read back
    kept = dict(ledger.lake_batches(home, "acme").hits)
    # the index rebuilt from the lake alone says the same
    ledger._memory.clear()
    shutil.rmtree(home.root / ledger._CACHE)
    assert ledger.lake_batches(home, "acme").hits == kept
    assert set(kept) == set(shas)
    assert kept[shas[0]] == 1275
