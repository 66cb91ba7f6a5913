"""Canonical, digestible form of fact rows: the same rows always give the same sha256.

Form: the rows sorted by every column (nulls first), each rendered as one JSON object with
sorted keys, no whitespace, timestamps as ISO-8601 UTC with a `Z` suffix and microseconds,
integers as JSON integers, floats as shortest round-trip decimals; lines joined by `\\n`,
with a trailing `\\n` after each row. An empty table is the empty string.
"""

from __future__ import annotations

import hashlib

import numpy as np
import orjson
import polars as pl
import pyarrow as pa


def _rendered(frame: pl.DataFrame, exclude: tuple[str, ...]) -> tuple[pl.DataFrame, list[str]]:
    columns = sorted(c for c in frame.columns if c not in exclude)
    ordered = frame.select(columns).sort(columns, nulls_last=False)
    return _render_timestamps(ordered), columns


def _render_timestamps(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(
        pl.col(c).dt.convert_time_zone("UTC").dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        for c, t in frame.schema.items()
        if isinstance(t, pl.Datetime)
    )


def _sort_key(frame: pl.DataFrame, columns: list[str]) -> list[str]:
    """The columns the full sort actually needs, in order: a column holding one value cannot
    reorder rows, and after a column whose values are all distinct nothing can. Float columns
    are kept unless truly constant (their equality and their order disagree on -0.0 and NaN)."""
    key: list[str] = []
    for name in columns:
        column = frame.get_column(name)
        if frame.schema[name].is_float():
            if not _constant_float(column):
                key.append(name)
            continue
        distinct = column.n_unique()
        if distinct > 1:
            key.append(name)
        if distinct == frame.height:
            break
    return key


def _constant_float(column: pl.Series) -> bool:
    """All null, or one non-zero, non-NaN value in every row."""
    if column.null_count() == column.len():
        return True
    if column.null_count() or column.n_unique() != 1:
        return False
    value = column[0]
    return bool(value == value and value != 0)


def canonical_rows(frame: pl.DataFrame, *, exclude: tuple[str, ...] = ()) -> bytes:
    """The canonical byte form of a frame's rows (columns in `exclude` left out).

    Rendered by polars in one vectorised pass; `canonical_rows_reference` is the same form
    written row by row with orjson, and a property test keeps the two byte-identical.
    """
    return b"".join(_canonical_chunks(frame, exclude))


def _canonical_chunks(frame: pl.DataFrame, exclude: tuple[str, ...]) -> list[memoryview]:
    columns = sorted(c for c in frame.columns if c not in exclude)
    if frame.is_empty() or not columns:
        return []
    selected = frame.select(columns)
    key = _sort_key(selected, columns)
    ordered = _render_timestamps(selected.sort(key, nulls_last=False) if key else selected)
    lines = ordered.select(pl.struct(columns).struct.json_encode() + "\n").to_series()
    # Every line ends with a newline, so the document is the strings' data buffer as it stands.
    return [
        memoryview(data)[int(offsets[0]) : int(offsets[-1])] for offsets, data in _buffers(lines)
    ]


def _buffers(lines: pl.Series) -> list[tuple[np.ndarray, pa.Buffer]]:
    """Per Arrow chunk of a string series: the int64 offsets of its strings (string i is
    data[offsets[i]:offsets[i + 1]]) and the data buffer they point into."""
    array = lines.to_arrow(compat_level=pl.CompatLevel.oldest())
    out: list[tuple[np.ndarray, pa.Buffer]] = []
    for chunk in array.chunks if isinstance(array, pa.ChunkedArray) else [array]:
        _, offsets_buffer, data = chunk.buffers()
        width = np.int64 if pa.types.is_large_string(chunk.type) else np.int32
        offsets = np.frombuffer(offsets_buffer, dtype=width)
        window = offsets[chunk.offset : chunk.offset + len(chunk) + 1]
        out.append((window.astype(np.int64, copy=False), data))
    return out


def _line_series(frame: pl.DataFrame, exclude: tuple[str, ...]) -> pl.Series | None:
    columns = sorted(c for c in frame.columns if c not in exclude)
    if frame.is_empty() or not columns:
        return None
    rendered = _render_timestamps(frame.select(columns))
    return rendered.select(pl.struct(columns).struct.json_encode()).to_series()


def canonical_lines(frame: pl.DataFrame, *, exclude: tuple[str, ...] = ()) -> list[bytes]:
    """Each row's canonical line (as in `canonical_rows`, without its newline), in the
    frame's own row order: for digests that do not depend on the order (`transforms.lthash`)."""
    lines = _line_series(frame, exclude)
    return [] if lines is None else [line.encode() for line in lines.to_list()]


def canonical_line_buffers(
    frame: pl.DataFrame, *, exclude: tuple[str, ...] = ()
) -> list[tuple[np.ndarray, pa.Buffer]]:
    """The lines of `canonical_lines` as Arrow keeps them, without a Python object per line:
    per chunk, the int64 offsets of its lines (line i is data[offsets[i]:offsets[i + 1]])
    and the data buffer they point into."""
    lines = _line_series(frame, exclude)
    return [] if lines is None else _buffers(lines)


def canonical_rows_reference(frame: pl.DataFrame, *, exclude: tuple[str, ...] = ()) -> bytes:
    """Row-by-row orjson rendering of the canonical form: the specification of the fast one."""
    rendered, _ = _rendered(frame, exclude)
    option = orjson.OPT_SORT_KEYS
    return b"".join(
        orjson.dumps(row, option=option) + b"\n" for row in rendered.iter_rows(named=True)
    )


def digest_rows(frame: pl.DataFrame, *, exclude: tuple[str, ...] = ()) -> str:
    """`sha256:<hex>` of `canonical_rows`."""
    digest = hashlib.sha256()
    for chunk in _canonical_chunks(frame, exclude):
        digest.update(chunk)
    return "sha256:" + digest.hexdigest()
