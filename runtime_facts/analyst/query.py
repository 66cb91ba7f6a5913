"""SQL over the Delta tables, offline: DuckDB views over deltalake → Arrow datasets.

DuckDB never touches the lake itself. deltalake resolves a table version (the current one,
or `as_of` a version number or a timestamp) to its list of Parquet files, hands them over as
a lazy `pyarrow.dataset`, and that dataset is registered in DuckDB, which streams it in
batches and pushes the column projection down into the scan (filters run in DuckDB: see
`arrow_dataset`). So no DuckDB extension is installed or loaded (no `delta`, no `httpfs`),
and autoinstall/autoload of known extensions is switched off.

Scoped to a tenant, a connection only holds that tenant's partition files (deltalake prunes
them before DuckDB sees anything), each view also filters on `tenant`, file and network
access are disabled and the configuration is locked, so SQL cannot reach other rows.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from types import TracebackType
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
from deltalake import DeltaTable

from runtime_facts.config import Settings
from runtime_facts.errors import NotFoundError, Reason, UsageError
from runtime_facts.home import Home
from runtime_facts.stores.lake import (
    ALL_TABLES,
    MERGED_KEYS,
    TABLES,
    Lake,
    merged_scan,
    recent_name,
    scan_table,
    sql_literal,
)
from runtime_facts.subject import validate_tenant
from transforms.duck import offline_connection

VIEWS: tuple[str, ...] = (
    "runtime_facts",
    "runtime_fact_batches",
    "reachability_states",
    "ingest_receipts",
    "rejections",
)
SQL_ERROR = "sql_error"
INVALID_AS_OF = "invalid_as_of"
UNKNOWN_TABLE = "unknown_table"
VERSION_NOT_FOUND = "version_not_found"

AsOf = int | str | datetime | None
_LOCKDOWN = (
    "SET enable_external_access = false",
    "SET lock_configuration = true",
)


def parse_as_of(value: AsOf) -> int | datetime | None:
    """A table version (digits) or a UTC timestamp (ISO-8601; a bare date is midnight UTC)."""
    if value is None or isinstance(value, int):
        if isinstance(value, int) and value < 0:
            raise UsageError(INVALID_AS_OF, f"--as-of {value}: a version number is >= 0")
        return value
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = value.strip()
    if text.isdigit():
        return int(text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise UsageError(
                INVALID_AS_OF,
                f"--as-of {value!r} is neither a table version nor an ISO-8601 timestamp",
                hint="use a version number (e.g. 3) or a UTC time (e.g. 2026-11-26T12:00:00Z)",
            ) from None
        parsed = datetime(day.year, day.month, day.day)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def open_table(lake: Lake, name: str, as_of: AsOf = None) -> DeltaTable:
    """One Delta table at its current version or as of a version / timestamp."""
    if name not in ALL_TABLES:
        raise UsageError(
            UNKNOWN_TABLE, f"no table {name!r}", hint=f"tables are: {', '.join(VIEWS)}"
        )
    path = lake.path(name)
    if not DeltaTable.is_deltatable(path, storage_options=lake.storage_options):
        raise NotFoundError(
            Reason.NO_TABLES,
            f"no table {name} under {lake.root}: nothing ingested yet",
            hint="stage batches (runtime-facts cas put) and run runtime-facts ingest first",
        )
    table = DeltaTable(path, storage_options=lake.storage_options)
    pinned = parse_as_of(as_of)
    if pinned is None:
        return table
    current = table.version()
    if isinstance(pinned, int) and pinned > current:
        raise NotFoundError(
            VERSION_NOT_FOUND,
            f"{name} has no version {pinned} (its current version is {current})",
            hint="versions are per table; pass a timestamp to read every table as of one time",
        )
    try:
        table.load_as_version(pinned)
    except Exception as exc:  # deltalake raises its own error types for pruned logs
        raise NotFoundError(
            VERSION_NOT_FOUND, f"{name} cannot be read as of {as_of}: {exc}"
        ) from exc
    if isinstance(pinned, datetime) and table.version() == 0:
        _check_not_before_first(table, name, pinned)
    return table


def open_view(lake: Lake, name: str, as_of: AsOf = None) -> tuple[DeltaTable, DeltaTable | None]:
    """What one view reads: the table, or for a merged table (`MERGED_KEYS`) its base and its
    recent changes, at their current versions or as of a version / timestamp.

    A merged table's version number is its recent table's (each fold and re-score commits
    one); its base is read as it was when that version was committed. A timestamp pins both.
    """
    pinned = parse_as_of(as_of)
    if name not in MERGED_KEYS:
        return open_table(lake, name, pinned), None
    open_table(lake, name)  # the base must exist: a clear error when nothing was ingested
    path = lake.path(recent_name(name))
    if not DeltaTable.is_deltatable(path, storage_options=lake.storage_options):
        return open_table(lake, name, pinned), None  # a home from before recent tables
    if isinstance(pinned, datetime):
        try:
            recent: DeltaTable | None = open_table(lake, recent_name(name), pinned)
        except NotFoundError:  # the recent table was created after that time
            recent = None
        return open_table(lake, name, pinned), recent
    if pinned is not None:
        current = DeltaTable(path, storage_options=lake.storage_options).version()
        if pinned > current:
            raise NotFoundError(
                VERSION_NOT_FOUND,
                f"{name} has no version {pinned} (its current version is {current})",
                hint="versions are per table; pass a timestamp to read every table as of one time",
            )
    try:
        return lake.merged_tables(name, pinned)
    except Exception as exc:  # deltalake raises its own error types for pruned logs
        raise NotFoundError(
            VERSION_NOT_FOUND, f"{name} cannot be read as of {as_of}: {exc}"
        ) from exc


def view_version(tables: tuple[DeltaTable, DeltaTable | None]) -> int:
    """The version a view reads: its recent table's for a merged table."""
    base, recent = tables
    return (recent or base).version()


