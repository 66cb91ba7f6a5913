"""Bounded gzip decompression: concatenated members, bomb caps, precise failure codes."""

from __future__ import annotations

import mmap
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from isal import isal_zlib

from transforms.errors import Reason, TransformError

_GZIP_MAGIC = b"\x1f\x8b"
_RATIO_FLOOR = 16 * 1024 * 1024
_PIECE = 16 * 1024
"""Compressed bytes fed at a time: what a call leaves unconsumed is copied, so keep it small."""
_BLOCK = 32 * 1024
"""Decompressed bytes asked for at a time: isal's first output block, so a call returns it as
it is (a larger ask comes back as blocks joined by a copy)."""


def gunzip_bounded(data: bytes, *, max_output: int, max_ratio: int) -> bytes:
    """Decompress every gzip member of `data`, stopping at the caps.

    Args:
        data: the compressed batch bytes.
        max_output: decompressed bytes allowed in total.
        max_ratio: decompressed/compressed ratio allowed once past 16 MiB.

    Returns:
        The decompressed bytes.

    Raises:
        TransformError: empty_batch, invalid_gzip, truncated_gzip, trailing_garbage,
            decompressed_too_large or compression_ratio_exceeded.
    """
    return b"".join(_blocks(data, max_output=max_output, max_ratio=max_ratio))


_KEEP = 64 * 1024 * 1024
"""A thread keeps its scratch area for the next batch while a batch used at most this much."""
_SCRATCH = threading.local()


@contextmanager
def gunzip_scratch(data: bytes, *, max_output: int, max_ratio: int) -> Iterator[memoryview]:
    """`gunzip_bounded` into the calling thread's scratch memory, valid inside the block only.

    A batch is decompressed, read once and dropped, batch after batch on the same threads:
    writing each into fresh memory costs a page fault per 4 KiB and a copy of the whole
    output (isal's blocks joined into one bytes object). Here the blocks are written into an
    anonymous mapping the thread keeps and reuses. The view is released when the block ends;
    if anything still holds a buffer of the mapping then (a slice, an array over it), the
    mapping is never reused, so nothing can see a later batch's bytes in place of its own.

    Raises:
        TransformError: as `gunzip_bounded`, in the same cases.
    """
    limit = _limit(data, max_output, max_ratio)
    area: mmap.mmap | None = getattr(_SCRATCH, "area", None)
    _SCRATCH.area = None  # taken: a nested call maps its own
    if area is None or len(area) < limit + 1:
        try:
            # Address space for the output cap (every later batch fits, whatever its ratio
            # cap): only the pages written are ever backed.
            area = mmap.mmap(-1, max(limit, min(max_output, 1 << 30)) + 1)
        except (OSError, OverflowError, ValueError):  # no room to map it: bytes, as always
            yield memoryview(gunzip_bounded(data, max_output=max_output, max_ratio=max_ratio))
            return
    area.seek(0)
    for block in _blocks(data, max_output=max_output, max_ratio=max_ratio):
        area.write(block)
    whole = memoryview(area)
    view = whole[: area.tell()]
    try:
        yield view
    finally:
        try:
            view.release()
            whole.release()
            # A mapping refuses to resize while any buffer of it is exported (views of the
            # view included): resizing to its own size proves nothing holds it.
            area.resize(len(area))
        except (BufferError, OSError, SystemError, ValueError):
            pass  # still held, or no proof: leave the mapping to whoever holds it
        else:
            if area.tell() <= _KEEP:
                _SCRATCH.area = area


def _limit(data: bytes, max_output: int, max_ratio: int) -> int:
    return min(max_output, max(_RATIO_FLOOR, len(data) * max_ratio))


def _blocks(data: bytes, *, max_output: int, max_ratio: int) -> Iterator[bytes]:
    """The decompressed bytes of every member, in blocks of at most `_BLOCK`; every check of
    `gunzip_bounded` is made before the block that fails it is handed out."""
    if not data:
        raise TransformError(Reason.EMPTY_BATCH, "the batch file is empty")
    if not data.startswith(_GZIP_MAGIC):
        raise TransformError(Reason.INVALID_GZIP, "not a gzip stream (bad magic bytes)")
    ratio_cap = max(_RATIO_FLOOR, len(data) * max_ratio)
    limit = _limit(data, max_output, max_ratio)
    view = memoryview(data)
    total = 0
    content = False  # a byte other than whitespace seen
    at = 0  # where the member being read starts, then how far its input was fed
    while at < len(data):
        inflater = isal_zlib.decompressobj(31)
        while not inflater.eof:
            if at >= len(data):
                raise TransformError(Reason.TRUNCATED_GZIP, "gzip stream ends before its trailer")
            pending: bytes | memoryview = view[at : at + _PIECE]
            at += len(pending)
            while True:
                room = min(_BLOCK, limit - total + 1)
                try:
                    block = inflater.decompress(pending, room)
                except (isal_zlib.error, ValueError) as exc:  # type: ignore[misc]
                    raise TransformError(Reason.INVALID_GZIP, f"corrupt gzip data: {exc}") from exc
                total += len(block)
                if total > max_output:
                    raise TransformError(
                        Reason.DECOMPRESSED_TOO_LARGE,
                        f"decompressed size passes the cap of {max_output} bytes",
                    )
                if total > ratio_cap:
                    raise TransformError(
                        Reason.COMPRESSION_RATIO_EXCEEDED,
                        f"expands more than {max_ratio}x ({len(data)} compressed bytes)",
                    )
                if block:
                    content = content or not block.isspace()
                    yield block
                if inflater.eof:
                    break
                pending = inflater.unconsumed_tail
                if not pending and not block:
                    break  # this piece is used up: the next one
        at -= len(inflater.unused_data)  # read past the member's trailer, in the last piece
        if at < len(data) and not data.startswith(_GZIP_MAGIC, at):
            raise TransformError(
                Reason.TRAILING_GARBAGE,
                f"{len(data) - at} bytes of non-gzip data after the last member",
            )
    if not content:
        raise TransformError(Reason.EMPTY_BATCH, "the batch decompresses to no events")
