"""A native kernel for the canonical form of a batch: validate every line in one pass, dedupe.

Probes write one form of the JSON (`transforms/kernel/events.c` says which): for a batch in
that form with every line valid, the kernel fills the event columns directly, several times
faster than the exact validator (`transforms.validate`). For anything else it declines and the
exact validator decides, so the kernel can make a batch faster but never change its outcome:
`tests/transforms/test_kernel.py` compares the two on generated and mutated batches. The rows
it filled are deduped natively too (`dedupe.c`), against `transforms.dedupe.dedupe_events`
as the reference in the same tests; where that declines, the reference runs.

The shared library is built from source by `make setup` (`python -m transforms.kernel.build`);
where it is absent (a wheel installed without a compiler) every batch takes the exact path.
`RUNTIME_FACTS_KERNEL=off` turns it off.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from transforms.schema import BATCH_ROW_SCHEMA, REJECTION_SCHEMA

LIBRARY = Path(__file__).with_name("_events.so")
LTHASH_LIBRARY = Path(__file__).with_name("_lthash.so")
LTHASH_LANES = 1024
_FALLBACK = -1  # events.h's RF_FALLBACK; RF_DEDUPE_DECLINED and RF_DEDUPE_OVERFLOW are below
MIN_LINE_BYTES = len(b'{"symbolId":"s","hitCount":1}\n')
_UTC_US = pa.timestamp("us", "UTC")
_COLUMNS = ("symbol_id", "code_id", "loader_base", "process_name", "container_id", "evidence_uri")
# Why the kernel declined (events.c's FB_* codes), for statistics and the fuzz's coverage.
FALLBACK_CODES = (
    "none", "empty", "too_many_rows", "line_too_long", "syntax", "key", "duplicate_key",
    "string", "number", "symbol", "hit_count", "code_id", "loader_base", "timestamp", "order",
    "process", "metadata", "capacity", "alias",
)  # fmt: skip


class _StrCol(ctypes.Structure):
    _fields_ = [
        ("offsets", ctypes.c_void_p),
        ("data", ctypes.c_void_p),
        ("valid", ctypes.c_void_p),
        ("data_cap", ctypes.c_int64),
    ]


class _Out(ctypes.Structure):
    _fields_ = [
        ("str", _StrCol * len(_COLUMNS)),
        ("hit_count", ctypes.c_void_p),
        ("observed_at", ctypes.c_void_p),
        ("observed_valid", ctypes.c_void_p),
        ("row_cap", ctypes.c_int64),
        ("fallback_code", ctypes.c_int32),
        ("fallback_line", ctypes.c_int64),
    ]


class _ListCol(ctypes.Structure):
    _fields_ = [
        ("list_offsets", ctypes.c_void_p),
        ("offsets", ctypes.c_void_p),
        ("data", ctypes.c_void_p),
        ("entry_cap", ctypes.c_int64),
        ("data_cap", ctypes.c_int64),
    ]


class _Groups(ctypes.Structure):
    _fields_ = [
        ("key", _StrCol * 3),
        ("hit_count", ctypes.c_void_p),
        ("event_count", ctypes.c_void_p),
        ("first_observed", ctypes.c_void_p),
        ("last_observed", ctypes.c_void_p),
        ("observed_valid", ctypes.c_void_p),
        ("row_cap", ctypes.c_int64),
        ("list", _ListCol * 3),
    ]


class _Sizes(ctypes.Structure):
    _fields_ = [
        ("lines", ctypes.c_int64),
        ("groups", ctypes.c_int64),
        ("key_bytes", ctypes.c_int64 * 3),
        ("entries", ctypes.c_int64 * 3),
        ("list_bytes", ctypes.c_int64 * 3),
        ("fallback_code", ctypes.c_int32),
        ("fallback_line", ctypes.c_int64),
    ]


@dataclass(frozen=True)
class Declined:
    """The kernel did not vouch for the batch: why, and at which line (1-based)."""

    reason: str
    line: int


def _switched_off() -> bool:
    return os.environ.get("RUNTIME_FACTS_KERNEL", "on").lower() in {"off", "0", "false", "no"}


@cache
def _library() -> ctypes.CDLL | None:
    if _switched_off() or not LIBRARY.exists():
        return None
    lib = ctypes.CDLL(str(LIBRARY))  # ctypes releases the GIL during the call
    lib.rf_validate_events.restype = ctypes.c_int64
    lib.rf_validate_events.argtypes = [
        ctypes.c_char_p,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.POINTER(_Out),
    ]
    lib.rf_grouper_new.restype = ctypes.c_void_p
    lib.rf_grouper_new.argtypes = []
    lib.rf_grouper_free.restype = None
    lib.rf_grouper_free.argtypes = [ctypes.c_void_p]
    lib.rf_validate_grouped.restype = ctypes.c_int64
    lib.rf_validate_grouped.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_uint64,
        ctypes.POINTER(_Sizes),
    ]
    lib.rf_grouper_write.restype = ctypes.c_int64
    lib.rf_grouper_write.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Groups)]
    return lib


def available() -> bool:
    """Whether the kernel is built and switched on."""
    return _library() is not None


@cache
def _lthash_library() -> ctypes.CDLL | None:
    if _switched_off() or not LTHASH_LIBRARY.exists():
        return None
    lib = ctypes.CDLL(str(LTHASH_LIBRARY))  # released GIL: threads add blocks side by side
    lib.rf_lthash16_add.restype = ctypes.c_int64
    lib.rf_lthash16_add.argtypes = [
        ctypes.c_char_p,
        ctypes.c_void_p,
        ctypes.c_int64,
        ctypes.c_void_p,
        ctypes.c_int64,
        ctypes.c_void_p,
    ]
    return lib


def lthash_available() -> bool:
    """Whether the LtHash library (`lthash.c`) is built and switched on."""
    return _lthash_library() is not None


def lthash16_add(context: bytes, data: pa.Buffer, offsets: np.ndarray) -> np.ndarray:
    """The lane-wise sum (uint16, modulo 2^16) of the expanded lines data[offsets[i]:offsets[i+1]].

    Raises:
        RuntimeError: the library is not available (check `lthash_available()` first).
        ValueError: the offsets do not fit the data.
    """
    lib = _lthash_library()
    if lib is None:
        raise RuntimeError("the LtHash library is not built or is switched off")
    bounds = np.ascontiguousarray(offsets, dtype=np.int64)
    if bounds.size == 0:
        raise ValueError("offsets need at least one entry")
    state = np.zeros(LTHASH_LANES, dtype=np.uint16)
    rows = bounds.size - 1
    if lib.rf_lthash16_add(context, data.address, data.size, bounds.ctypes.data, rows,
                           state.ctypes.data) != 0:  # fmt: skip
        raise ValueError("line offsets out of order or past the data")
    return state


@dataclass(frozen=True)
class Grouped:
    """A batch the kernel read and deduped: its keys as `transforms.dedupe.dedupe_events`
    gives them, or None where the native dedupe declined (a key's hits past 2^63-1, keys made
    to collide in its hash table; the reference decides those), and its line count."""

    keys: pl.DataFrame | None
    lines: int


class _Grouper:
    """A thread's native grouper: its memory is kept from batch to batch (not allocated and
    freed again for each), and freed with the thread."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib
        self.handle = lib.rf_grouper_new()
        if not self.handle:
            raise MemoryError("the native grouper could not allocate")

    def __del__(self) -> None:
        if getattr(self, "handle", None):
            self.lib.rf_grouper_free(self.handle)


