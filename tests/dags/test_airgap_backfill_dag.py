"""runtime_facts_airgap_backfill, really run with dag.test() on a kit exported from another home."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from runtime_facts.config import Settings
from runtime_facts.home import Home
from runtime_facts.subject import SubjectContext
from tests.dags.conftest import table_versions, task_states, xcom

DAG_ID = "runtime_facts_airgap_backfill"
SITE = SubjectContext("acme", "cg-kit", scan_id="scan-7")


@pytest.fixture
def kit(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A kit of one scan exported from another site's home: two good batches and a bad one."""
    from runtime_facts.ops.offline import export_kit

    site = Home(Settings.load(str(tmp_path / "site")))
    lines = {
        "good-1": b'{"symbolId":"sym:a","hitCount":3}\n{"symbolId":"sym:b","hitCount":4}\n',
        "good-2": b'{"symbolId":"sym:a","hitCount":5}\n',
        "bad": b'{"symbolId":"sym:c","hitCount":0}\n',
    }
    shas = {
        name: site.cas.put("runtime", gzip.compress(data, mtime=0), SITE).sha256
        for name, data in lines.items()
    }
    out = export_kit(
        site, tenant="acme", scan_id="scan-7", out=tmp_path / "kit", now=datetime.now(UTC)
    )
    return out, shas


def test_backfill_ingests_exactly_the_kit(
    home: Home, kit: tuple[Path, dict[str, str]], run_dag: Any
) -> None:
    path, shas = kit
    unrelated = home.cas.put(
        "runtime", gzip.compress(b'{"symbolId":"sym:x","hitCount":1}\n', mtime=0), SITE
    ).sha256

    run = run_dag(DAG_ID, {"kit_path": str(path), "tenant": "acme"})

    assert str(run.state) == "success"
    receipts = {r["batch_sha256"]: r for r in home.receipts}
    assert set(receipts) == set(shas.values())  # the staged, unrelated batch was not touched
    assert unrelated not in receipts
    assert {r["source"] for r in receipts.values()} == {"offline-kit"}
    assert receipts[shas["bad"]]["status"] == "rejected"
    facts = home.lake.read("runtime_facts")
    assert dict(facts.select("symbol_id", "hit_count").iter_rows()) == {"sym:a": 8, "sym:b": 4}
    summary = xcom(run, "publish")
    assert (summary["accepted"], summary["rejected"]) == (2, 1)
    assert (summary["kit"]["tenant"], summary["kit"]["files"]) == ("acme", 3)
    exported = Path(summary["export"]["path"]).read_bytes().splitlines()
    assert sorted(orjson.loads(line)["batch_sha256"] for line in exported) == sorted(shas.values())


def test_backfill_clears_pending_rescores_like_the_ingest_dag(
    home: Home, kit: tuple[Path, dict[str, str]], run_dag: Any
) -> None:
    from runtime_facts.pipeline.fold import pending_recompute, write_pending

    path, _ = kit
    home.ensure_lake()
    write_pending(home, "acme", {("acme", "cg-left", "scan:left-by-a-crash"): 0})

    run = run_dag(DAG_ID, {"kit_path": str(path)})

    assert str(run.state) == "success"
    assert pending_recompute(home) == {}
    assert xcom(run, "score")["subjects"] == 2  # the kit's subject and the one left pending


def test_backfilling_the_same_kit_again_changes_nothing(
    home: Home, kit: tuple[Path, dict[str, str]], run_dag: Any
) -> None:
    path, _ = kit
    run_dag(DAG_ID, {"kit_path": str(path)})
    versions = table_versions(home)

    run = run_dag(DAG_ID, {"kit_path": str(path)})

    assert str(run.state) == "success"
    assert xcom(run, "publish")["duplicate"] == 2
    facts = home.lake.read("runtime_facts")
    assert dict(facts.select("symbol_id", "hit_count").iter_rows()) == {"sym:a": 8, "sym:b": 4}
    assert versions["runtime_facts"] == home.lake.version("runtime_facts")
    assert versions["runtime_fact_batches"] == home.lake.version("runtime_fact_batches")


def test_a_tampered_kit_fails_at_once_and_loads_nothing(
    home: Home, kit: tuple[Path, dict[str, str]], run_dag: Any
) -> None:
    path, _ = kit
    victim = next(path.glob("reachability/runtime/scan-7/*.ndjson.gz"))
    victim.write_bytes(gzip.compress(b'{"symbolId":"sym:evil","hitCount":9}\n', mtime=0))

    run = run_dag(DAG_ID, {"kit_path": str(path)})

    assert str(run.state) == "failed"
    states = task_states(run)
    assert states[("verify_kit", -1)] == "failed"
    assert states[("load_kit", -1)] == "upstream_failed"
    assert run.get_task_instance("verify_kit").try_number == 1  # no retry: the kit is bad
    assert list(home.cas.list("runtime")) == []
    assert home.receipts.count() == 0


def test_a_kit_of_another_tenant_is_refused(
    home: Home, kit: tuple[Path, dict[str, str]], run_dag: Any
) -> None:
    path, _ = kit

    run = run_dag(DAG_ID, {"kit_path": str(path), "tenant": "other"})

    assert str(run.state) == "failed"
    assert list(home.cas.list("runtime")) == []
