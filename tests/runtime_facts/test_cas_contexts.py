"""One batch, one subject: concurrent stagings of the same bytes are told the truth, and
`cas verify` checks every subject-context sidecar."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson
import polars as pl
import pytest
from typer.testing import CliRunner

from runtime_facts.cli.main import app
from runtime_facts.errors import RejectedError
from runtime_facts.home import Home
from runtime_facts.pipeline.ingest import ingest
from runtime_facts.pipeline.stage import verify_cas
from runtime_facts.stores.cas import CONTEXT_SUFFIX
from runtime_facts.subject import SubjectContext
from tests.runtime_facts.api_harness import auth, live_api, make_home

BATCH = gzip.compress(b'{"symbolId":"sym:a","hitCount":2}\n', mtime=0)
runner = CliRunner()


def _race(n: int, attempt: Callable[[int], Any]) -> list[Any]:
    """Run `attempt(i)` for i < n on n threads released at once; results or exceptions."""
    barrier = threading.Barrier(n)

    def run(i: int) -> Any:
        barrier.wait()
        try:
            return attempt(i)
        except RejectedError as exc:
            return exc

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


def _scan(i: int) -> SubjectContext:
    return SubjectContext("acme", "cg-1", scan_id=f"s-{i}")


def _sidecar(home: Home, sha: str) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads(
        home.objects.get(f"cas/reachability/runtime/{sha}{CONTEXT_SUFFIX}")
    )
    return doc


@pytest.mark.parametrize("rounds", [6])
def test_concurrent_puts_with_different_contexts_have_one_winner(home: Home, rounds: int) -> None:
    for r in range(rounds):
        data = gzip.compress(f'{{"symbolId":"sym:{r}","hitCount":1}}\n'.encode(), mtime=0)
        outcomes = _race(12, lambda i, data=data: home.cas.put("runtime", data, _scan(i)))
        winners = [i for i, o in enumerate(outcomes) if not isinstance(o, RejectedError)]
        losers = [o for o in outcomes if isinstance(o, RejectedError)]
        assert len(winners) == 1
        assert {o.reason for o in losers} == {"context_conflict"}
        assert len(losers) == 11
        sha = outcomes[winners[0]].sha256
        assert home.cas.subject_context(sha) == _scan(winners[0])
        assert all(f"scan:s-{winners[0]}" in o.message for o in losers)


def test_concurrent_puts_with_the_same_context_are_all_idempotent(home: Home) -> None:
    outcomes = _race(8, lambda _: home.cas.put("runtime", BATCH, _scan(0)))
    assert not [o for o in outcomes if isinstance(o, RejectedError)]
    assert sum(o.created for o in outcomes) == 1
    assert len({o.uri for o in outcomes}) == 1


def test_concurrent_puts_over_s3_have_one_winner(s3_home: Home) -> None:
    outcomes = _race(6, lambda i: s3_home.cas.put("runtime", BATCH, _scan(i)))
    winners = [i for i, o in enumerate(outcomes) if not isinstance(o, RejectedError)]
    assert len(winners) == 1
    assert {o.reason for o in outcomes if isinstance(o, RejectedError)} == {"context_conflict"}
    assert s3_home.cas.subject_context(outcomes[winners[0]].sha256) == _scan(winners[0])


def test_concurrent_cli_puts_in_separate_processes_exit_0_once_and_3_otherwise(
    tmp_path: Path,
) -> None:
    batch = tmp_path / "b.ndjson.gz"
    batch.write_bytes(BATCH)
    home = tmp_path / "h"
    env = {**os.environ, "RUNTIME_FACTS_HOME": str(home)}
    exe = str(Path(sys.executable).with_name("runtime-facts"))
    cmd = [exe, "--json", "cas", "put", str(batch)]
    procs = [
        subprocess.Popen(
            [*cmd, "--tenant", "acme", "--callgraph-id", "cg-1", "--scan-id", f"s-{i}"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(4)
    ]
    results = [(p.wait(timeout=120), p.stdout.read() if p.stdout else b"") for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 3, 3, 3], results
    winner = next(i for i, (code, _) in enumerate(results) if code == 0)
    for code, out in results:
        if code == 3:
            assert [r["error"] for r in json.loads(out)] == ["context_conflict"]
    sha = json.loads(results[winner][1])[0]["sha256"]
    recorded = json.loads((home / f"cas/reachability/runtime/{sha}{CONTEXT_SUFFIX}").read_bytes())
    assert recorded["subject"] == {"scanId": f"s-{winner}"}


def test_concurrent_posts_get_one_202_and_409s_and_facts_go_where_the_receipt_says(
    tmp_path: Path,
) -> None:
    home = make_home(tmp_path)
    told: dict[str, str] = {}  # sha256 -> the subject key its one 202 named
    body = b'{"symbolId":"sym:a","hitCount":2}\n{"symbolId":"sym:b","hitCount":1}\n'
    with (
        live_api(home, limit_concurrency=32) as live,
        httpx.Client(base_url=live.url, timeout=30) as client,
    ):
        for round_ in range(3):
            content = body + b'{"symbolId":"sym:c","hitCount":1}\n' * round_  # new bytes

            def post(i: int, content: bytes = content) -> httpx.Response:
                return client.post(
                    "/signals/runtime-facts/ndjson",
                    params={"scanId": f"s-{i}"},
                    content=content,
                    headers={"X-Tenant": "acme", "X-Callgraph-Id": "cg-1", **auth()},
                )

            responses = _race(12, post)
            statuses = sorted(r.status_code for r in responses)
            assert statuses == [202] + [409] * 11
            winner = next(r for r in responses if r.status_code == 202).json()
            told[winner["sha256"]] = winner["subjectKey"]
            for r in responses:
                if r.status_code == 409:
                    assert r.json()["error"] == "context_conflict"
            assert _sidecar(home, winner["sha256"])["subjectKey"] == winner["subjectKey"]
    summary = ingest(home)
    assert summary is not None
    receipts = {r["batch_sha256"]: r for r in home.receipts}
    facts = home.lake.read("runtime_facts")
    assert {sha: r["subject_key"] for sha, r in receipts.items()} == told
    for sha, receipt in receipts.items():
        assert receipt["status"] == "accepted"
        keys = facts.filter(pl.col("subject_key") == receipt["subject_key"])
        assert keys.height > 0, (sha, receipt["subject_key"])
    assert len(receipts) == 3
    assert facts.get_column("subject_key").n_unique() <= 3


def test_an_api_post_with_a_dot_scan_id_is_400_invalid_context(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    with live_api(home) as live, httpx.Client(base_url=live.url, timeout=30) as client:
        resp = client.post(
            "/signals/runtime-facts/ndjson",
            params={"scanId": "."},
            content=b'{"symbolId":"sym:a","hitCount":1}\n',
            headers={"X-Tenant": "acme", "X-Callgraph-Id": "cg-1", **auth()},
        )
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_context"
    assert not list(home.cas.list("runtime"))


# --- cas verify checks the sidecars ---------------------------------------------------------


def _staged(home: Home) -> str:
    return home.cas.put("runtime", BATCH, _scan(1)).sha256


def _verify(home: Home) -> tuple[int, list[list[str]]]:
    result = runner.invoke(app, ["--home", str(home.root), "--json", "cas", "verify", "--all"])
    return result.exit_code, json.loads(result.stdout)["bad"]


def _rewrite_sidecar(home: Home, sha: str, raw: bytes) -> None:
    path = home.root / f"cas/reachability/runtime/{sha}{CONTEXT_SUFFIX}"
    path.chmod(0o644)
    path.write_bytes(raw)


def test_cas_verify_passes_intact_objects_and_sidecars(home: Home) -> None:
    _staged(home)
    assert _verify(home) == (0, [])


def test_cas_verify_reports_a_missing_sidecar(home: Home) -> None:
    sha = _staged(home)
    (home.root / f"cas/reachability/runtime/{sha}{CONTEXT_SUFFIX}").unlink()
    assert _verify(home) == (3, [["runtime", sha, "context_missing"]])


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "invalid_context"),
        (b"[1, 2]", "invalid_context"),
        (
            b'{"tenant":"acme","tenant":"evil","callgraphId":"cg-1","subject":{"scanId":"s-1"},'
            b'"subjectKey":"scan:s-1"}',
            "duplicate_json_key",
        ),
        (b'{"tenant":"acme","callgraphId":"cg-1","subject":{"scanId":"."}}', "invalid_context"),
        (
            b'{"tenant":"acme","callgraphId":"cg-1","subject":{"scanId":"s-1"},'
            b'"subjectKey":"scan:s-2"}',
            "context_mismatch",
        ),
    ],
    ids=["not-json", "not-an-object", "duplicate-key", "invalid-id", "wrong-subject-key"],
)
def test_cas_verify_reports_a_damaged_sidecar(home: Home, raw: bytes, reason: str) -> None:
    sha = _staged(home)
    _rewrite_sidecar(home, sha, raw)
    assert _verify(home) == (3, [["runtime", sha, reason]])
    assert verify_cas(home, [sha]).bad == [("runtime", sha, reason)]


def test_a_put_onto_a_sidecar_with_duplicate_keys_is_refused(home: Home) -> None:
    sha = _staged(home)
    _rewrite_sidecar(home, sha, b'{"tenant":"acme","tenant":"acme"}')
    with pytest.raises(RejectedError) as caught:
        home.cas.put("runtime", BATCH, _scan(1))
    assert caught.value.reason == "duplicate_json_key"
