"""Every JSON document the product trusts refuses a key named twice (`duplicate_json_key`)."""

from __future__ import annotations

import gzip
import shutil
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from runtime_facts.api.auth import TokenFileError, hash_token, parse_token_file
from runtime_facts.errors import RejectedError
from runtime_facts.home import Home
from runtime_facts.ops.offline import verify_kit
from runtime_facts.ops.replay import load_manifest
from runtime_facts.ops.retention import apply_retention
from runtime_facts.stores.graphs import (
    compiled_graph_dir,
    current_graph_sha,
    read_compiled_graph,
    stage_graph,
)
from runtime_facts.stores.offline_kit import MANIFEST, SIGNATURE, parse_manifest
from transforms.callgraph import CallgraphError, parse_callgraph
from transforms.strict_json import DuplicateKeyError, loads_strict

from ..conftest import FIXTURES

GRAPH = FIXTURES / "callgraphs" / "cg-checkout-2.4.1.json"
_NOW = datetime(2026, 11, 26, tzinfo=UTC)


def _twice(raw: bytes, key: str, value: str) -> bytes:
    """`raw` (a JSON object) with `key` inserted a second time, first, with `value`."""
    return b"{" + orjson.dumps(key) + b":" + orjson.dumps(value) + b"," + raw.lstrip()[1:]


@pytest.mark.parametrize(
    "raw",
    [b'{"a":1,"a":2}', b'{"x":[{"id":"n","id":"m"}]}', b'{"o":{"k":{},"k":{}}}'],
)
def test_a_repeated_key_at_any_depth_is_refused(raw: bytes) -> None:
    with pytest.raises(DuplicateKeyError):
        loads_strict(raw)


def test_distinct_keys_and_equal_keys_in_different_objects_pass() -> None:
    assert loads_strict(b'{"a":{"k":1},"b":{"k":2}}') == {"a": {"k": 1}, "b": {"k": 2}}


@pytest.mark.parametrize("raw", [b'{"a":NaN}', b'{"a":Infinity}', b"\xff"])
def test_what_json_does_not_have_is_invalid(raw: bytes) -> None:
    with pytest.raises(ValueError, match=r"."):
        loads_strict(raw)


def test_a_kit_manifest_naming_tenant_twice_is_refused(tmp_path: Path, home: Home) -> None:
    kit = Path(shutil.copytree(FIXTURES / "offline-kit", tmp_path / "kit"))
    (kit / SIGNATURE).unlink()
    raw = (kit / MANIFEST).read_bytes()
    (kit / MANIFEST).write_bytes(_twice(raw, "tenant", "evil"))
    with pytest.raises(RejectedError) as caught:
        parse_manifest((kit / MANIFEST).read_bytes())
    assert caught.value.reason == "duplicate_json_key"
    assert "'tenant' appears twice" in caught.value.message
    with pytest.raises(RejectedError) as caught:
        verify_kit(home, kit)
    assert caught.value.reason == "duplicate_json_key"


def test_a_replay_manifest_with_a_repeated_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    path.write_bytes(b'{"schemaVersion":"2.0","tenant":"acme","tenant":"evil"}')
    with pytest.raises(RejectedError) as caught:
        load_manifest(path)
    assert caught.value.reason == "duplicate_json_key"


def test_a_held_replay_manifest_with_a_repeated_key_stops_retention(home: Home) -> None:
    held = home.root / "replay" / "held"
    held.mkdir(parents=True)
    (held / "m.json").write_bytes(b'{"casUri":"cas://a","casUri":"cas://b"}')
    with pytest.raises(RejectedError) as caught:
        apply_retention(home, dry_run=False, now=_NOW)
    assert caught.value.reason == "duplicate_json_key"


def test_a_token_file_with_a_repeated_key_is_refused() -> None:
    entry = b'{"sha256":"%s","tenant":"acme","tenant":"*","scopes":["signals:write"]}' % (
        hash_token("t").encode()
    )
    with pytest.raises(TokenFileError) as caught:
        parse_token_file(b'{"tokens":[' + entry + b"]}")
    assert caught.value.reason == "duplicate_json_key"
    assert "'tenant' appears twice" in str(caught.value)


def test_a_callgraph_node_naming_its_id_twice_is_refused() -> None:
    doc = orjson.loads(GRAPH.read_bytes())
    raw = orjson.dumps(doc).replace(b'{"id":', b'{"id":"sym:shadow","id":', 1)
    with pytest.raises(CallgraphError) as caught:
        parse_callgraph(raw)
    assert caught.value.reason_code == "duplicate_json_key"


def test_staging_a_callgraph_with_a_repeated_key_is_refused(tmp_path: Path, home: Home) -> None:
    path = tmp_path / "g.json.gz"
    path.write_bytes(gzip.compress(_twice(GRAPH.read_bytes(), "callgraphId", "cg-evil")))
    with pytest.raises(RejectedError) as caught:
        stage_graph(home, path, "acme", _NOW)
    assert caught.value.reason == "duplicate_json_key"
    assert not list(home.cas.list("graphs"))


def test_graph_records_with_a_repeated_key_are_refused_or_recompiled(home: Home) -> None:
    staged = stage_graph(home, GRAPH, "acme", _NOW)
    assert current_graph_sha(home, "acme", staged.callgraph_id) == staged.sha256
    assert read_compiled_graph(home, staged.sha256) is not None
    meta = compiled_graph_dir(home, staged.sha256) / "graph.json"
    meta.write_bytes(_twice(meta.read_bytes(), "sha256", "0" * 64))
    assert read_compiled_graph(home, staged.sha256) is None  # a cache: rebuilt from CAS
    record = home.root / "registry" / "graphs" / "acme" / f"{staged.callgraph_id}.json"
    record.write_bytes(_twice(record.read_bytes(), "sha256", "0" * 64))
    with pytest.raises(RejectedError) as caught:
        current_graph_sha(home, "acme", staged.callgraph_id)
    assert caught.value.reason == "duplicate_json_key"
