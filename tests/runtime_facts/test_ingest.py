"""Ingest end to end through CAS and Delta: strict/partial, idempotency, order, overflow."""

from __future__ import annotations

import gzip
import random
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import polars as pl
from hypothesis import given
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from runtime_facts.config import Settings
from runtime_facts.generate import GeneratorSpec, generate_batches
from runtime_facts.home import Home
from runtime_facts.pipeline.ingest import COMMIT_GROUP, commit_groups, ingest
from runtime_facts.subject import SubjectContext
from transforms.schema import FACT_KEY

Stage = Callable[..., str]
Clock = Callable[[], datetime]


def _facts(home: Home) -> pl.DataFrame:
    return home.lake.read("runtime_facts").drop("updated_at").sort(FACT_KEY, nulls_last=False)


def test_strict_mode_rejects_the_whole_batch(home: Home, stage: Stage, clock: Clock) -> None:
    sha = stage('{"symbolId":"a","hitCount":1}\n{"hitCount":2}\n')
    summary = ingest(home, clock=clock)
    assert (summary.rejected, summary.accepted) == (1, 0)
    assert home.lake.read("runtime_facts").is_empty()
    assert home.lake.read("runtime_fact_batches").is_empty()
    receipt = home.lake.read("ingest_receipts").row(0, named=True)
    assert receipt["batch_sha256"] == sha
    assert receipt["status"] == "rejected"
    assert receipt["reason_codes"] == ["invalid_lines", "missing_symbol_id"]
    rejection = home.lake.read("rejections").select("line_number", "reason_code").rows()
    assert rejection == [(2, "missing_symbol_id")]


def test_partial_mode_quarantines_bad_lines(home: Home, stage: Stage, clock: Clock) -> None:
    stage('{"symbolId":"a","hitCount":1}\n{"hitCount":2}\n{"symbolId":"a","hitCount":4}\n')
    summary = ingest(home, allow_partial=True, clock=clock)
    assert (summary.accepted, summary.events, summary.rejected_lines) == (1, 2, 1)
    assert home.lake.read("runtime_facts").select("symbol_id", "hit_count").rows() == [("a", 5)]
    assert home.lake.read("rejections").select("line_number", "reason_code").rows() == [
        (2, "missing_symbol_id")
    ]


def test_partial_mode_with_no_valid_line_is_rejected(
    home: Home, stage: Stage, clock: Clock
) -> None:
    stage('{"hitCount":2}\n')
    summary = ingest(home, allow_partial=True, clock=clock)
    assert summary.rejected == 1
    assert summary.outcomes[0].reason_codes == ["missing_symbol_id", "no_valid_lines"]


def test_ingesting_twice_equals_once(home: Home, stage: Stage, clock: Clock) -> None:
    stage('{"symbolId":"a","hitCount":1}\n')
    stage('{"symbolId":"a","hitCount":2}\n')
    ingest(home, clock=clock)
    before = _facts(home)
    versions = {t: home.lake.version(t) for t in ("runtime_facts", "runtime_fact_batches")}
    again = ingest(home, clock=clock)
    assert again.batches == 0
    assert_frame_equal(_facts(home), before)
    assert {t: home.lake.version(t) for t in versions} == versions


def test_explicit_reingest_is_a_duplicate_receipt(home: Home, stage: Stage, clock: Clock) -> None:
    sha = stage('{"symbolId":"a","hitCount":1}\n')
    ingest(home, clock=clock)
    summary = ingest(home, [sha], clock=clock)
    assert summary.duplicate == 1
    assert home.lake.read("runtime_facts").get_column("hit_count").to_list() == [1]
    statuses = home.lake.read("ingest_receipts").sort("sequence").get_column("status").to_list()
    assert statuses == ["accepted", "duplicate"]


