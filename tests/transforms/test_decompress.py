"""Bounded decompression: concatenated members and every gzip failure mode."""

from __future__ import annotations

import gzip

import pytest

from runtime_facts.errors import BatchRejected
from transforms.decompress import gunzip_bounded

BIG = 1 << 30


def test_concatenated_members_are_read_in_order() -> None:
    data = gzip.compress(b'{"a":1}\n') + gzip.compress(b'{"b":2}\n')
    assert gunzip_bounded(data, max_output=BIG, max_ratio=100) == b'{"a":1}\n{"b":2}\n'


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty_batch"),
        (gzip.compress(b""), "empty_batch"),
        (b"plain text\n", "invalid_gzip"),
        (gzip.compress(b'{"a":1}\n' * 100)[:-5], "truncated_gzip"),
        (gzip.compress(b'{"a":1}\n') + b"garbage", "trailing_garbage"),
    ],
    ids=["empty-file", "empty-stream", "not-gzip", "truncated", "trailing-garbage"],
)
def test_broken_streams_are_rejected(data: bytes, reason: str) -> None:
    with pytest.raises(BatchRejected) as info:
        gunzip_bounded(data, max_output=BIG, max_ratio=100)
    assert info.value.reason == reason


def test_bad_crc_is_invalid_gzip() -> None:
    data = bytearray(gzip.compress(b'{"symbolId":"a","hitCount":1}\n'))
    data[-8] ^= 0xFF  # CRC32 lives in the 8-byte trailer
    with pytest.raises(BatchRejected) as info:
        gunzip_bounded(bytes(data), max_output=BIG, max_ratio=100)
    assert info.value.reason == "invalid_gzip"


def test_bomb_stops_at_the_output_cap() -> None:
    bomb = gzip.compress(b"\0" * (64 << 20))
    with pytest.raises(BatchRejected) as info:
        gunzip_bounded(bomb, max_output=8 << 20, max_ratio=10_000)
    assert info.value.reason == "decompressed_too_large"


def test_bomb_stops_at_the_ratio_cap() -> None:
    bomb = gzip.compress(b"\0" * (64 << 20))
    with pytest.raises(BatchRejected) as info:
        gunzip_bounded(bomb, max_output=BIG, max_ratio=100)
    assert info.value.reason == "compression_ratio_exceeded"
