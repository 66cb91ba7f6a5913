"""The five Delta tables of SPEC §6, partitioned by tenant, written through deltalake."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import polars as pl
from arro3.core import Table
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import TableNotFoundError

from transforms.schema import BATCH_ROW_SCHEMA, FACT_KEY, FACT_SCHEMA, SUBJECT, UTC_US

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

# The cumulative tables are a base plus recent changes (merge on read). A fold or a re-score
# appends the new rows of the keys it changed to `<table>_recent`, tagged with a sequence
# number (`_seq`, increasing per key) and, for a row that is gone, `_removed`; the base table
# (`lake/<table>`) is rewritten only when the recent rows are merged into it (`merge_recent`:
# when they pass `RECENT_MERGE_SHARE` of the base, and by the scheduled compaction). Every
# reader that goes through `Lake.scan` / `read`, the SQL views and `read_table` sees the merged
# rows: the base rows of keys without recent rows, and each recent key's latest row. Recent
# rows hold whole cumulative values, not increments, so a merge interrupted between its base
# commit and its recent cleanup reads the same as before and after it.
MERGED_KEYS: dict[str, list[str]] = {
    "runtime_facts": FACT_KEY,
    "reachability_states": [*SUBJECT, "symbol_id"],
}
RECENT_SUFFIX = "_recent"
RECENT_COLUMNS: dict[str, pl.DataType] = {"_seq": pl.Int64(), "_removed": pl.Boolean()}
RECENT_MERGE_ROWS = 50_000
"""A tenant's recent rows are merged into the base once they pass this many rows..."""
RECENT_MERGE_SHARE = 0.25
"""...and this share of the tenant's base rows, so a read costs at most about 1.25 base reads
and a merge (a rewrite of the changed subjects) comes once every many folds."""


MERGED_APP = "runtime-facts.merged"


def merged_app(tenant: str) -> str:
    """The app-transaction id a merge of a tenant's recent rows records its last `_seq` in."""
    return f"{MERGED_APP}/{tenant}"


def recent_name(name: str) -> str:
    """The table holding a merged table's recent changes."""
    return name + RECENT_SUFFIX


RECENT_TABLES: dict[str, dict[str, pl.DataType]] = {
    recent_name(name): {**TABLES[name], **RECENT_COLUMNS} for name in MERGED_KEYS
}
ALL_TABLES: dict[str, dict[str, pl.DataType]] = {**TABLES, **RECENT_TABLES}


def file_actions(table: DeltaTable) -> pl.DataFrame:
    """The table's live files, one row each: path, size, row count, partition values and
    per-column min/max statistics (``min.<column>``, ``max.<column>``)."""
    # deltalake hands over Arrow through the C stream interface: polars takes it without
    # pyarrow (and numpy, which pyarrow imports), which a run with nothing to do never loads.
    return pl.DataFrame(table.get_add_actions(flatten=True))


