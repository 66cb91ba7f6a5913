"""The five Delta tables of SPEC §6, partitioned by tenant, written through deltalake."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import polars as pl
import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import TableNotFoundError

from transforms.schema import BATCH_ROW_SCHEMA, FACT_SCHEMA, UTC_US

RECEIPT_SCHEMA: dict[str, pl.DataType] = {
    "sequence": pl.Int64(),
    "batch_sha256": pl.String(),
    "cas_uri": pl.String(),
    "source": pl.String(),
    "tenant": pl.String(),
    "subject_key": pl.String(),
    "callgraph_id": pl.String(),
    "status": pl.String(),
    "line_count": pl.Int64(),
    "accepted_count": pl.Int64(),
    "rejected_count": pl.Int64(),
    "key_count": pl.Int64(),
    "reason_codes": pl.List(pl.String()),
    "detail": pl.String(),
    "unknown_fields": pl.String(),
    "compressed_bytes": pl.Int64(),
    "decompressed_bytes": pl.Int64(),
    "started_at": UTC_US,
    "finished_at": UTC_US,
    "duration_ms": pl.Float64(),
    "table_versions": pl.String(),
    "pipeline_version": pl.String(),
    "prev_receipt_sha256": pl.String(),
    "receipt_sha256": pl.String(),
    "receipt_json": pl.String(),
}

REJECTION_TABLE_SCHEMA: dict[str, pl.DataType] = {
    "batch_sha256": pl.String(),
    "tenant": pl.String(),
    "line_number": pl.Int64(),
    "reason_code": pl.String(),
    "detail": pl.String(),
    "rejected_at": UTC_US,
}

STATE_SCHEMA: dict[str, pl.DataType] = {
    "tenant": pl.String(),
    "callgraph_id": pl.String(),
    "subject_key": pl.String(),
    "symbol_id": pl.String(),
    "state": pl.String(),
    "bucket": pl.String(),
    "confidence": pl.Float64(),
    "weight": pl.Float64(),
    "score": pl.Float64(),
    "runtime_hit_count": pl.Int64(),
    "computed_at": UTC_US,
    "fact_version": pl.Int64(),
}

TABLES: dict[str, dict[str, pl.DataType]] = {
    "runtime_fact_batches": BATCH_ROW_SCHEMA,
    "runtime_facts": FACT_SCHEMA,
    "reachability_states": STATE_SCHEMA,
    "ingest_receipts": RECEIPT_SCHEMA,
    "rejections": REJECTION_TABLE_SCHEMA,
}
# Change data feed on the append-only batch table lets the fold read exactly what is new.
_CONFIG = {"runtime_fact_batches": {"delta.enableChangeDataFeed": "true"}}

# Tables rewritten one subject at a time (the fold, the recompute). Their files hold ranges of
# subjects, sorted, of at most about this size (writes split at it, compaction clusters by
# subject_key to it), so rewriting a subject rewrites its rows plus at most the neighbours
# sharing its first and last file: a bounded cost, whatever the number of subjects.
SUBJECT_TABLES = ("runtime_facts", "reachability_states")
SUBJECT_FILE_BYTES = 2 << 20


def file_actions(table: DeltaTable) -> pl.DataFrame:
    """The table's live files, one row each: path, size, row count, partition values and
    per-column min/max statistics (``min.<column>``, ``max.<column>``)."""
    actions = pl.from_arrow(pa.table(table.get_add_actions(flatten=True)))
    assert isinstance(actions, pl.DataFrame)
    return actions


def scan_table(
    table: DeltaTable, tenant: str | None = None, storage_options: dict[str, str] | None = None
) -> pl.LazyFrame:
    """A lazy polars scan of one Delta table version, pruned to a tenant's files when given.

    The table's live files (deltalake reads the log) go to polars' native Parquet reader,
    with `tenant` from the partition paths. Not `pl.scan_delta` / `pl.scan_pyarrow_dataset`:
    both run Python callbacks on polars' tokio worker threads, whose 2 MiB stacks are too
    small for some Python code (a garbage collection running finalizers there, say), and a
    stack overflow on such a thread kills the process without a traceback
    (docs/reliability.md, "A native crash of the test process").
    """
    empty = pl.from_arrow(pa.schema(table.schema().to_arrow()).empty_table())
    assert isinstance(empty, pl.DataFrame)
    full, columns = empty.schema, empty.columns
    partitions = set(table.metadata().partition_columns)
    predicate = None if tenant is None else [("tenant", "=", tenant)]
    files = table.file_uris(file_pruning_predicate=predicate)
    if not files:
        frame = pl.LazyFrame(schema=full)
    else:
        frame = pl.scan_parquet(
            files,
            schema=pl.Schema({c: t for c, t in full.items() if c not in partitions}),
            hive_partitioning=bool(partitions),
            hive_schema=pl.Schema({c: full[c] for c in partitions}) if partitions else None,
            missing_columns="insert",
            extra_columns="ignore",
            storage_options=_read_options(storage_options),
            credential_provider=None,  # keys come from storage_options, never a Python callback
        ).select(columns)
    if tenant is not None:
        frame = frame.filter(pl.col("tenant") == tenant)
    return frame


def _read_options(storage_options: dict[str, str] | None) -> dict[str, str] | None:
    """polars' object-store options: deltalake's, without its write-only settings."""
    if storage_options is None:
        return None
    return {k: v for k, v in storage_options.items() if k != "conditional_put"}


def sql_literal(value: str) -> str:
    """A single-quoted SQL string literal for Delta predicates."""
    return "'" + value.replace("'", "''") + "'"


class Lake:
    """Delta tables under `<home>/lake/<table>`."""

    def __init__(self, root: str, storage_options: dict[str, str] | None = None) -> None:
        self.root = root.rstrip("/")
        self.storage_options = storage_options
        self._open: dict[str, DeltaTable] = {}

    def path(self, name: str) -> str:
        """Table URI."""
        if name not in TABLES:
            raise KeyError(name)
        return f"{self.root}/{name}"

    def ensure(self) -> None:
        """Create any missing table with its schema (idempotent)."""
        for name, schema in TABLES.items():
            if not DeltaTable.is_deltatable(self.path(name), storage_options=self.storage_options):
                empty = pl.DataFrame(schema=schema)
                write_deltalake(
                    self.path(name),
                    _arrow(empty),
                    mode="append",
                    partition_by=["tenant"],
                    configuration=_CONFIG.get(name),
                    storage_options=self.storage_options,
                )
                self._open.pop(name, None)  # a handle on a table that was removed is stale

    def table(self, name: str, version: int | None = None) -> DeltaTable:
        """A table at its latest version (kept open, brought up to date) or at a given version."""
        if version is not None:
            return DeltaTable(
                self.path(name), version=version, storage_options=self.storage_options
            )
        table = self._open.get(name)
        if table is None:
            table = DeltaTable(self.path(name), storage_options=self.storage_options)
            self._open[name] = table
        else:
            table.update_incremental()
        return table

    def version(self, name: str) -> int:
        """Current version of a table."""
        return self.table(name).version()

    def append(
        self,
        name: str,
        frame: pl.DataFrame,
        *,
        txn: tuple[str, int] | None = None,
        metadata: dict[str, str] | None = None,
    ) -> int:
        """Append rows in one commit (optionally stamped with an app transaction and commit
        metadata); returns the new version."""
        table = self.table(name)
        write_deltalake(
            table,
            frame.select([pl.col(c).cast(t) for c, t in TABLES[name].items()]),
            mode="append",
            # ingest_receipts gained `receipt_json`: older tables take the column on append.
            schema_mode="merge" if name == "ingest_receipts" else None,
            commit_properties=_commit(txn, metadata),
        )
        return table.version()

    def tenants(self) -> list[str]:
        """Tenants with a partition in `runtime_fact_batches`, sorted."""
        actions = file_actions(self.table("runtime_fact_batches"))
        if actions.is_empty() or "partition.tenant" not in actions.columns:
            return []
        return sorted(str(t) for t in actions.get_column("partition.tenant").unique().to_list())

    def replace_where(
        self, name: str, frame: pl.DataFrame, predicate: str, *, txn: tuple[str, int] | None = None
    ) -> int:
        """Replace the rows matching `predicate` by `frame` in one atomic commit."""
        table = self.table(name)
        write_deltalake(
            table,
            frame.select([pl.col(c).cast(t) for c, t in TABLES[name].items()]),
            mode="overwrite",
            predicate=predicate,
            target_file_size=SUBJECT_FILE_BYTES if name in SUBJECT_TABLES else None,
            commit_properties=_commit(txn),
        )
        return table.version()

    def scan(
        self, name: str, *, tenant: str | None = None, version: int | None = None
    ) -> pl.LazyFrame:
        """Lazy scan of a table, pruned to one tenant's partition when given."""
        return scan_table(self.table(name, version), tenant, self.storage_options)

    def read(
        self, name: str, *, tenant: str | None = None, where: pl.Expr | None = None
    ) -> pl.DataFrame:
        """Read a table (optionally one tenant, optionally filtered) with the declared dtypes."""
        frame = self.scan(name, tenant=tenant)
        if where is not None:
            frame = frame.filter(where)
        schema = TABLES[name]
        return frame.select([pl.col(c).cast(t) for c, t in schema.items()]).collect()

    def exists(self) -> bool:
        """True when every table exists."""
        try:
            return all(
                DeltaTable.is_deltatable(self.path(n), storage_options=self.storage_options)
                for n in TABLES
            )
        except TableNotFoundError:
            return False

    def changes(
        self, name: str, start: int, end: int, columns: list[str] | None = None
    ) -> pl.DataFrame:
        """Rows inserted by versions start..end (change data feed), without CDF columns."""
        parts = list(self.iter_changes(name, start, end, columns))
        if not parts:
            schema = TABLES[name]
            return pl.DataFrame(schema={c: schema[c] for c in columns or schema})
        return pl.concat(parts)

    def change_reader(
        self,
        name: str,
        start: int,
        end: int,
        columns: list[str] | None = None,
        *,
        predicate: str | None = None,
    ) -> Any:
        """The change data feed of versions start..end as an Arrow record batch stream, with
        `_change_type` (insert / delete / update_*) beside the requested columns; a partition
        predicate (e.g. one tenant) skips the other partitions' files."""
        wanted = columns or list(TABLES[name])
        return self.table(name).load_cdf(
            starting_version=start,
            ending_version=end,
            columns=[*wanted, "_change_type"],
            predicate=predicate,
        )

    def iter_changes(
        self, name: str, start: int, end: int, columns: list[str] | None = None
    ) -> Iterator[pl.DataFrame]:
        """`changes` one record batch at a time (memory bounded by a batch, not the range)."""
        schema = TABLES[name]
        wanted = columns or list(schema)
        for batch in self.change_reader(name, start, end, wanted):
            frame = pl.DataFrame(batch)
            frame = frame.filter(pl.col("_change_type") == "insert")
            if frame.height:
                yield frame.select([pl.col(c).cast(schema[c]) for c in wanted])

    def stats_max(self, name: str, column: str, tenant: str) -> int | None:
        """Largest value of a column in one tenant's files, from Delta file statistics."""
        actions = pl.DataFrame(self.table(name).get_add_actions(flatten=True))
        if actions.is_empty() or f"max.{column}" not in actions.columns:
            return None
        part = actions.filter(pl.col("partition.tenant") == tenant)
        value: Any = part.get_column(f"max.{column}").max()
        return None if value is None else int(value)


def _commit(
    txn: tuple[str, int] | None, metadata: dict[str, str] | None = None
) -> CommitProperties | None:
    if txn is None and not metadata:
        return None
    return CommitProperties(
        app_transactions=[Transaction(app_id=txn[0], version=txn[1])] if txn else None,
        custom_metadata=metadata or None,
    )


def _arrow(frame: pl.DataFrame) -> Any:
    return frame.to_arrow(compat_level=pl.CompatLevel.oldest())
