"""Bounded gzip decompression: concatenated members, bomb caps, precise failure codes."""

from __future__ import annotations

from isal import isal_zlib

from transforms.errors import Reason, TransformError

_GZIP_MAGIC = b"\x1f\x8b"
_RATIO_FLOOR = 16 * 1024 * 1024


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
    if not data:
        raise TransformError(Reason.EMPTY_BATCH, "the batch file is empty")
    if not data.startswith(_GZIP_MAGIC):
        raise TransformError(Reason.INVALID_GZIP, "not a gzip stream (bad magic bytes)")
    ratio_cap = max(_RATIO_FLOOR, len(data) * max_ratio)
    parts: list[bytes] = []
    total = 0
    rest = data
    while rest:
        inflater = isal_zlib.decompressobj(31)
        pending = rest
        while True:
            room = min(max_output, ratio_cap) - total + 1
            try:
                # One call up to the cap: a batch comes out as one bytes object, no join copy.
                chunk = inflater.decompress(pending, room)
            except (isal_zlib.error, ValueError) as exc:  # type: ignore[misc]
                raise TransformError(Reason.INVALID_GZIP, f"corrupt gzip data: {exc}") from exc
            parts.append(chunk)
            total += len(chunk)
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
            if inflater.eof:
                break
            pending = inflater.unconsumed_tail
            if not pending and not chunk:
                raise TransformError(Reason.TRUNCATED_GZIP, "gzip stream ends before its trailer")
        rest = inflater.unused_data
        if rest and not rest.startswith(_GZIP_MAGIC):
            raise TransformError(
                Reason.TRAILING_GARBAGE, f"{len(rest)} bytes of non-gzip data after the last member"
            )
    out = parts[0] if len(parts) == 1 else b"".join(parts)
    if not out or out.isspace():
        raise TransformError(Reason.EMPTY_BATCH, "the batch decompresses to no events")
    return out