def test_concurrent_ingests_of_the_same_batches_count_once(
    home: Home, stage: Stage, clock: Clock
) -> None:
    shas = [stage(f'{{"symbolId":"s{i}","hitCount":{i + 1}}}\n') for i in range(4)]
    threads = [
        threading.Thread(target=ingest, args=(Home(home.settings), shas), kwargs={"clock": clock})
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    facts = home.lake.read("runtime_facts").sort("symbol_id")
    assert facts.get_column("hit_count").to_list() == [1, 2, 3, 4]
    assert facts.get_column("batch_count").to_list() == [1, 1, 1, 1]
    statuses = home.lake.read("ingest_receipts").get_column("status").value_counts(sort=True)
    assert dict(statuses.rows()) == {"duplicate": 8, "accepted": 4}


def test_batch_order_does_not_change_the_facts(tmp_path: Path, clock: Clock) -> None:
    spec = GeneratorSpec(events=3000, symbols=300, code_ids=5, seed=3, events_per_chunk=500)
    chunks = list(generate_batches(spec))
    ctx = SubjectContext("acme", "cg", image_digest="sha256:abc")
    results = []
    for seed in (1, 2):
        order = list(chunks)
        random.Random(seed).shuffle(order)
        home = Home(Settings.load(str(tmp_path / f"h{seed}")))
        for chunk in order:
            home.cas.put("runtime", chunk, ctx)
            ingest(home, clock=clock)  # one batch per run: folds happen in a different order too
        results.append(_facts(home))
    assert_frame_equal(results[0], results[1])
    assert results[0].get_column("batch_count").max() == len(chunks)


def test_overflow_across_batches_rejects_the_second_batch(
    home: Home, stage: Stage, clock: Clock
) -> None:
    stage(f'{{"symbolId":"a","hitCount":{2**63 - 1}}}\n')
    ingest(home, clock=clock)
    stage('{"symbolId":"a","hitCount":1}\n{"symbolId":"b","hitCount":1}\n')
    summary = ingest(home, clock=clock)
    assert summary.outcomes[0].reason_codes == ["hit_count_overflow"]
    assert home.lake.read("runtime_facts").get_column("hit_count").to_list() == [2**63 - 1]


def test_overflow_against_unfolded_batches_is_caught(
    home: Home, stage: Stage, clock: Clock
) -> None:
    a = stage(f'{{"symbolId":"a","hitCount":{2**62}}}\n')
    b = stage(f'{{"symbolId":"a","hitCount":{2**62}}}\n{{"symbolId":"z","hitCount":1}}\n')
    c = stage(f'{{"symbolId":"a","hitCount":{2**62 - 1}}}\n{{"symbolId":"y","hitCount":1}}\n')
    statuses = [ingest(home, [s], clock=clock, fold=False).outcomes[0].status for s in (a, b, c)]
    assert statuses == ["accepted", "rejected", "accepted"]
    ingest(home, [], clock=clock)
    facts = home.lake.read("runtime_facts").sort("symbol_id")
    assert facts.select("symbol_id", "hit_count").rows() == [("a", 2**63 - 1), ("y", 1)]


def test_tenant_filter_only_ingests_that_tenant(home: Home, stage: Stage, clock: Clock) -> None:
    stage('{"symbolId":"a","hitCount":1}\n')
    stage('{"symbolId":"b","hitCount":1}\n', SubjectContext("other", "cg", scan_id="x"))
    summary = ingest(home, tenant="other", clock=clock)
    assert summary.accepted == 1
    assert home.lake.read("runtime_facts").get_column("tenant").to_list() == ["other"]


def test_batch_of_another_tenant_is_refused_when_a_tenant_is_given(
    home: Home, stage: Stage, clock: Clock
) -> None:
    sha = stage('{"symbolId":"b","hitCount":1}\n', SubjectContext("other", "cg", scan_id="x"))
    summary = ingest(home, [sha], tenant="acme", clock=clock)
    assert summary.outcomes[0].reason_codes == ["tenant_mismatch"]
    assert home.lake.read("runtime_facts").is_empty()


def test_tampered_cas_object_is_rejected_before_parsing(
    home: Home, stage: Stage, clock: Clock
) -> None:
    sha = stage('{"symbolId":"a","hitCount":1}\n')
    path = home.root / "cas" / "reachability" / "runtime" / sha
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    summary = ingest(home, clock=clock)
    assert summary.outcomes[0].reason_codes == ["cas_digest_mismatch"]
    sealed = ingest(home, [sha], sealed=True, clock=clock)
    assert sealed.outcomes[0].reason_codes == ["sealed_mode_evidence_invalid"]


def test_oversized_batch_is_rejected(tmp_path: Path, ctx: SubjectContext, clock: Clock) -> None:
    home = Home(Settings.load(str(tmp_path / "h")))
    home.settings.ingest.max_batch_bytes = 16
    sha = home.cas.put(
        "runtime", gzip.compress(b'{"symbolId":"a","hitCount":1}\n' * 50), ctx
    ).sha256
    summary = ingest(home, [sha], clock=clock)
    assert summary.outcomes[0].reason_codes == ["batch_too_large"]


def test_receipts_log_and_table_agree(home: Home, stage: Stage, clock: Clock) -> None:
    stage('{"symbolId":"a","hitCount":1}\n')
    stage('{"hitCount":1}\n')
    ingest(home, clock=clock)
    logged = [(r["sequence"], r["receipt_sha256"]) for r in home.receipts]
    table = (
        home.lake.read("ingest_receipts")
        .sort("sequence")
        .select("sequence", "receipt_sha256")
        .rows()
    )
    assert logged == table
    assert [r["prev_receipt_sha256"] for r in home.receipts][1] == logged[0][1]


def test_a_missing_sidecar_rejects_its_batch_and_the_others_are_ingested(
    home: Home, stage: Stage, clock: Clock
) -> None:
    lost = stage('{"symbolId":"sym:lost","hitCount":1}\n')
    kept = stage('{"symbolId":"sym:kept","hitCount":2}\n')
    (home.root / "cas" / "reachability" / "runtime" / f"{lost}.context.json").unlink()

    summary = ingest(home, clock=clock)

    outcomes = {o.batch_sha256: (o.status, o.reason_codes) for o in summary.outcomes}
    assert outcomes == {lost: ("rejected", ["context_missing"]), kept: ("accepted", [])}
    assert home.lake.read("runtime_facts").get_column("symbol_id").to_list() == ["sym:kept"]
    assert ingest(home, clock=clock).batches == 0  # the rejection is final until --retry


def test_a_run_can_turn_sealed_mode_on_but_never_off() -> None:
    from runtime_facts.config import IngestSettings
    from runtime_facts.pipeline.outcomes import IngestOptions

    sealed, open_ = IngestSettings(sealed=True), IngestSettings(sealed=False)
    assert IngestOptions(sealed=False).sealed_mode(sealed) is True
    assert IngestOptions(sealed=None).sealed_mode(sealed) is True
    assert IngestOptions(sealed=True).sealed_mode(open_) is True
    assert IngestOptions(sealed=False).sealed_mode(open_) is False


@given(count=st.integers(0, 200), most=st.integers(1, 16))
def test_commit_groups_are_as_few_as_allowed_and_of_equal_size(count: int, most: int) -> None:
    sizes = commit_groups(count, most)
    assert sum(sizes) == count
    assert len(sizes) == -(-count // most)
    assert all(1 <= s <= most for s in sizes)
    assert sizes == sorted(sizes, reverse=True)
    assert not sizes or sizes[0] - sizes[-1] <= 1


def test_a_run_commits_its_batches_in_groups_of_equal_size(
    home: Home, stage: Stage, clock: Clock
) -> None:
    count = 2 * COMMIT_GROUP + 1
    for i in range(count):
        stage(f'{{"symbolId":"s{i}","hitCount":1}}\n')
    home.ensure_lake()
    before = home.lake.version("runtime_fact_batches")
    ingest(home, clock=clock)
    table = home.lake.table("runtime_fact_batches")
    per_version = [
        table.load_cdf(starting_version=v, ending_version=v).read_all().num_rows
        for v in range(before + 1, table.version() + 1)
    ]
    assert per_version == commit_groups(count)