_THREAD = threading.local()


def _grouper(lib: ctypes.CDLL) -> _Grouper:
    grouper: _Grouper | None = getattr(_THREAD, "grouper", None)
    if grouper is None:
        grouper = _THREAD.grouper = _Grouper(lib)
    return grouper


def read_grouped(
    text: bytes | memoryview, max_line_bytes: int, seed: int | None = None
) -> Grouped | Declined:
    """Validate the batch as `validate_canonical` does and dedupe its lines in the same pass.

    Args:
        text: the decompressed NDJSON bytes (or a writable view of them: nothing of the
            result points into them).
        max_line_bytes: the line cap.
        seed: the hash tables' seed (random by default); the keys do not depend on it.

    Raises:
        RuntimeError: the kernel is not available (check `available()` first).
    """
    lib = _library()
    if lib is None:
        raise RuntimeError("the native kernel is not built or is switched off")
    grouper = _grouper(lib).handle
    sizes = _Sizes()
    if seed is None:
        seed = secrets.randbits(64)
    count = int(lib.rf_validate_grouped(grouper, _chars(text), len(text), max_line_bytes, seed,
                                        ctypes.byref(sizes)))  # fmt: skip
    if count == _FALLBACK:
        return _declined(sizes.fallback_code, sizes.fallback_line)
    if count < 0:
        return Grouped(None, int(sizes.lines))
    out = _Groups()
    keys = [_StringBuffers(count, int(sizes.key_bytes[k]), nullable=True) for k in range(3)]
    for k, column in enumerate(keys):
        out.key[k] = column.struct()
    sums = [np.empty(count, dtype=np.int64) for _ in range(4)]
    observed_valid = np.empty(count, dtype=np.uint8)
    out.hit_count, out.event_count, out.first_observed, out.last_observed = (
        int(a.ctypes.data) for a in sums
    )
    out.observed_valid = observed_valid.ctypes.data
    out.row_cap = count
    list_offsets = [np.empty(count + 1, dtype=np.int64) for _ in range(3)]
    values = [_StringBuffers(int(sizes.entries[i]), int(sizes.list_bytes[i])) for i in range(3)]
    for i in range(3):
        out.list[i] = _ListCol(
            list_offsets[i].ctypes.data, values[i].offsets.ctypes.data, values[i].data.ctypes.data,
            values[i].rows, values[i].data.size,
        )  # fmt: skip
    if lib.rf_grouper_write(grouper, ctypes.byref(out)) != count:
        raise RuntimeError("the native grouper's sizes do not fit its rows")  # a defect
    table = {
        name: keys[k].array() for k, name in enumerate(("symbol_id", "code_id", "loader_base"))
    }
    table["hit_count"] = _plain(pa.int64(), count, sums[0])
    table["event_count"] = _plain(pa.int64(), count, sums[1])
    table["first_observed_at"] = _nullable(_UTC_US, count, sums[2], observed_valid)
    table["last_observed_at"] = _nullable(_UTC_US, count, sums[3], observed_valid)
    for i, name in enumerate(("process_names", "container_ids", "evidence_uris")):
        table[name] = pa.LargeListArray.from_arrays(
            _plain(pa.int64(), count + 1, list_offsets[i]), values[i].array()
        )
    frame = pl.from_arrow(pa.table(table))
    assert isinstance(frame, pl.DataFrame)
    return Grouped(frame.cast({name: BATCH_ROW_SCHEMA[name] for name in frame.columns}),
                   int(sizes.lines))  # fmt: skip


