"""CAS store round trip: addressing, atomic no-overwrite puts, verification on read."""

from __future__ import annotations

import hashlib

import pytest

from runtime_facts.errors import NotFoundError, RejectedError
from runtime_facts.home import Home
from runtime_facts.pipeline.stage import verify_cas
from runtime_facts.subject import SubjectContext


def test_put_get_round_trip_addresses_by_sha256(home: Home, ctx: SubjectContext) -> None:
    data = b"\x1f\x8bpayload"
    result = home.cas.put("runtime", data, ctx)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert result.uri == f"cas://reachability/runtime/{result.sha256}"
    assert home.cas.get("runtime", result.sha256) == data
    assert home.cas.subject_context(result.sha256) == ctx


def test_second_put_of_the_same_bytes_is_a_no_op(home: Home, ctx: SubjectContext) -> None:
    first = home.cas.put("runtime", b"same", ctx)
    second = home.cas.put("runtime", b"same", ctx)
    assert first.created
    assert not second.created
    assert list(home.cas.list("runtime")) == [first.sha256]


def test_same_bytes_with_another_context_is_refused(home: Home, ctx: SubjectContext) -> None:
    home.cas.put("runtime", b"same", ctx)
    with pytest.raises(RejectedError) as info:
        home.cas.put("runtime", b"same", SubjectContext("other", "cg", scan_id="x"))
    assert info.value.reason == "context_conflict"


def test_a_missing_object_is_a_cas_miss(home: Home) -> None:
    with pytest.raises(NotFoundError) as info:
        home.cas.get("runtime", "0" * 64)
    assert info.value.reason == "cas_miss"


def test_a_flipped_byte_is_detected_on_read_and_by_verify(home: Home, ctx: SubjectContext) -> None:
    sha = home.cas.put("runtime", b"original bytes", ctx).sha256
    path = home.root / "cas" / "reachability" / "runtime" / sha
    path.write_bytes(b"Original bytes")
    with pytest.raises(RejectedError) as info:
        home.cas.get("runtime", sha)
    assert info.value.reason == "cas_digest_mismatch"
    report = verify_cas(home)
    assert report.bad == [("runtime", sha, "cas_digest_mismatch")]


def test_no_temp_files_are_left_behind(home: Home, ctx: SubjectContext) -> None:
    home.cas.put("runtime", b"x", ctx)
    folder = home.root / "cas" / "reachability" / "runtime"
    assert not [p for p in folder.iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.parametrize("bad", ["Acme", "a/b", "..", "a=b", "a%2f", "a\x00", ""])
def test_invalid_tenants_are_refused(bad: str) -> None:
    with pytest.raises(Exception, match="invalid tenant"):
        SubjectContext(bad, "cg", scan_id="s")


@pytest.mark.parametrize("bad", ["../x", "a/b", "a\x00b", "x=y", "%2e"])
def test_invalid_ids_are_refused(bad: str) -> None:
    with pytest.raises(Exception, match="invalid"):
        SubjectContext("acme", "cg", scan_id=bad)


def test_subject_key_precedence() -> None:
    both = SubjectContext("acme", "cg", image_digest="sha256:ab", scan_id="s")
    assert both.subject_key == "image:sha256:ab"
    assert SubjectContext("acme", "cg", scan_id="s").subject_key == "scan:s"
    comp = SubjectContext("acme", "cg", component="pkg/core", version="1.0")
    assert comp.subject_key == "component:pkg/core@1.0"


def test_a_subject_is_required() -> None:
    with pytest.raises(Exception, match="subject is required"):
        SubjectContext("acme", "cg")
