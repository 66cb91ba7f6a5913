"""Stored values every reader can hand to Python: timestamps outside years 1-9999 as text.

Validation refuses such timestamps (`invalid_timestamp`), but tables written before that rule,
or by another writer, may hold them: Parquet's timestamp[us] spans +-292,000 years, Python's
datetime only years 1-9999, so converting one row would end a listing with OverflowError. A
column holding such a value is rendered as ISO-8601 text instead
(`0000-01-01T00:00:00.000000+00:00`), the same for every row of that column, and a warning
names the column.
"""

from __future__ import annotations

import logging

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from transforms.text import MAX_TIMESTAMP_US, MIN_TIMESTAMP_US

_LOG = logging.getLogger("Reachability.Runtime")
_ISO = "%Y-%m-%dT%H:%M:%S%.6f"
_PER_UNIT = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 1}
_DAY_US = 86_400_000_000


def _beyond_python(column: pa.ChunkedArray | pa.Array) -> bool:
    kind = column.type
    if pa.types.is_timestamp(kind):
        per = _PER_UNIT[kind.unit]
        low, high = MIN_TIMESTAMP_US // per, MAX_TIMESTAMP_US // per
        if kind.unit == "ns":  # ns spans years 1677-2262: always inside Python's range
            return False
        raw = column.cast(pa.int64())
    elif pa.types.is_date32(kind):
        low, high = MIN_TIMESTAMP_US // _DAY_US, MAX_TIMESTAMP_US // _DAY_US
        raw = column.cast(pa.int32()).cast(pa.int64())
    else:
        return False
    if raw.null_count == len(raw):
        return False
    span = pc.min_max(raw)
    return bool(span["min"].as_py() < low or span["max"].as_py() > high)


def _as_text(column: pl.Series) -> pl.Series:
    if isinstance(column.dtype, pl.Datetime):
        zone = "%:z" if column.dtype.time_zone else ""
        return column.dt.to_string(_ISO + zone)
    return column.dt.to_string("%Y-%m-%d")


def readable_frame(frame: pl.DataFrame, what: str) -> pl.DataFrame:
    """`frame` with every column that holds a timestamp/date beyond Python's range as text."""
    bad = [
        name
        for name, dtype in frame.schema.items()
        if isinstance(dtype, pl.Datetime | pl.Date) and _beyond_python(frame[name].to_arrow())
    ]
    if not bad:
        return frame
    _warn(what, bad)
    return frame.with_columns(_as_text(frame[name]) for name in bad)


def readable_table(table: pa.Table, what: str) -> pa.Table:
    """`table` with every column that holds a timestamp/date beyond Python's range as text."""
    bad = [i for i, column in enumerate(table.columns) if _beyond_python(column)]
    if not bad:
        return table
    _warn(what, [table.column_names[i] for i in bad])
    for i in bad:
        series = pl.Series(table.column(i).combine_chunks())
        table = table.set_column(i, table.schema.field(i).name, _as_text(series).to_arrow())
    return table


def _warn(what: str, columns: list[str]) -> None:
    _LOG.warning(
        "%s: %s hold timestamps outside years 1-9999; shown as ISO-8601 text",
        what,
        ", ".join(columns),
        extra={"columns": columns},
    )