def _chars(text: bytes | memoryview) -> bytes | ctypes.Array[ctypes.c_char]:
    """What a `c_char_p` parameter takes: the bytes, or a char array over a view's memory
    (the caller drops it with the call, so it holds no export past it)."""
    if isinstance(text, bytes):
        return text
    if text.readonly:
        return bytes(text)
    return (ctypes.c_char * len(text)).from_buffer(text)


def _declined(code: int, line: int) -> Declined:
    reason = FALLBACK_CODES[code] if 0 <= code < len(FALLBACK_CODES) else str(code)
    return Declined(reason, int(line))


class _StringBuffers:
    """Buffers of a large_string column the kernel writes: `rows` entries and `size` bytes
    at most (exact sizes, or a capacity whose untouched pages cost no memory)."""

    def __init__(self, rows: int, size: int, *, nullable: bool = False) -> None:
        self.rows = rows
        self.offsets = np.empty(rows + 1, dtype=np.int64)
        self.data = np.empty(max(size, 1), dtype=np.uint8)
        self.valid = np.empty(rows, dtype=np.uint8) if nullable else None

    def struct(self) -> _StrCol:
        valid = self.valid.ctypes.data if self.valid is not None else None
        return _StrCol(self.offsets.ctypes.data, self.data.ctypes.data, valid, self.data.size)

    def array(self, rows: int | None = None) -> pa.Array:
        """The first `rows` entries (default: all) as an Arrow array over the buffers."""
        return _strings(self.rows if rows is None else rows, self.offsets, self.data, self.valid)


