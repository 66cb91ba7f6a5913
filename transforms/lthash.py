"""An order-independent digest of a set of rows that can be updated row by row (LtHash16).

Each row is rendered in the canonical form of `transforms.canonical` (one JSON object with
sorted keys, no whitespace, timestamps ISO-8601 UTC with `Z`, floats shortest round-trip),
without the trailing newline. The row's line is expanded by BLAKE3 in key-derivation mode
(context `CONTEXT`) to 2,048 bytes, read as 1,024 little-endian 16-bit lanes. The state of a
set of rows is the lane-wise sum of its rows' lanes modulo 2^16: 2 KiB, the same whatever the
order the rows were added in, and a row is taken out by subtracting its lanes. The published
digest is `lthash16:` and the SHA-256 of the state's bytes.

This is the LtHash construction of Bellare and Micciancio as used by Facebook's
`folly::LtHash` (Lewi, Kim, Maykov, Weis, "Securing Update Propagation with Homomorphic
Hashing", 2019: 1,024 lanes of 16 bits give about 200 bits of security against collisions).
A multiset hash: the same row twice counts twice. The rows of a subject's states are a set
(one row per symbol), so a digest kept up to date by adding the new rows and taking out the
old ones equals the digest computed from scratch over the same rows.
"""

from __future__ import annotations

import base64
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor

import blake3
import numpy as np
import polars as pl

from transforms import kernel
from transforms.canonical import canonical_line_buffers, canonical_lines

LANES = 1024
STATE_BYTES = 2 * LANES
CONTEXT = "runtime-facts 2026-12-01 row lthash16 v1"
PREFIX = "lthash16:"


_HASHER = blake3.blake3(derive_key_context=CONTEXT)


def _expand(line: bytes) -> bytes:
    """`blake3(line, derive_key_context=CONTEXT).digest(2048)`, from a copy of a hasher with
    the context already derived (the same bytes, a third faster)."""
    hasher = _HASHER.copy()
    hasher.update(line)
    out: bytes = hasher.digest(STATE_BYTES)
    return out


def empty() -> np.ndarray:
    """The state of no rows."""
    return np.zeros(LANES, dtype=np.uint16)


def row_lanes(frame: pl.DataFrame, *, exclude: tuple[str, ...] = ()) -> np.ndarray:
    """One row of lanes per row of the frame (columns in `exclude` left out)."""
    lines = canonical_lines(frame, exclude=exclude)
    expanded = b"".join(_expand(line) for line in lines)
    return np.frombuffer(expanded, dtype="<u2").reshape(len(lines), LANES)


_BLOCK = 1024  # rows expanded at a time: 2 MiB, so a large frame never holds its lanes at once


def _block_sum(lines: list[bytes]) -> np.ndarray:
    expanded = np.frombuffer(b"".join(_expand(line) for line in lines), dtype="<u2")
    total: np.ndarray = expanded.reshape(len(lines), LANES).sum(axis=0, dtype=np.uint64)
    return total


_NATIVE_BLOCK = 16384  # rows per call of the native loop: enough to keep both threads busy


def _total(frame: pl.DataFrame, exclude: tuple[str, ...]) -> np.ndarray:
    """The lane-wise sum of the frame's rows modulo 2^16: by the native loop
    (`transforms/kernel/lthash.c`) where it is built, else in Python."""
    if kernel.lthash_available():
        return _total_native(frame, exclude)
    return _total_python(frame, exclude)


def _total_native(frame: pl.DataFrame, exclude: tuple[str, ...]) -> np.ndarray:
    """Blocks of lines straight from Arrow's buffers; the library releases the GIL, so large
    frames use two threads (the sum does not depend on the order)."""
    context = CONTEXT.encode()
    parts = [
        (data, offsets[start : min(start + _NATIVE_BLOCK, offsets.size - 1) + 1])
        for offsets, data in canonical_line_buffers(frame, exclude=exclude)
        for start in range(0, offsets.size - 1, _NATIVE_BLOCK)
    ]
    if len(parts) > 1:
        with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
            sums = list(pool.map(lambda part: kernel.lthash16_add(context, *part), parts))
    else:
        sums = [kernel.lthash16_add(context, *part) for part in parts]
    total = np.zeros(LANES, dtype=np.uint16)
    for part in sums:
        total += part  # uint16 arithmetic wraps: modulo 2^16
    return total


def _total_python(frame: pl.DataFrame, exclude: tuple[str, ...]) -> np.ndarray:
    """The same sum with the `blake3` package, a block of lines at a time. BLAKE3 releases
    the GIL while it hashes, so large frames use two threads."""
    lines = canonical_lines(frame, exclude=exclude)
    blocks = [lines[i : i + _BLOCK] for i in range(0, len(lines), _BLOCK)]
    if len(blocks) > 1:
        with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
            sums = list(pool.map(_block_sum, blocks))
    else:
        sums = [_block_sum(b) for b in blocks]
    # uint64 sums cannot overflow below 2^48 rows; the state keeps the low 16 bits.
    total = np.zeros(LANES, dtype=np.uint64)
    for part in sums:
        total += part
    out: np.ndarray = total.astype(np.uint16)
    return out


def of(frame: pl.DataFrame, *, exclude: tuple[str, ...] = ()) -> np.ndarray:
    """The state of a frame's rows, from scratch."""
    return _total(frame, exclude)


def update(
    state: np.ndarray,
    *,
    added: pl.DataFrame | None = None,
    removed: pl.DataFrame | None = None,
    exclude: tuple[str, ...] = (),
) -> np.ndarray:
    """`state` with the rows of `added` put in and those of `removed` taken out."""
    out = state.astype(np.uint16, copy=True)
    if added is not None and added.height:
        out += _total(added, exclude)
    if removed is not None and removed.height:
        out -= _total(removed, exclude)
    return out


def digest(state: np.ndarray) -> str:
    """`lthash16:<sha256 hex of the state's 2,048 little-endian bytes>`."""
    return PREFIX + hashlib.sha256(state.astype("<u2").tobytes()).hexdigest()


def encode(state: np.ndarray) -> str:
    """The state as base64 text (to store it)."""
    return base64.b64encode(state.astype("<u2").tobytes()).decode()


def decode(text: str) -> np.ndarray:
    """A state stored by `encode`.

    Raises:
        ValueError: the text is not a 2,048-byte base64 state.
    """
    raw = base64.b64decode(text, validate=True)
    if len(raw) != STATE_BYTES:
        raise ValueError(f"an lthash16 state is {STATE_BYTES} bytes, not {len(raw)}")
    return np.frombuffer(raw, dtype="<u2").astype(np.uint16)
