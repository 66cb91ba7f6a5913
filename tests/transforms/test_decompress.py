"""Bounded decompression: concatenated members and every gzip failure mode."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import transforms.decompress as decompress
from runtime_facts.errors import BatchRejected
from transforms.decompress import gunzip_bounded, gunzip_scratch

BIG = 1 << 30
Gunzip = Callable[..., bytes]


def _scratch(data: bytes, **caps: int) -> bytes:
    with gunzip_scratch(data, **caps) as text:
        return bytes(text)


BOTH = pytest.mark.parametrize("gunzip", [gunzip_bounded, _scratch], ids=["bytes", "scratch"])


@BOTH
def test_concatenated_members_are_read_in_order(gunzip: Gunzip) -> None:
    data = gzip.compress(b'{"a":1}\n') + gzip.compress(b'{"b":2}\n')
    assert gunzip(data, max_output=BIG, max_ratio=100) == b'{"a":1}\n{"b":2}\n'


@BOTH
@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty_batch"),
        (gzip.compress(b""), "empty_batch"),
        (gzip.compress(b" \n\t\n"), "empty_batch"),
        (b"plain text\n", "invalid_gzip"),
        (gzip.compress(b'{"a":1}\n' * 100)[:-5], "truncated_gzip"),
        (gzip.compress(b'{"a":1}\n') + b"garbage", "trailing_garbage"),
        (gzip.compress(b'{"a":1}\n') + b"\0\0", "trailing_garbage"),
        (gzip.compress(b'{"a":1}\n') + b"\x1f\x8b", "truncated_gzip"),
    ],
    ids=["empty-file", "empty-stream", "blank-stream", "not-gzip", "truncated",
         "trailing-garbage", "zero-padding", "a-second-header-cut"],
)  # fmt: skip
def test_broken_streams_are_rejected(gunzip: Gunzip, data: bytes, reason: str) -> None:
    with pytest.raises(BatchRejected) as info:
        gunzip(data, max_output=BIG, max_ratio=100)
    assert info.value.reason == reason


@BOTH
def test_bad_crc_is_invalid_gzip(gunzip: Gunzip) -> None:
    data = bytearray(gzip.compress(b'{"symbolId":"a","hitCount":1}\n'))
    data[-8] ^= 0xFF  # CRC32 lives in the 8-byte trailer
    with pytest.raises(BatchRejected) as info:
        gunzip(bytes(data), max_output=BIG, max_ratio=100)
    assert info.value.reason == "invalid_gzip"


@BOTH
def test_bomb_stops_at_the_output_cap(gunzip: Gunzip) -> None:
    bomb = gzip.compress(b"\0" * (64 << 20))
    with pytest.raises(BatchRejected) as info:
        gunzip(bomb, max_output=8 << 20, max_ratio=10_000)
    assert info.value.reason == "decompressed_too_large"


@BOTH
def test_bomb_stops_at_the_ratio_cap(gunzip: Gunzip) -> None:
    bomb = gzip.compress(b"\0" * (64 << 20))
    with pytest.raises(BatchRejected) as info:
        gunzip(bomb, max_output=BIG, max_ratio=100)
    assert info.value.reason == "compression_ratio_exceeded"


def _outcome(gunzip: Gunzip, data: bytes, cap: int) -> bytes | str:
    try:
        return gunzip(data, max_output=cap, max_ratio=100)
    except BatchRejected as exc:
        return exc.reason


@settings(max_examples=150, deadline=None)
@given(
    members=st.lists(st.binary(max_size=300), min_size=1, max_size=4),
    level=st.integers(0, 9),
    tail=st.sampled_from([b"", b"x", b"\0", b"\x1f", b"\x1f\x8b"]),
    cut=st.integers(0, 12),
    cap=st.integers(1, 1500),
    piece=st.integers(1, 40),
    block=st.integers(1, 40),
)
def test_the_two_forms_agree_on_every_stream(
    members: list[bytes],
    level: int,
    tail: bytes,
    cut: int,
    cap: int,
    piece: int,
    block: int,
) -> None:
    """Tiny pieces and blocks put member ends, trailers and caps on every boundary."""
    stream = b"".join(gzip.compress(m, compresslevel=level, mtime=0) for m in members) + tail
    data = stream[: len(stream) - cut] if cut else stream
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(decompress, "_PIECE", piece)
        patch.setattr(decompress, "_BLOCK", block)
        bounded, scratch = _outcome(gunzip_bounded, data, cap), _outcome(_scratch, data, cap)
    assert _outcome(gunzip_bounded, data, cap) == bounded  # the sizes change nothing
    assert bounded == scratch
    if not tail and not cut and sum(map(len, members)) <= cap and isinstance(bounded, bytes):
        assert bounded == b"".join(members)
    if isinstance(bounded, bytes):  # what the standard library makes of it
        assert bounded == zlib.decompressobj(31).decompress(data) or len(members) > 1


def test_a_view_still_held_after_the_block_keeps_its_bytes() -> None:
    first = gzip.compress(b'{"symbolId":"a","hitCount":1}\n' * 50)
    with gunzip_scratch(first, max_output=BIG, max_ratio=100) as text:
        kept = np.frombuffer(text, dtype=np.uint8)  # an export past the block
    before = kept.tobytes()
    with gunzip_scratch(gzip.compress(b"x" * 5000), max_output=BIG, max_ratio=100) as other:
        assert bytes(other) == b"x" * 5000
    assert kept.tobytes() == before  # the held mapping was not reused


def test_the_scratch_is_reused_when_nothing_holds_it() -> None:
    data = gzip.compress(b'{"symbolId":"a","hitCount":1}\n' * 50)
    with gunzip_scratch(data, max_output=BIG, max_ratio=100) as text:
        address = np.frombuffer(text, dtype=np.uint8).ctypes.data
        del text
    with gunzip_scratch(data, max_output=BIG, max_ratio=100) as again:
        view = np.frombuffer(again, dtype=np.uint8)
        assert view.ctypes.data == address
        del view
