"""Render query results: an aligned text table, CSV, JSON (array of objects) or Parquet."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from runtime_facts.readable import readable_table

Format = Literal["table", "csv", "json", "parquet"]
FORMATS: tuple[str, ...] = ("table", "csv", "json", "parquet")
MAX_CELL = 100
"""Longest cell of the text table; longer values are cut with … (csv/json keep them whole)."""
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def column_names(table: pa.Table) -> list[str]:
    """Column names, made unique (`a`, `a_1`, ...) so JSON objects keep every column."""
    seen: dict[str, int] = {}
    names = []
    for name in table.column_names:
        count = seen.get(name, 0)
        seen[name] = count + 1
        names.append(name if count == 0 else f"{name}_{count}")
    return names


def rows(table: pa.Table) -> Iterator[tuple[Any, ...]]:
    """Rows as tuples of Python values (column-wise conversion, duplicate names kept)."""
    table = readable_table(table, "query result")
    for batch in table.to_batches(max_chunksize=10_000):
        columns = [column.to_pylist() for column in batch.columns]
        yield from zip(*columns, strict=True)


def text_cell(value: Any) -> str:
    """One value as text: NULL, ISO-8601 times, integral decimals as integers, JSON for lists."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return str(int(value)) if value == value.to_integral_value() else str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list | dict | tuple):
        return orjson.dumps(json_value(value)).decode()
    return str(value)


def json_value(value: Any) -> Any:
    """A value orjson can write without losing it (big integers become strings)."""
    if isinstance(value, Decimal):
        if value == value.to_integral_value():
            number = int(value)
            return number if INT64_MIN <= number <= INT64_MAX else str(number)
        return float(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value if INT64_MIN <= value <= INT64_MAX else str(value)
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, timedelta):
        return value.total_seconds()
    return value


def _numeric(field: pa.Field) -> bool:
    return bool(pa.types.is_integer(field.type) or pa.types.is_floating(field.type)) or bool(
        pa.types.is_decimal(field.type)
    )


def render_table(table: pa.Table) -> str:
    """An aligned text table (numbers right-aligned) with a row count footer."""
    names = column_names(table)
    if not names:
        return "(no result)\n"
    numeric = [_numeric(f) for f in table.schema]
    cells = [[_cut(text_cell(v)) for v in row] for row in rows(table)]
    widths = [len(n) for n in names]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(values: list[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return " | ".join(parts).rstrip()

    out = [line(names), "-+-".join("-" * w for w in widths)]
    out.extend(line(row) for row in cells)
    count = table.num_rows
    out.append(f"({count} row{'' if count == 1 else 's'})")
    return "\n".join(out) + "\n"


def _cut(text: str) -> str:
    text = text.replace("\n", "\\n")
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def render_csv(table: pa.Table) -> str:
    """RFC 4180 CSV with a header; NULL is the empty field, lists are JSON arrays."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(column_names(table))
    for row in rows(table):
        writer.writerow(["" if v is None else text_cell(v) for v in row])
    return buffer.getvalue()


def render_json(table: pa.Table) -> str:
    """A JSON array of row objects, one per line; timestamps ISO-8601 UTC (`Z`)."""
    names = column_names(table)
    option = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC
    lines = [
        orjson.dumps(
            {n: json_value(v) for n, v in zip(names, row, strict=True)}, option=option
        ).decode()
        for row in rows(table)
    ]
    return "[\n" + ",\n".join(lines) + "\n]\n" if lines else "[]\n"


def render(table: pa.Table, fmt: str) -> str:
    """Text output for table, csv or json (Parquet is binary: use `write_output`)."""
    if fmt == "table":
        return render_table(table)
    if fmt == "csv":
        return render_csv(table)
    if fmt == "json":
        return render_json(table)
    raise ValueError(f"not a text format: {fmt}")


def write_output(table: pa.Table, fmt: str, out: Path) -> None:
    """Write the result to a file in the given format."""
    if fmt == "parquet":
        pq.write_table(table, out)
    else:
        out.write_text(render(table, fmt), encoding="utf-8")