def scan_table(
    table: DeltaTable,
    tenant: str | None = None,
    storage_options: dict[str, str] | None = None,
    *,
    files: list[str] | None = None,
    file_column: str | None = None,
) -> pl.LazyFrame:
    """A lazy polars scan of one Delta table version, pruned to a tenant's files when given.

    The table's live files (deltalake reads the log) go to polars' native Parquet reader,
    with `tenant` from the partition paths. Not `pl.scan_delta` / `pl.scan_pyarrow_dataset`:
    both run Python callbacks on polars' tokio worker threads, whose 2 MiB stacks are too
    small for some Python code (a garbage collection running finalizers there, say), and a
    stack overflow on such a thread kills the process without a traceback
    (docs/reliability.md, "A native crash of the test process").

    `files` (some of `table.file_uris()`) reads only those; `file_column` adds a column of
    each row's file, as `file_uris()` names it.
    """
    empty = pl.DataFrame(Table.from_batches([], schema=table.schema().to_arrow()))
    full, columns = empty.schema, empty.columns
    partitions = set(table.metadata().partition_columns)
    predicate = None if tenant is None else [("tenant", "=", tenant)]
    if files is None:
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
            include_file_paths=file_column,
        ).select(columns if file_column is None else [*columns, file_column])
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
        self._pins = threading.local()

    def path(self, name: str) -> str:
        """Table URI."""
        if name not in ALL_TABLES:
            raise KeyError(name)
        return f"{self.root}/{name}"

    def ensure(self) -> None:
        """Create any missing table with its schema (idempotent)."""
        for name, schema in ALL_TABLES.items():
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

    @contextlib.contextmanager
    def pinned(self) -> Iterator[None]:
        """Within the block (this thread), each table is brought up to date once, at its first
        use; after that only this process's own commits move it (a write updates its handle).

        `Home.commit_lock` enters it. Under a tenant's lock that is safe: nobody else changes
        that tenant's rows, other tenants' commits add and remove files of their own
        partitions only, and files are deleted (vacuum, retention) only under the home lock,
        which is never held at the same time as a tenant's. Under the home lock nobody else
        commits at all. Outside a block every `table()` refreshes, as before.
        """
        if getattr(self._pins, "fresh", None) is not None:
            yield  # nested: the outer block's handles are as fresh
            return
        self._pins.fresh = set()
        try:
            yield
        finally:
            self._pins.fresh = None

    def table(self, name: str, version: int | None = None) -> DeltaTable:
        """A table at its latest version (kept open, brought up to date; once per `pinned`
        block) or at a given version."""
        if version is not None:
            return DeltaTable(
                self.path(name), version=version, storage_options=self.storage_options
            )
        fresh: set[str] | None = getattr(self._pins, "fresh", None)
        table = self._open.get(name)
        if table is None:
            table = DeltaTable(self.path(name), storage_options=self.storage_options)
            self._open[name] = table
        elif fresh is None or name not in fresh:
            table.update_incremental()
        if fresh is not None:
            fresh.add(name)
        return table

    def version(self, name: str) -> int:
        """Current version of a table; of a merged table, its recent table's (every change
        commits there), or its base's in a home written before recent tables existed."""
        if name in MERGED_KEYS:
            base, recent = self.merged_tables(name)
            return (recent or base).version()
        return self.table(name).version()

    def has_files(self, name: str, tenant: str) -> bool:
        """Whether a merged table's base or recent table has a live file in the tenant's
        partition (from the log alone: no file means no row, whatever the statistics)."""
        base, recent = self.merged_tables(name)
        return any(_live_files(t, tenant) for t in (base, recent) if t is not None)

    def versions(self, name: str) -> tuple[int, int | None]:
        """A merged table's (base, recent) versions: equal pairs mean equal rows (None: a home
        written before recent tables existed)."""
        base, recent = self.merged_tables(name)
        return base.version(), None if recent is None else recent.version()

    def _has(self, name: str) -> bool:
        return name in self._open or DeltaTable.is_deltatable(
            self.path(name), storage_options=self.storage_options
        )

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
            frame.select([pl.col(c).cast(t) for c, t in ALL_TABLES[name].items()]),
            mode="append",
            # ingest_receipts gained `receipt_json`: older tables take the column on append.
            schema_mode="merge" if name == "ingest_receipts" else None,
            commit_properties=_commit(txn, metadata),
        )
        return table.version()

    def tenants(self) -> list[str]:
        """Tenants with a partition in `runtime_fact_batches`, sorted."""
        return self.tenants_of("runtime_fact_batches")

    def tenants_of(self, name: str) -> list[str]:
        """Tenants with live files in a table, sorted."""
        if not self._has(name):
            return []
        actions = file_actions(self.table(name))
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
        self,
        name: str,
        *,
        tenant: str | None = None,
        version: int | None = None,
        where: pl.Expr | None = None,
    ) -> pl.LazyFrame:
        """Lazy scan of a table, pruned to one tenant's partition when given, filtered by
        `where` when given.

        A merged table (`MERGED_KEYS`) reads as its base and its recent rows merged; its
        `version` is the version of the recent table (see `merged_tables`).
        """
        if name in MERGED_KEYS:
            base, recent = self.merged_tables(name, version)
            return merged_scan(name, base, recent, tenant, self.storage_options, where=where)
        frame = scan_table(self.table(name, version), tenant, self.storage_options)
        return frame if where is None else frame.filter(where)

    def merged_tables(
        self, name: str, version: int | datetime | None = None
    ) -> tuple[DeltaTable, DeltaTable | None]:
        """A merged table's base and recent tables, at their current versions or as of one.

        A version number is one of the recent table (every fold and re-score commits one);
        the base is then read as it was when that version was committed. A timestamp pins
        both. A home written before recent tables existed has none yet (None).
        """
        if not self._has(recent_name(name)):
            base = self.table(name) if version is None else self._at(name, version)
            return base, None
        if version is None:
            return self.table(name), self.table(recent_name(name))
        recent = self._at(recent_name(name), version)
        if isinstance(version, datetime):
            return self._at(name, version), recent
        return self._at(name, self._committed_at(recent_name(name), version)), recent

    def _committed_at(self, name: str, version: int) -> datetime:
        """When a version of a table was committed. Read from the current table's history:
        deltalake's history() of a table opened at an older version lists the newest commits
        under older version numbers."""
        latest = DeltaTable(self.path(name), storage_options=self.storage_options)
        for entry in latest.history(latest.version() - version + 1):
            if entry.get("version") == version and "timestamp" in entry:
                return _from_ms(int(entry["timestamp"]))
        raise ValueError(f"{name} has no commit information for version {version}")

    def _at(self, name: str, version: int | datetime) -> DeltaTable:
        if isinstance(version, int):
            # Opened at the version, not moved there: deltalake's history() of a table moved
            # back by load_as_version lists the newest commits under older version numbers.
            return DeltaTable(
                self.path(name), version=version, storage_options=self.storage_options
            )
        table = DeltaTable(self.path(name), storage_options=self.storage_options)
        table.load_as_version(version)
        return table

    def read(
        self, name: str, *, tenant: str | None = None, where: pl.Expr | None = None
    ) -> pl.DataFrame:
        """Read a table (optionally one tenant, optionally filtered) with the declared dtypes."""
        return self.read_all([(name, where)], tenant=tenant)[0]

    def read_all(
        self, reads: list[tuple[str, pl.Expr | None]], *, tenant: str | None = None
    ) -> list[pl.DataFrame]:
        """`read` of each (table, where), collected together: polars runs them side by side."""
        frames = [
            self.scan(name, tenant=tenant, where=where).select(
                [pl.col(c).cast(t) for c, t in ALL_TABLES[name].items()]
            )
            for name, where in reads
        ]
        return pl.collect_all(frames)

    def upsert(
        self,
        name: str,
        rows: pl.DataFrame,
        seq: int,
        *,
        removed: pl.DataFrame | None = None,
        txn: tuple[str, int] | None = None,
    ) -> int:
        """Give the keys of `rows` these rows (and drop the keys of `removed`) in a merged
        table, in one append to its recent table; returns the recent table's new version.

        `seq` orders writes to a key: it must be larger than any earlier write's (the fold
        uses the batch-table version it folds through, a re-score the subject's fact version).
        """
        schema = TABLES[name]
        kept = rows.select([pl.col(c).cast(t) for c, t in schema.items()])
        frame = kept.with_columns(_removed=pl.lit(False))
        if removed is not None and removed.height:
            gone = removed.select(MERGED_KEYS[name]).with_columns(
                [
                    pl.lit(None, dtype=t).alias(c)
                    for c, t in schema.items()
                    if c not in MERGED_KEYS[name]
                ]
            )
            frame = pl.concat(
                [frame, gone.select(list(schema)).with_columns(_removed=pl.lit(True))]
            )
        frame = frame.with_columns(_seq=pl.lit(seq, dtype=pl.Int64))
        return self.append(recent_name(name), frame, txn=txn)

    def recent_rows(self, name: str, tenant: str) -> tuple[int, int]:
        """(recent rows, base rows) of a tenant in a merged table, from the file statistics."""
        counts = []
        for table_name in (recent_name(name), name):
            actions = file_actions(self.table(table_name))
            if actions.is_empty() or "partition.tenant" not in actions.columns:
                counts.append(0)
                continue
            mine = actions.filter(pl.col("partition.tenant") == tenant)
            counts.append(int(mine.get_column("num_records").sum() or 0))
        return counts[0], counts[1]

    def merge_due(self, name: str, tenant: str, *, factor: float = 1.0) -> bool:
        """True when a tenant's recent rows have grown past `factor` times the threshold.

        Not while the tenant's base is empty and its recent rows come from one write (a first
        backfill): they hold one row per key then, so a merge would only copy them.
        """
        recent, base = self.recent_rows(name, tenant)
        if recent <= factor * max(RECENT_MERGE_ROWS, RECENT_MERGE_SHARE * base):
            return False
        return base > 0 or self._writes(recent_name(name), tenant) > 1

    def _writes(self, name: str, tenant: str) -> int:
        """How many writes (distinct `_seq`) a tenant's recent rows come from: 1 or 2 (two or
        more), from the file statistics, or from the column where a file has none."""
        actions = file_actions(self.table(name))
        if actions.is_empty() or "partition.tenant" not in actions.columns:
            return 0
        mine = actions.filter(pl.col("partition.tenant") == tenant)
        if "min._seq" in mine.columns and not mine.get_column("min._seq").is_null().any():
            low, high = mine.get_column("min._seq").min(), mine.get_column("max._seq").max()
        else:
            seqs = scan_table(self.table(name), tenant, self.storage_options).select("_seq")
            frame = seqs.select(low=pl.col("_seq").min(), high=pl.col("_seq").max()).collect()
            low, high = frame.row(0)
        if low is None:
            return 0
        return 1 if low == high else 2

    def merge_recent(self, name: str, tenant: str) -> int:
        """Fold a tenant's recent rows of a merged table into its base; call under the
        tenant's commit lock. Returns the number of recent rows merged (0: nothing to do).

        The changed subjects are rewritten in the base with their merged rows (one commit),
        then the merged recent rows are deleted (a second commit). A crash in between leaves
        recent rows equal to what the base now holds: readers see no difference, and the next
        merge rewrites the same rows again.
        """
        recent = self.scan(recent_name(name), tenant=tenant).select("subject_key", "_seq")
        seen = recent.group_by("subject_key").agg(pl.col("_seq").max()).collect()
        if seen.is_empty():
            return 0
        subjects = sorted(str(s) for s in seen.get_column("subject_key").to_list())
        top = int(seen.get_column("_seq").max())  # type: ignore[arg-type]
        rows = self.read(name, tenant=tenant, where=pl.col("subject_key").is_in(subjects))
        in_list = ", ".join(sql_literal(s) for s in subjects)
        where = f"tenant = {sql_literal(tenant)}"
        self.replace_where(name, rows, f"{where} AND subject_key IN ({in_list})")
        table = self.table(recent_name(name))
        # The delete says how far it merged (an app transaction, atomic with it): a reader of
        # recent rows by `_seq` (the re-score's touched symbols) knows which are gone.
        metrics = table.delete(
            f"{where} AND _seq <= {top}", commit_properties=_commit((merged_app(tenant), top))
        )
        return int(metrics.get("num_deleted_rows", 0))

    def merged_through(self, name: str, tenant: str) -> int:
        """The largest `_seq` of a tenant's recent rows ever merged away (-1: none)."""
        if not self._has(recent_name(name)):
            return -1
        done = self.table(recent_name(name)).transaction_version(merged_app(tenant))
        return -1 if done is None else int(done)

    def unmerged(
        self, name: str, tenant: str, where: pl.Expr, columns: list[str], *, with_base: bool = True
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """A merged table's base rows and recent rows matching `where`, not merged (no key
        join): for aggregates that the merge cannot change, and for the recent rows' `_seq`.
        Without `with_base` the base is not read (its frame is empty)."""
        base, recent = self.merged_tables(name)
        schema = {c: TABLES[name][c] for c in columns}
        rows = pl.DataFrame(schema=schema)
        if with_base:
            scan = scan_table(base, tenant, self.storage_options).filter(where).select(columns)
            rows = scan.collect()
        if recent is None:
            return rows, pl.DataFrame(schema={**schema, "_seq": pl.Int64})
        changes = scan_table(recent, tenant, self.storage_options).filter(where)
        return rows, changes.select(*columns, "_seq").collect()

    def complete(self) -> bool:
        """True when every table exists, the recent tables of the merged ones included (a
        home written before them, or one cut while creating them, is not)."""
        return self.exists() and all(self._has(name) for name in RECENT_TABLES)

    def exists(self) -> bool:
        """True when every table of SPEC §6 exists (the lake was created)."""
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


def merged_scan(
    name: str,
    base: DeltaTable,
    recent: DeltaTable | None,
    tenant: str | None = None,
    storage_options: dict[str, str] | None = None,
    *,
    where: pl.Expr | None = None,
) -> pl.LazyFrame:
    """The merged rows of a base and a recent table (one row per key, `MERGED_KEYS`),
    filtered by `where` when given.

    A `where` on key columns only is applied to both sides before they are merged (a key's
    rows all match it or none do), so reading a few keys costs a filtered scan, not a join
    over the whole table; any other `where` is applied after the merge. A side with no files
    (in the tenant's partition) is not scanned or filtered at all.
    """
    keys, columns = MERGED_KEYS[name], list(TABLES[name])
    early = where is not None and set(where.meta.root_names()) <= set(keys)
    base_files = _live_files(base, tenant)
    frame = scan_table(base, tenant, storage_options, files=base_files)
    if early and base_files:
        frame = frame.filter(where)  # type: ignore[arg-type]
    recent_files = [] if recent is None else _live_files(recent, tenant)
    if recent is not None and recent_files:
        changes = scan_table(recent, tenant, storage_options, files=recent_files)
        if early:
            changes = changes.filter(where)  # type: ignore[arg-type]
        latest = changes.sort("_seq").unique(subset=keys, keep="last")
        kept = frame.join(latest.select(keys), on=keys, how="anti", nulls_equal=True)
        frame = pl.concat([kept, latest.filter(~pl.col("_removed")).select(columns)])
    elif not base_files:
        return frame  # no rows on either side
    return frame if where is None or early else frame.filter(where)


def _live_files(table: DeltaTable, tenant: str | None) -> list[str]:
    predicate = None if tenant is None else [("tenant", "=", tenant)]
    files: list[str] = table.file_uris(file_pruning_predicate=predicate)
    return files


def _from_ms(stamp: int) -> datetime:
    return datetime.fromtimestamp(stamp / 1000, tz=UTC)


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
