"""Subject contexts (SPEC §2): one id rule at every entry, and keys that never collide."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from runtime_facts.cli.main import app
from runtime_facts.errors import RejectedError, UsageError
from runtime_facts.stores.offline_kit import parse_manifest
from runtime_facts.subject import SubjectContext, id_problem, parse_subject_key

runner = CliRunner()
_NOW = datetime(2026, 1, 2, tzinfo=UTC)

# A small alphabet, so that two draws are often near each other: separators, dots, inner
# spaces, a composed letter and a Cyrillic lookalike of `a` (confusables are distinct ids).
_ALPHABET = ["a", "b", "@", ":", "/", ".", "-", " ", "\u00e9", "\u0430"]


def _ids(name: str) -> st.SearchStrategy[str]:
    return (
        st.lists(st.sampled_from(_ALPHABET), min_size=1, max_size=5)
        .map("".join)
        .filter(lambda value: id_problem(name, value, allow_slash=name == "component") is None)
    )


@st.composite
def contexts(draw: st.DrawFn, kind: str) -> SubjectContext:
    """A valid context naming its subject one way (image, scan or component+version)."""
    names = {"image": ["imageDigest"], "scan": ["scanId"], "component": ["component", "version"]}
    values = {name: draw(_ids(name)) for name in names[kind]}
    return SubjectContext.from_json({"tenant": "acme", "callgraphId": "cg", "subject": values})


@pytest.mark.parametrize("kind", ["image", "scan", "component"])
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(data=st.data())
def test_distinct_contexts_give_distinct_keys(kind: str, data: st.DataObject) -> None:
    first, second = data.draw(contexts(kind)), data.draw(contexts(kind))
    assert (first.subject() == second.subject()) == (first.subject_key == second.subject_key)
    assert parse_subject_key(first.subject_key) == first.subject()


def test_the_component_version_split_cannot_be_moved() -> None:
    ctx = SubjectContext("acme", "cg", component="a@b", version="c")
    assert ctx.subject_key == "component:a@b@c"
    assert parse_subject_key(ctx.subject_key) == {"component": "a@b", "version": "c"}
    with pytest.raises(UsageError) as caught:
        SubjectContext("acme", "cg", component="a", version="b@c")
    assert caught.value.reason == "invalid_context"
    assert "version holds '@'" in caught.value.message


def test_keys_of_different_kinds_never_meet() -> None:
    keys = {
        SubjectContext("acme", "cg", image_digest="x").subject_key,
        SubjectContext("acme", "cg", scan_id="x").subject_key,
        SubjectContext("acme", "cg", component="x", version="x").subject_key,
    }
    assert len(keys) == 3


@pytest.mark.parametrize("key", ["scan", "scan:", "component:a", "component:@b", "x:y", ""])
def test_a_malformed_subject_key_is_refused(key: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_subject_key(key)
    assert caught.value.reason == "invalid_context"


_BAD_IDS = [
    (".", "is or holds '..' or is '.'"),
    ("..", "is or holds '..' or is '.'"),
    ("a..b", "is or holds '..' or is '.'"),
    ("", "is empty"),
    ("   ", "is empty"),
    (" s-1", "has leading or trailing whitespace"),
    ("s-1\u3000", "has leading or trailing whitespace"),
    ("s\u202e1", "holds a control or invisible character (U+202E)"),
    ("s\u200b1", "holds a control or invisible character (U+200B)"),
    ("s\u20661", "holds a control or invisible character (U+2066)"),
    ("s\x001", "holds a control or invisible character (U+0000)"),
    ("s\x7f", "holds a control or invisible character (U+007F)"),
    ("cafe\u0301", "is not in Unicode NFC (composed) form"),
    ("a/b", "holds '/'"),
    ("a\\b", "holds '\\\\'"),
    ("a%2e", "holds '%'"),
    ("k=v", "holds '='"),
    ("x" * 257, "is longer than 256 characters"),
]


_BAD_CASES = [
    (field, value, problem)
    for field in ("callgraphId", "imageDigest", "scanId", "component", "version")
    for value, problem in _BAD_IDS
    if not (field == "component" and value == "a/b")  # pkg:npm/left-pad: '/' separates segments
]


@pytest.mark.parametrize(
    ("field", "value", "problem"), _BAD_CASES, ids=[f"{f}-{v!r:.20}" for f, v, _ in _BAD_CASES]
)
def test_every_id_refuses_path_like_and_invisible_values(
    field: str, value: str, problem: str
) -> None:
    subject = {"imageDigest": "sha256:ab"} if field in ("callgraphId", "imageDigest") else {}
    doc: dict[str, object] = {"tenant": "acme", "callgraphId": "cg", "subject": subject}
    if field == "callgraphId":
        doc["callgraphId"] = value
    elif field in ("component", "version"):
        subject.update({"component": "pkg", "version": "1.0", field: value})
    else:
        subject[field] = value
    with pytest.raises(UsageError) as caught:
        SubjectContext.from_json(doc)
    assert caught.value.reason == "invalid_context"
    assert f"{field} {problem}" in caught.value.message


@pytest.mark.parametrize("component", ["a//b", "/a", "a/", "a/./b"])
def test_component_segments_are_never_empty_or_dot(component: str) -> None:
    with pytest.raises(UsageError, match=r"empty or '\.' segment"):
        SubjectContext("acme", "cg", component=component, version="1")


@pytest.mark.parametrize(
    "ctx",
    [
        {"scan_id": "scan 42"},  # inner whitespace is part of the id
        {"scan_id": "café"},
        {"image_digest": "sha256:" + "ab" * 32},
        {"component": "pkg:npm/left-pad", "version": "1.3.0"},
        {"component": "@scope/pkg", "version": "2.0.0-rc.1+build.5"},
    ],
)
def test_ordinary_ids_are_accepted(ctx: dict[str, str]) -> None:
    assert SubjectContext("acme", "cg-1", **ctx).subject_key


def test_cas_put_refuses_a_dot_scan_id_with_exit_2(tmp_path: Path) -> None:
    batch = tmp_path / "b.ndjson.gz"
    batch.write_bytes(gzip.compress(b'{"symbolId":"a","hitCount":1}\n', mtime=0))
    home = str(tmp_path / "h")
    put = ["cas", "put", str(batch), "--tenant", "acme", "--callgraph-id", "cg", "--scan-id"]
    result = runner.invoke(app, ["--home", home, "--json", *put, "."])
    assert result.exit_code == 2
    assert json.loads(result.stdout)["error"] == "invalid_context"
    assert not [p for p in tmp_path.joinpath("h").rglob("*") if p.is_file()]


def test_a_kit_manifest_with_an_invisible_scan_id_is_refused() -> None:
    manifest = {
        "schemaVersion": 1,
        "kind": "reachability-runtime",
        "tenant": "acme",
        "createdAt": "2026-01-01T00:00:00Z",
        "files": [
            {
                "path": "reachability/runtime/s1/2026.ndjson.gz",
                "sha256": "0" * 64,
                "size": 1,
                "callgraphId": "cg",
                "subject": {"scanId": "s\u200b1"},
            }
        ],
    }
    with pytest.raises(RejectedError) as caught:
        parse_manifest(json.dumps(manifest).encode())
    assert caught.value.reason == "kit_manifest_invalid"
    assert "U+200B" in caught.value.message


_SCAN_IDS = st.lists(
    st.sampled_from(["s", "1", ".", "-", "_", " ", "/", "\\", "@", ":", "\u00e9", "\u202e", "%"]),
    min_size=1,
    max_size=4,
).map("".join)


@settings(max_examples=40, deadline=None)
@given(scan_id=_SCAN_IDS)
def test_offline_export_never_leaves_a_broken_kit_because_of_an_id(
    tmp_path_factory: pytest.TempPathFactory, scan_id: str
) -> None:
    """Every scan id is either refused before a file is written or exported as a valid kit."""
    from runtime_facts.config import Settings
    from runtime_facts.home import Home
    from runtime_facts.ops.offline import export_kit, verify_kit

    root = tmp_path_factory.mktemp("export")
    home = Home(Settings.load(str(root / "h")))
    data = gzip.compress(b'{"symbolId":"a","hitCount":1,"observedAt":"2026-01-01T00:00:00Z"}\n')
    out = root / "kit"
    if id_problem("scanId", scan_id) is not None:
        with pytest.raises(UsageError) as caught:
            export_kit(home, tenant="acme", scan_id=scan_id, out=out, now=_NOW)
        assert caught.value.reason == "invalid_context"
        assert not out.exists()
        return
    ctx = SubjectContext("acme", "cg", scan_id=scan_id)
    home.cas.put("runtime", data, ctx)
    export_kit(home, tenant="acme", scan_id=scan_id, out=out, now=_NOW)
    report = verify_kit(home, out)
    assert [f.context.scan_id if f.context else None for f in report.files] == [scan_id]
