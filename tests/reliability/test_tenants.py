"""Tenants: names validated at every entry, every read scoped, no write across the boundary."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import orjson
import polars as pl
import pytest
from typer.testing import CliRunner

from runtime_facts.analyst.query import run_query
from runtime_facts.cli.main import app
from runtime_facts.errors import NotFoundError, UsageError
from runtime_facts.home import Home
from runtime_facts.ops.facts import list_facts
from runtime_facts.pipeline.ingest import ingest, ingest_one
from runtime_facts.pipeline.prepare import discover_pending
from runtime_facts.pipeline.score import recompute
from runtime_facts.subject import SubjectContext
from tests.conftest import FIXED_NOW
from tests.reliability.conftest import receipts_of

HOSTILE_TENANTS = [
    "Acme", "ACME", "a/b", "..", "a..b", "../etc", "a=b", "a%2fb", "a\x00b", "", "-a", ".a",
    "_a", "a" * 65, "a b", "a\nb", "a\\b", "é", "a:b",
]  # fmt: skip
HOSTILE_IDS = ["a/b", "..", "a/../b", "../x", "a=b", "k=v/x", "a%2f", "%00", "a\x00b", "a\nb",
               "a\\b", "", "x" * 257]  # fmt: skip
ID_FIELDS = ["callgraph_id", "scan_id", "image_digest", "version", "component"]
SAME_SUBJECT = {"callgraph_id": "cg-1", "scan_id": "s-1"}  # both tenants use the same names
A = SubjectContext("tenant-a", **SAME_SUBJECT)
B = SubjectContext("tenant-b", **SAME_SUBJECT)
runner = CliRunner()


def _gz(text: str) -> bytes:
    return gzip.compress(text.encode(), mtime=0)


def _cli(*args: str) -> tuple[int, dict[str, object] | list[object] | None]:
    result = runner.invoke(app, ["--json", *args])
    try:
        return result.exit_code, orjson.loads(result.output)
    except orjson.JSONDecodeError:
        return result.exit_code, None


# --- validation at every entry ---------------------------------------------------------------


@pytest.mark.parametrize("tenant", HOSTILE_TENANTS, ids=repr)
def test_subject_context_refuses_a_hostile_tenant(tenant: str) -> None:
    with pytest.raises(UsageError, match="invalid tenant") as info:
        SubjectContext(tenant, "cg-1", scan_id="s-1")
    assert info.value.reason == "invalid_context"
    with pytest.raises(UsageError):  # the sidecar / kit-manifest form too
        SubjectContext.from_json(
            {"tenant": tenant, "callgraphId": "cg-1", "subject": {"scanId": "s-1"}}
        )


@pytest.mark.parametrize(
    ("field", "value"),
    # component names may hold '/' (purl namespaces, as SPEC §2 components do); '..' may not
    [(f, v) for f in ID_FIELDS for v in HOSTILE_IDS if (f, v) != ("component", "a/b")],
    ids=repr,
)
def test_subject_context_refuses_a_hostile_id(field: str, value: str) -> None:
    base: dict[str, str] = {"callgraph_id": "cg-1", "component": "c", "version": "1"}
    with pytest.raises(UsageError) as info:
        SubjectContext("acme", **{**base, field: value})
    assert info.value.reason == "invalid_context"


def test_the_same_names_are_accepted_when_clean() -> None:
    """Control: the validation refuses the hostile names, not names in general."""
    ctx = SubjectContext("tenant-a.1_x", "cg-1.2_x", image_digest="sha256:AB12", scan_id="S-1")
    assert ctx.subject_key == "image:sha256:AB12"
    assert SubjectContext("a", "c", component="org/name", version="1.0").subject_key == (
        "component:org/name@1.0"
    )


def _batch_file(tmp_path: Path) -> Path:
    path = tmp_path / "b.ndjson.gz"
    path.write_bytes(_gz('{"symbolId":"a","hitCount":1}\n'))
    return path


def _graph_file(tmp_path: Path) -> Path:
    graph = {"schema": "runtime-facts.callgraph.v1", "callgraphId": "cg-1", "language": "java",
             "nodes": [{"id": "a"}], "edges": [], "entrypoints": ["a"]}  # fmt: skip
    path = tmp_path / "g.json"
    path.write_bytes(orjson.dumps(graph))
    return path


COMMANDS = {
    "cas put": lambda t, tmp: ["cas", "put", str(_batch_file(tmp)), "--tenant", t,
                               "--callgraph-id", "cg-1", "--scan-id", "s-1"],
    "cas put-graph": lambda t, tmp: ["cas", "put-graph", str(_graph_file(tmp)), "--tenant", t],
    "ingest": lambda t, tmp: ["ingest", "--tenant", t],
    "facts list": lambda t, tmp: ["facts", "list", "--tenant", t, "--subject", "scan:s-1"],
    "recompute": lambda t, tmp: ["recompute", "--tenant", t, "--callgraph-id", "cg-1"],
    "query": lambda t, tmp: ["query", "SELECT count(*) FROM runtime_facts", "--tenant", t],
    "replay record": lambda t, tmp: ["replay", "record", "--tenant", t, "--callgraph-id", "cg-1",
                                     "--subject", "scan:s-1", "--out", str(tmp / "m.json")],
    "offline export": lambda t, tmp: ["offline", "export", "--tenant", t, "--scan-id", "s-1",
                                      "--out", str(tmp / "kit")],
}  # fmt: skip


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("tenant", ["Acme", "../etc", "a/b", "a=b", "a%2fb", "a\x00b"], ids=repr)
def test_every_cli_entry_refuses_a_hostile_tenant(
    command: str, tenant: str, home: Home, tmp_path: Path
) -> None:
    home.cas.put("runtime", _gz('{"symbolId":"a","hitCount":1}\n'), A)
    ingest(home)
    code, out = _cli("--home", str(home.root), *COMMANDS[command](tenant, tmp_path))
    assert code == 2, out
    assert isinstance(out, dict)
    assert out["error"] == "invalid_context"
    assert not (tmp_path / "kit").exists()
    assert not (tmp_path / "m.json").exists()


@pytest.mark.parametrize(
    ("option", "value"),
    [("--scan-id", "../x"), ("--scan-id", "a/b"), ("--callgraph-id", "a=b"),
     ("--image-digest", "sha256:%2f"), ("--component", "../x"), ("--version", "1\x00")],
)  # fmt: skip
def test_cas_put_refuses_a_hostile_id(option: str, value: str, home: Home, tmp_path: Path) -> None:
    args = {"--callgraph-id": "cg-1", option: value}
    if option == "--component":
        args["--version"] = "1"
    elif option == "--version":
        args["--component"] = "c"
    elif option not in ("--scan-id", "--image-digest"):
        args["--scan-id"] = "s-1"
    flat = [x for pair in args.items() for x in pair]
    code, out = _cli(
        "--home", str(home.root), "cas", "put", str(_batch_file(tmp_path)), "--tenant", "acme",
        *flat,
    )  # fmt: skip
    assert code == 2, out
    assert list(home.cas.list("runtime")) == []


def test_jobs_refuse_a_hostile_tenant(home: Home) -> None:
    for call in (
        lambda: ingest(home, tenant="../b"),
        lambda: discover_pending(home, "B"),
        lambda: list_facts(home, "a/b", "scan:s-1"),
        lambda: recompute(home, "a=b", "cg-1", None, FIXED_NOW),
        lambda: run_query(home, "SELECT 1", tenant="..%2f"),
    ):
        with pytest.raises(UsageError):
            call()


# --- reads are scoped, writes stay inside the tenant -----------------------------------------


@pytest.fixture
def two_tenants(home: Home) -> dict[str, str]:
    """Tenants a and b with the same callgraph, subject key and symbols, different hits."""
    a = home.cas.put("runtime", _gz('{"symbolId":"sym:x","hitCount":1}\n'), A).sha256
    b = home.cas.put("runtime", _gz('{"symbolId":"sym:x","hitCount":1000}\n'), B).sha256
    ingest(home)
    return {"a": a, "b": b}


def test_facts_list_shows_only_the_requested_tenants_rows(
    home: Home, two_tenants: dict[str, str]
) -> None:
    facts = list_facts(home, "tenant-a", "scan:s-1")
    assert facts.select("tenant", "symbol_id", "hit_count").rows() == [("tenant-a", "sym:x", 1)]
    code, out = _cli("--home", str(home.root), "facts", "list", "--tenant", "tenant-b",
                     "--subject", "scan:s-1")  # fmt: skip
    assert code == 0
    assert [(r["tenant"], r["hit_count"]) for r in out] == [("tenant-b", 1000)]  # type: ignore[index, union-attr]
    with pytest.raises(NotFoundError):
        list_facts(home, "tenant-c", "scan:s-1")


def test_sql_scoped_to_a_tenant_cannot_reach_another_tenants_rows(
    home: Home, two_tenants: dict[str, str]
) -> None:
    for table in (
        "runtime_facts",
        "runtime_fact_batches",
        "ingest_receipts",
        "reachability_states",
    ):
        result = run_query(home, f"SELECT DISTINCT tenant FROM {table}", tenant="tenant-a")
        assert result.table.column("tenant").to_pylist() == ["tenant-a"], table
    other = home.root / "lake" / "runtime_facts_recent" / "tenant=tenant-b"  # the folds' rows
    parquet = next(other.glob("*.parquet"))
    for escape in (
        f"SELECT * FROM read_parquet('{parquet}')",
        f"SELECT * FROM '{parquet}'",
        "SET enable_external_access = true",
        "SELECT * FROM runtime_facts WHERE tenant = 'tenant-b' OR 1=1",
    ):
        try:
            rows = run_query(home, escape, tenant="tenant-a").table
        except UsageError:
            continue
        assert "tenant-b" not in rows.to_pydict().get("tenant", []), escape


def _files(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_tenant_a_cannot_write_tenant_bs_rows(home: Home, two_tenants: dict[str, str]) -> None:
    """A's ingests, folds and recomputes (same names, same symbols) leave B's partitions alone."""
    lake = home.root / "lake"
    tables = (
        "runtime_facts",
        "runtime_facts_recent",
        "runtime_fact_batches",
        "reachability_states",
        "reachability_states_recent",
        "rejections",
    )
    b_parts = {t: lake / t / "tenant=tenant-b" for t in tables}
    before = {t: _files(p) for t, p in b_parts.items() if p.exists()}
    b_facts = home.lake.read("runtime_facts", tenant="tenant-b")

    home.cas.put("runtime", _gz('{"symbolId":"sym:x","hitCount":5}\n{"hitCount":1}\n'), A)
    home.cas.put("runtime", _gz('{"symbolId":"sym:x","hitCount":7}\n'), A)
    ingest(home, tenant="tenant-a")
    recompute(home, "tenant-a", "cg-1", None, FIXED_NOW)

    assert {t: _files(p) for t, p in b_parts.items() if p.exists()} == before
    assert home.lake.read("runtime_facts", tenant="tenant-b").equals(b_facts)
    a_hits = home.lake.read("runtime_facts", tenant="tenant-a").get_column("hit_count")
    assert a_hits.to_list() == [8]  # 1 + 7; the batch with a bad line was refused whole
    assert not home.lake.read("rejections", tenant="tenant-a").is_empty()
    # nor can A re-label B's staged bytes as its own
    b_bytes = home.cas.get("runtime", two_tenants["b"])
    with pytest.raises(Exception, match="already staged with another context"):
        home.cas.put("runtime", b_bytes, A)


def test_a_batch_of_another_tenant_is_refused_when_named_explicitly(home: Home) -> None:
    b = home.cas.put("runtime", _gz('{"symbolId":"sym:b","hitCount":1}\n'), B).sha256
    a = home.cas.put("runtime", _gz('{"symbolId":"sym:a","hitCount":1}\n'), A).sha256

    summary = ingest(home, [a, b], tenant="tenant-a")

    [refused] = receipts_of(home, b)
    assert (refused["status"], refused["reason_codes"]) == ("rejected", ["tenant_mismatch"])
    assert [r["status"] for r in receipts_of(home, a)] == ["accepted"]
    assert summary.accepted == 1
    assert set(home.lake.read("runtime_fact_batches").get_column("tenant")) == {"tenant-a"}
    assert home.lake.read("runtime_facts").filter(pl.col("tenant") == "tenant-b").is_empty()
    # the DAG's per-batch entry point refuses it the same way
    assert ingest_one(home, b, tenant="tenant-a")["reason_codes"] == ["tenant_mismatch"]
    # and discovery for tenant-a never even picks it up
    home.cas.put("runtime", _gz('{"symbolId":"sym:b2","hitCount":1}\n'), B)
    assert discover_pending(home, "tenant-a") == []


def test_an_altered_sidecar_is_refused_and_the_run_goes_on(home: Home) -> None:
    """A sidecar edited on disk (bad tenant, not JSON, not an object) used to crash ingest."""
    shas = [home.cas.put("runtime", _gz(f'{{"symbolId":"s{i}","hitCount":1}}\n'), A).sha256
            for i in range(4)]  # fmt: skip
    folder = home.root / "cas" / "reachability" / "runtime"
    altered = {
        shas[0]: b'{"tenant":"../b","callgraphId":"cg-1","subject":{"scanId":"s-1"}}',
        shas[1]: b"not json",
        shas[2]: b"[]",
    }
    for sha, raw in altered.items():
        (folder / f"{sha}.context.json").write_bytes(raw)

    summary = ingest(home)

    assert (summary.accepted, summary.rejected) == (1, 3)
    for sha in altered:
        [receipt] = receipts_of(home, sha)
        assert (receipt["status"], receipt["reason_codes"]) == ("rejected", ["invalid_context"])
        assert receipt["tenant"] is None
    assert home.lake.read("runtime_facts").get_column("symbol_id").to_list() == ["s3"]