def _check_not_before_first(table: DeltaTable, name: str, pinned: datetime) -> None:
    """delta-rs answers a time before the first commit with version 0; say so instead of
    reading an empty table as if it had been empty then."""
    first = next((e for e in table.history() if e.get("version") == 0), None)
    if first is None or "timestamp" not in first:  # the first commit was cleaned up
        return
    created = datetime.fromtimestamp(int(first["timestamp"]) / 1000, tz=UTC)
    if pinned < created:
        raise NotFoundError(
            VERSION_NOT_FOUND,
            f"{name} has no version at or before {pinned.isoformat()}: its first version "
            f"was written at {created.isoformat()}",
            hint="pass a later --as-of time, or a version number (0 is the first)",
        )


@dataclass
class QueryResult:
    """Rows of one statement, the table versions they were read at, and the time it took."""

    table: pa.Table
    versions: dict[str, int]
    seconds: float


@dataclass
class FactsConnection:
    """A DuckDB connection with the fact views; close it (or use `with`) when done."""

    con: duckdb.DuckDBPyConnection
    tenant: str | None
    versions: dict[str, int] = field(default_factory=dict)

    def sql(self, query: str) -> QueryResult:
        """Run SQL (the last statement's rows are returned); SQL errors are UsageErrors."""
        started = time.perf_counter()
        try:
            relation = self.con.sql(query)
            table = relation.to_arrow_table() if relation is not None else pa.table({})
        except duckdb.Error as exc:
            raise sql_error(exc, self.tenant) from exc
        return QueryResult(table, dict(self.versions), time.perf_counter() - started)

    def close(self) -> None:
        """Release the connection."""
        self.con.close()

    def __enter__(self) -> FactsConnection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def sql_error(exc: duckdb.Error, tenant: str | None) -> UsageError:
    """DuckDB's own message as a usage error (exit 2), with a hint where one helps."""
    message = str(exc).strip()
    hint = f"the views are {', '.join(VIEWS)}; try: DESCRIBE runtime_facts"
    if tenant is not None and (
        isinstance(exc, duckdb.PermissionException) or "configuration has been locked" in message
    ):
        hint = "a tenant-scoped connection reads only the views: files, network, SET are off"
    elif isinstance(exc, duckdb.PermissionException):
        hint = "extensions are never installed or loaded: the views need none"
    return UsageError(SQL_ERROR, message, hint=hint)


def _lake(home: Home | Lake | str | None) -> Lake:
    if isinstance(home, Lake):
        return home
    return (home if isinstance(home, Home) else Home(Settings.load(home))).lake


def connect(
    home: Home | Lake | str | None,
    *,
    tenant: str | None = None,
    as_of: AsOf = None,
    tables: Iterable[str] | None = None,
) -> FactsConnection:
    """An in-memory DuckDB connection with one view per Delta table.

    Args:
        home: the home (or its lake, or a home directory; None: `RUNTIME_FACTS_HOME`).
        tenant: expose only this tenant's rows; the connection is then locked down
            (no file or network access, configuration locked).
        as_of: read every table as of this version number or UTC timestamp (default: current).
        tables: only these views (default: all five); a version number must exist in each.

    Returns:
        The connection; its `versions` say which version of each table the views read.

    Raises:
        UsageError: unknown table, malformed tenant or `as_of`.
        NotFoundError: the tables do not exist yet, or a version does not exist.
    """
    lake = _lake(home)
    if tenant is not None:
        validate_tenant(tenant)
    names = list(VIEWS) if tables is None else sorted(set(tables), key=_view_order)
    pinned = parse_as_of(as_of)
    con = offline_connection()
    versions: dict[str, int] = {}
    try:
        con.execute("SET TimeZone = 'UTC'")  # dates and timestamps print and bucket in UTC
        for name in names:
            opened = open_view(lake, name, pinned)
            versions[name] = view_version(opened)
            where = "" if tenant is None else f" WHERE tenant = {sql_literal(tenant)}"
            base, recent = opened
            con.register(f"__delta_{name}", arrow_dataset(base, tenant))
            if recent is not None:
                con.register(f"__delta_{name}_recent", arrow_dataset(recent, tenant))
            con.execute(f'CREATE VIEW "{name}" AS {view_sql(name, recent is not None, where)}')
        if tenant is not None:
            for statement in _LOCKDOWN:
                con.execute(statement)
    except BaseException:
        con.close()
        raise
    return FactsConnection(con, tenant, versions)