def validate_canonical(text: bytes, max_line_bytes: int) -> pl.DataFrame | Declined:
    """The batch's events (`EVENT_COLUMNS`, in line order), or why the kernel declined.

    Args:
        text: the decompressed NDJSON bytes.
        max_line_bytes: the line cap (a longer line is declined: the exact path names it).

    Raises:
        RuntimeError: the kernel is not available (check `available()` first).
    """
    lib = _library()
    if lib is None:
        raise RuntimeError("the native kernel is not built or is switched off")
    size = len(text)
    # The shortest line the kernel accepts, `{"symbolId":"s","hitCount":1}` and its newline,
    # has 31 bytes: no batch it accepts has more rows than this (counting newlines would be a
    # pass over the batch of its own).
    rows = size // MIN_LINE_BYTES + 1
    # np.empty: untouched pages cost no memory, so a capacity of the whole batch per column
    # is only address space.
    strings = [_StringBuffers(rows, size, nullable=True) for _ in _COLUMNS]
    hits = np.empty(rows, dtype=np.int64)
    observed = np.empty(rows, dtype=np.int64)
    observed_valid = np.empty(rows, dtype=np.uint8)
    out = _Out()
    for i, column in enumerate(strings):
        out.str[i] = column.struct()
    out.hit_count = hits.ctypes.data
    out.observed_at = observed.ctypes.data
    out.observed_valid = observed_valid.ctypes.data
    out.row_cap = rows
    n = int(lib.rf_validate_events(text, size, max_line_bytes, ctypes.byref(out)))
    if n == _FALLBACK:
        return _declined(out.fallback_code, out.fallback_line)
    columns = {name: column.array(n) for name, column in zip(_COLUMNS, strings, strict=True)}
    table = pa.table(
        {
            "symbol_id": columns["symbol_id"],
            "code_id": columns["code_id"],
            "loader_base": columns["loader_base"],
            "hit_count": _plain(pa.int64(), n, hits),
            "observed_at": _nullable(_UTC_US, n, observed, observed_valid),
            "process_name": columns["process_name"],
            "container_id": columns["container_id"],
            "evidence_uri": columns["evidence_uri"],
        }
    )
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def no_rejections() -> pl.DataFrame:
    """The empty rejection frame a batch the kernel accepted has."""
    return pl.DataFrame(schema=REJECTION_SCHEMA)


def _validity(n: int, valid: np.ndarray) -> tuple[pa.Buffer | None, int]:
    flags = valid[:n].view(np.bool_)
    nulls = n - int(np.count_nonzero(flags))
    if nulls == 0:
        return None, 0
    return pa.py_buffer(np.packbits(flags, bitorder="little")), nulls


def _strings(n: int, offsets: np.ndarray, data: np.ndarray, valid: np.ndarray | None) -> pa.Array:
    bitmap, nulls = _validity(n, valid) if valid is not None else (None, 0)
    used = int(offsets[n])
    return pa.Array.from_buffers(
        pa.large_string(),
        n,
        [bitmap, pa.py_buffer(offsets[: n + 1]), pa.py_buffer(data[:used])],
        null_count=nulls,
    )


def _plain(dtype: pa.DataType, n: int, values: np.ndarray) -> pa.Array:
    return pa.Array.from_buffers(dtype, n, [None, pa.py_buffer(values[:n])])


def _nullable(dtype: pa.DataType, n: int, values: np.ndarray, valid: np.ndarray) -> pa.Array:
    bitmap, nulls = _validity(n, valid)
    return pa.Array.from_buffers(dtype, n, [bitmap, pa.py_buffer(values[:n])], null_count=nulls)
