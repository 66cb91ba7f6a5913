"""Replay: record a manifest from a home, re-derive it from CAS alone, detect every drift."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson
import polars as pl
import pytest
from typer.testing import CliRunner

from runtime_facts.cli.main import app
from runtime_facts.errors import RuntimeFactsError
from runtime_facts.generate import GeneratorSpec, generate_batches
from runtime_facts.home import Home
from runtime_facts.ops.compact import compact
from runtime_facts.ops.replay import record_manifest, replay
from runtime_facts.pipeline.ingest import ingest
from runtime_facts.stores.cas import parse_cas_uri
from runtime_facts.stores.graphs import stage_graph
from runtime_facts.stores.outbox import Outbox
from runtime_facts.subject import SubjectContext

Clock = Callable[[], datetime]
CTX = SubjectContext("acme", "cg-1", scan_id="s-1")
SUBJECT = CTX.subject_key
GRAPH = {
    "schema": "runtime-facts.callgraph.v1",
    "callgraphId": "cg-1",
    "language": "java",
    "nodes": [{"id": "sym:x"}, {"id": "sym:y"}, {"id": "sym:z"}],
    "edges": [{"sourceId": "sym:x", "targetId": "sym:y", "kind": "call"}],
    "entrypoints": ["sym:x"],
}


@pytest.fixture
def source(home: Home, tmp_path: Path) -> Home:
    """A graph; three batches of the subject (one accepted in partial mode), one of another."""
    graph = tmp_path / "graph.json"
    graph.write_bytes(orjson.dumps(GRAPH))
    stage_graph(home, graph, "acme", datetime(2026, 11, 1, tzinfo=UTC))
    spec = GeneratorSpec(events=300, symbols=40, code_ids=4, seed=5, events_per_chunk=100)
    chunks = list(generate_batches(spec))
    for chunk in chunks[:2]:
        home.cas.put("runtime", chunk, CTX)
    home.cas.put("runtime", chunks[2], SubjectContext("acme", "cg-1", scan_id="s-2"))
    ingest(home, clock=lambda: datetime(2026, 11, 2, tzinfo=UTC))
    partial = b'{"symbolId":"sym:x","hitCount":3}\n{"hitCount":1}\n'
    home.cas.put("runtime", gzip.compress(partial, mtime=0), CTX)
    ingest(home, allow_partial=True, clock=lambda: datetime(2026, 11, 3, tzinfo=UTC))
    return home


def _record(home: Home, out: Path) -> dict[str, object]:
    return record_manifest(home, tenant="acme", callgraph_id="cg-1", subject_key=SUBJECT, out=out)


def _cited(manifest: Path, kind: str = "runtimeTraces") -> list[str]:
    doc = orjson.loads(manifest.read_bytes())
    return [parse_cas_uri(c["casUri"])[1] for c in doc["reachability"][kind]]


def _run(home: Home, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, [*args, "--home", str(home.root)])
    return result.exit_code, result.output


def test_manifest_cites_every_batch_sorted_and_digests(source: Home, tmp_path: Path) -> None:
    doc = _record(source, tmp_path / "manifest.json")
    section = doc["reachability"]
    assert isinstance(section, dict)
    traces = section["runtimeTraces"]
    assert len(traces) == 3
    assert [t["casUri"] for t in traces] == sorted(t["casUri"] for t in traces)
    for t in traces:
        assert t["hash"] == "sha256:" + t["casUri"].rsplit("/", 1)[1]
        assert t["hashAlg"] == "sha256"
    assert len(section["graphs"]) == 1
    events = [e for e in Outbox(source.root / "outbox") if e["subject_key"] == SUBJECT]
    assert section["statesDigest"] == events[-1]["digest"]
    assert (doc["schemaVersion"], doc["subject"]) == ("2.0", {"scanId": "s-1"})
    assert orjson.loads((tmp_path / "manifest.json").read_bytes()) == doc


def test_recording_is_deterministic(source: Home, tmp_path: Path, clock: Clock) -> None:
    _record(source, tmp_path / "a.json")
    ingest(source, clock=clock)  # nothing new: the manifest must not change
    _record(source, tmp_path / "b.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def test_replay_reproduces_the_recorded_digests(source: Home, tmp_path: Path) -> None:
    _record(source, tmp_path / "manifest.json")
    report = replay(tmp_path / "manifest.json", source=source, scratch=tmp_path / "scratch")
    assert report.ok, report
    assert (report.runtime_traces, report.graphs) == (3, 1)
    assert report.replayed == report.recorded
    assert (tmp_path / "scratch" / "home" / "lake").is_dir()


@pytest.mark.parametrize(
    "args",
    [
        ("replay", "{m}", "--section", "reachability"),
        ("replay", "--section", "reachability", "{m}"),
        ("replay", "{m}"),
        ("replay", "run", "{m}", "--section", "reachability"),
    ],
)
def test_cli_replay_forms(source: Home, tmp_path: Path, args: tuple[str, ...]) -> None:
    manifest = tmp_path / "manifest.json"
    _record(source, manifest)
    code, output = _run(source, *(a.format(m=manifest) for a in args))
    assert code == 0, output
    assert "replay ok" in output


def test_cli_record_and_hold(source: Home, tmp_path: Path) -> None:
    out = tmp_path / "m.json"
    args = ["replay", "record", "--tenant", "acme", "--callgraph-id", "cg-1"]
    code, output = _run(
        source, *args, "--subject", SUBJECT, "--out", str(out), "--hold", "--name", "audit-1"
    )
    assert code == 0, output
    held = source.root / "replay" / "held" / "audit-1.json"
    assert held.read_bytes() == out.read_bytes()
    code, output = _run(source, *args, "--subject", "scan:nope", "--out", str(out))
    assert code == 4
    assert "unknown_subject" in output


def test_altered_cas_object_exits_3(source: Home, tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    _record(source, manifest)
    path = source.root / "cas" / "reachability" / "runtime" / _cited(manifest)[1]
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01
    path.write_bytes(bytes(data))
    code, output = _run(source, "replay", str(manifest), "--section", "reachability")
    assert code == 3
    assert "cas_digest_mismatch" in output


def test_deleted_cas_object_exits_4(source: Home, tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    _record(source, manifest)
    (source.root / "cas" / "reachability" / "runtime" / _cited(manifest)[0]).unlink()
    code, output = _run(source, "replay", str(manifest), "--section", "reachability", "--json")
    assert code == 4
    assert orjson.loads(output)["error"] == "cas_miss"


def test_deleted_graph_exits_4(source: Home, tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    _record(source, manifest)
    (source.root / "cas" / "reachability" / "graphs" / _cited(manifest, "graphs")[0]).unlink()
    code, _ = _run(source, "replay", str(manifest))
    assert code == 4


def test_altered_fact_row_in_the_source_fails_replay(source: Home, tmp_path: Path) -> None:
    compact(source, vacuum=False)  # every row in the base table, the one altered below
    facts = source.lake.read("runtime_facts", where=pl.col("subject_key") == SUBJECT)
    altered = facts.with_columns(
        pl.when(pl.int_range(pl.len()) == 0)
        .then(pl.col("hit_count") + 1)
        .otherwise(pl.col("hit_count"))
        .alias("hit_count")
    )
    source.lake.replace_where("runtime_facts", altered, f"subject_key = '{SUBJECT}'")
    manifest = tmp_path / "manifest.json"
    _record(source, manifest)
    code, output = _run(source, "replay", str(manifest), "--section", "reachability", "--json")
    assert code == 3
    report = orjson.loads(output)
    assert report["mismatches"] == ["factsDigest"]
    assert report["recorded"]["statesDigest"] == report["replayed"]["statesDigest"]
    code, output = _run(source, "replay", str(manifest))
    assert code == 3
    assert "factsDigest differs" in output


def test_edited_manifest_digest_fails_replay(source: Home, tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    doc = _record(source, manifest)
    section = doc["reachability"]
    assert isinstance(section, dict)
    section["statesDigest"] = "sha256:" + "0" * 64
    manifest.write_bytes(orjson.dumps(doc))
    report = replay(manifest, source=source)
    assert report.mismatches == ["statesDigest"]


def test_unsupported_section_is_a_usage_error(source: Home, tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    _record(source, manifest)
    code, output = _run(source, "replay", str(manifest), "--section", "vex")
    assert code == 2
    assert "replay_section_unsupported" in output


def test_missing_and_malformed_manifests(source: Home, tmp_path: Path) -> None:
    code, output = _run(source, "replay", str(tmp_path / "none.json"))
    assert (code, "replay_manifest_missing" in output) == (4, True)
    manifest = tmp_path / "manifest.json"
    doc = _record(source, manifest)
    section = doc["reachability"]
    assert isinstance(section, dict)
    section["runtimeTraces"].reverse()
    manifest.write_bytes(orjson.dumps(doc))
    with pytest.raises(RuntimeFactsError) as caught:
        replay(manifest, source=source)
    assert (caught.value.reason, caught.value.exit_code) == ("replay_manifest_invalid", 3)


def test_scratch_must_be_empty(source: Home, tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    _record(source, manifest)
    (tmp_path / "scratch").mkdir()
    (tmp_path / "scratch" / "x").write_text("x")
    with pytest.raises(RuntimeFactsError) as caught:
        replay(manifest, source=source, scratch=tmp_path / "scratch")
    assert caught.value.exit_code == 2


def test_altered_state_row_in_the_source_fails_replay(source: Home, tmp_path: Path) -> None:
    compact(source, vacuum=False)  # every row in the base table, the one altered below
    states = source.lake.read("reachability_states", where=pl.col("subject_key") == SUBJECT)
    assert states.height
    altered = states.with_columns(pl.lit("X").alias("state"))
    source.lake.replace_where("reachability_states", altered, f"subject_key = '{SUBJECT}'")
    manifest = tmp_path / "manifest.json"
    _record(source, manifest)
    report = replay(manifest, source=source)
    assert report.mismatches == ["statesDigest"]


def test_replay_does_not_depend_on_the_source_clock(home: Home, tmp_path: Path) -> None:
    chunks = list(generate_batches(GeneratorSpec(events=50, symbols=10, events_per_chunk=25)))
    for chunk in chunks:
        home.cas.put("runtime", chunk, CTX)
    ingest(home, clock=lambda: datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC))
    _record(home, tmp_path / "manifest.json")
    assert replay(tmp_path / "manifest.json", source=home).ok


def test_replay_uses_the_recorded_limits_not_the_current_settings(
    home: Home, tmp_path: Path
) -> None:
    line = orjson.dumps({"symbolId": "sym:" + "x" * 300, "hitCount": 2}) + b"\n"
    home.cas.put("runtime", gzip.compress(line, mtime=0), CTX)
    ingest(home, clock=lambda: datetime(2026, 11, 2, tzinfo=UTC))
    manifest = tmp_path / "manifest.json"
    doc = _record(home, manifest)
    section = doc["reachability"]
    assert isinstance(section, dict)
    assert section["limits"]["max_line_bytes"] == home.settings.ingest.max_line_bytes
    tighter = home.settings.ingest.replace(max_line_bytes=100)
    changed = Home(home.settings.replace(ingest=tighter))
    report = replay(manifest, source=changed)
    assert report.ok, report
    assert (report.limits_source, report.limits["max_line_bytes"]) == ("manifest", 256 * 1024)
    # Without the recorded limits the tighter setting rejects the line: the replay differs.
    del section["limits"]
    manifest.write_bytes(orjson.dumps(doc))
    unlimited = replay(manifest, source=changed)
    assert unlimited.limits_source == "current settings"
    assert unlimited.mismatches == ["factsDigest", "statesDigest"]
    assert "line_too_long" in unlimited.rejected_batches[0]["reason_codes"]


def test_malformed_recorded_limits_are_refused(source: Home, tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    doc = _record(source, manifest)
    section = doc["reachability"]
    assert isinstance(section, dict)
    section["limits"] = {**section["limits"], "max_line_bytes": "big"}
    manifest.write_bytes(orjson.dumps(doc))
    with pytest.raises(RuntimeFactsError) as err:
        replay(manifest, source=source)
    assert err.value.reason == "replay_manifest_invalid"
    assert "max_line_bytes" in err.value.message