def view_sql(name: str, merged: bool, where: str) -> str:
    """A view's SELECT: the table's rows, or for a merged table the base rows of keys without
    recent rows and each recent key's latest row (the SQL form of `merged_scan`)."""
    source = f'"__delta_{name}"'
    if not merged:
        return f"SELECT * FROM {source}{where}"
    columns = ", ".join(f'"{c}"' for c in TABLES[name])
    keys = MERGED_KEYS[name]
    partition = ", ".join(f'"{k}"' for k in keys)
    same = " AND ".join(f'r."{k}" IS NOT DISTINCT FROM b."{k}"' for k in keys)
    latest = (
        f'(SELECT * FROM "__delta_{name}_recent"{where} '
        f"QUALIFY row_number() OVER (PARTITION BY {partition} ORDER BY _seq DESC) = 1)"
    )
    return (
        f"WITH latest AS {latest} "
        f"SELECT {columns} FROM (SELECT * FROM {source}{where}) b "
        f"WHERE NOT EXISTS (SELECT 1 FROM latest r WHERE {same}) "
        f"UNION ALL SELECT {columns} FROM latest WHERE NOT _removed"
    )


def arrow_dataset(table: DeltaTable, tenant: str | None = None) -> ds.Dataset:
    """The table's files as a lazy Arrow dataset, pruned to one tenant's partition when given.

    Strings are declared as `string_view`, the type the polars-written files hold. pyarrow
    (26) has no compare or filter kernel for `string_view`, so a filter DuckDB pushed into
    the scan would fail (`equal(string, string_view)`); with view types declared, DuckDB
    keeps filters to itself and pushes down only the column projection.
    """
    predicate = None if tenant is None else [("tenant", "=", tenant)]
    declared = pa.schema(table.schema().to_arrow())
    schema = pa.schema([f.with_type(_view_type(f.type)) for f in declared])
    return table.to_pyarrow_dataset(file_pruning_predicate=predicate, schema=schema)


def _view_type(kind: pa.DataType) -> pa.DataType:
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return pa.string_view()
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return pa.large_list(_view_type(kind.value_type))
    return kind


def _view_order(name: str) -> int:
    if name not in TABLES:
        raise UsageError(
            UNKNOWN_TABLE, f"no table {name!r}", hint=f"tables are: {', '.join(VIEWS)}"
        )
    return VIEWS.index(name)


def referenced_views(query: str) -> list[str] | None:
    """The fact views a single statement names, or None when that cannot be told."""
    try:
        names = duckdb.connect(":memory:").get_table_names(query)
    except duckdb.Error:
        return None
    return [v for v in VIEWS if v in names]


def run_query(
    home: Home | Lake | str | None, query: str, *, tenant: str | None = None, as_of: AsOf = None
) -> QueryResult:
    """Run one SQL text against fresh views (only the ones it names, when it can be parsed)."""
    tables = referenced_views(query)
    with connect(home, tenant=tenant, as_of=as_of, tables=tables or None) as conn:
        return conn.sql(query)


def read_table(
    name: str,
    tenant: str | None = None,
    home: Home | str | None = None,
    version: AsOf = None,
) -> pl.LazyFrame:
    """A lazy polars scan of one fact table (pruned to a tenant's partition when given).

    Args:
        name: one of runtime_facts, runtime_fact_batches, reachability_states,
            ingest_receipts, rejections.
        tenant: only this tenant's rows.
        home: a Home, a home directory, or None for `RUNTIME_FACTS_HOME` (default ./var).
        version: a table version, or an ISO-8601 timestamp / datetime to read as of.

    Returns:
        A LazyFrame; nothing is read until it is collected.
    """
    if tenant is not None:
        validate_tenant(tenant)
    lake = _lake(home)
    if name not in TABLES:
        raise UsageError(
            UNKNOWN_TABLE, f"no table {name!r}", hint=f"tables are: {', '.join(VIEWS)}"
        )
    base, recent = open_view(lake, name, version)
    if name in MERGED_KEYS:
        return merged_scan(name, base, recent, tenant, lake.storage_options)
    return scan_table(base, tenant, lake.storage_options)


def table_versions(home: Home | Lake | str | None) -> dict[str, Any]:
    """Current version of each table, None for a missing one."""
    lake = _lake(home)
    out: dict[str, Any] = {}
    for name in VIEWS:
        exists = DeltaTable.is_deltatable(lake.path(name), storage_options=lake.storage_options)
        out[name] = lake.version(name) if exists else None
    return out
