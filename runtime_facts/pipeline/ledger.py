"""The lake decides what is in; the receipts log and `ingest_receipts` are repaired from it.

A batch is in when its rows are committed in `runtime_fact_batches` (SPEC §4). Each tenant's
batch digests are read from that table (its change data feed, from the version a cached
index is complete through; the cache lives under `<home>/cache/lake-batches/` and is only a
shortcut: deleting it is always safe; a commit of this process brings it along without
reading the rows back, `record_commit`). Every accepted batch's receipt draft also travels in
the commit's metadata (`runtime-facts.receipts`), so the lake holds what its receipt must say.

`repair` runs at the start of every tenant commit, under the tenant's lock, and makes the two
derived records whole again:

1. the receipts log lost receipts that `ingest_receipts` still mirrors (a cut or deleted log):
   they are appended back verbatim (same hashes: the chain verifies as before);
2. a batch is in the lake with no accepted receipt anywhere (a crash between the Delta commit
   and the log append, or both records lost): a receipt is sealed for it from the commit's
   metadata (`repaired: true`), or from its rows when the commit metadata is gone;
3. `ingest_receipts` is behind the log (it is mirrored at the end of a run; a deleted table is
   recreated empty): the missing receipts are mirrored, once each (a Delta app transaction
   per tenant records how far).

No fact ever changes because of a receipt: the fold reads `runtime_fact_batches` alone.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import polars as pl

from runtime_facts.home import Home
from runtime_facts.stores.chain import LEGACY, ChainKey, chain_of
from runtime_facts.stores.lake import RECEIPT_SCHEMA, sql_literal
from runtime_facts.stores.receipts import mirror_app
from runtime_facts.stores.s3 import Fence

RECEIPTS_APP = "runtime-facts.receipts"
COMMIT_RECEIPTS_KEY = "runtime-facts.receipts"
_CACHE = "cache/lake-batches"
_memory: dict[tuple[str, str], TenantBatches] = {}
_memory_lock = threading.Lock()


@dataclass
class TenantBatches:
    """One tenant's batches in `runtime_fact_batches`: digest → hit total, complete through
    `version` of the table whose metadata id is `table_id`."""

    table_id: str
    version: int
    hits: dict[str, int] = field(default_factory=dict)


@dataclass
class RepairReport:
    """What `repair` put back."""

    restored_to_log: int = 0
    resealed_from_lake: int = 0
    mirrored_to_table: int = 0

    @property
    def total(self) -> int:
        """Receipts written by the repair (log and table)."""
        return self.restored_to_log + self.resealed_from_lake


def receipts_app(tenant: str) -> str:
    """The Delta app-transaction id recording how far `ingest_receipts` mirrors a tenant."""
    return f"{RECEIPTS_APP}/{tenant}"


def lake_batches(home: Home, tenant: str) -> TenantBatches:
    """The tenant's batches in the lake, brought up to the table's current version."""
    table = home.lake.table("runtime_fact_batches")
    head = table.version()
    table_id = str(table.metadata().id)
    key = (home.lake.root, tenant)
    with _memory_lock:
        known = _memory.get(key) or _load_cache(home, tenant)
    if known is None or known.table_id != table_id or known.version > head:
        known = _rebuild(home, tenant, table_id, head)
    elif known.version < head:
        changes = home.lake.change_reader(
            "runtime_fact_batches",
            known.version + 1,
            head,
            ["batch_sha256", "hit_count"],
            predicate=f"tenant = {sql_literal(tenant)}",
        )
        for batch in changes:
            frame = pl.DataFrame(batch).filter(pl.col("_change_type") == "insert")
            _add_hits(known, frame)
        known.version = head
    else:
        return known
    with _memory_lock:
        _memory[key] = known
    _save_cache(home, tenant, known)
    return known


def record_commit(home: Home, tenant: str, version: int, rows: pl.DataFrame) -> None:
    """Bring the tenant's cached index over this process's own commit of `rows` at `version`
    without reading it back: only when the index is complete through `version - 1` of the
    same table (then `version` holds these rows and nothing else). Otherwise the next
    `lake_batches` reads the change feed as usual. Call under the tenant's commit lock."""
    table = home.lake.table("runtime_fact_batches")
    key = (home.lake.root, tenant)
    with _memory_lock:
        known = _memory.get(key)
        if known is None or known.version != version - 1:
            return
        if known.table_id != str(table.metadata().id) or table.version() != version:
            return
        _add_hits(known, rows.select("batch_sha256", "hit_count"))
        known.version = version
    _save_cache(home, tenant, known)


def batches_in_lake(home: Home, tenant: str, shas: list[str]) -> set[str]:
    """Which of these digests have rows in `runtime_fact_batches` (the lake's verdict)."""
    hits = lake_batches(home, tenant).hits
    return {s for s in shas if s in hits}


def tenant_hits(home: Home, tenant: str) -> int:
    """Total hits of the tenant's committed batches: a bound on every cumulative counter."""
    return sum(lake_batches(home, tenant).hits.values())


def _rebuild(home: Home, tenant: str, table_id: str, head: int) -> TenantBatches:
    frame = (
        home.lake.scan("runtime_fact_batches", tenant=tenant)
        .select("batch_sha256", "hit_count")
        .collect()
    )
    known = TenantBatches(table_id=table_id, version=head)
    _add_hits(known, frame)
    return known


def _add_hits(known: TenantBatches, frame: pl.DataFrame) -> None:
    if frame.is_empty():
        return
    sums = frame.group_by("batch_sha256").agg(pl.col("hit_count").cast(pl.Int128).sum())
    for sha, hits in sums.iter_rows():
        known.hits[str(sha)] = known.hits.get(str(sha), 0) + int(hits)


def _cache_path(home: Home, tenant: str) -> Any:
    return home.root / _CACHE / f"{tenant}.json"


def _load_cache(home: Home, tenant: str) -> TenantBatches | None:
    path = _cache_path(home, tenant)
    try:
        doc = orjson.loads(path.read_bytes())
        return TenantBatches(
            table_id=str(doc["table_id"]),
            version=int(doc["version"]),
            hits={str(k): int(v) for k, v in doc["hits"].items()},
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # missing or damaged: rebuilt from the lake


def _save_cache(home: Home, tenant: str, known: TenantBatches) -> None:
    path = _cache_path(home, tenant)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"table_id": known.table_id, "version": known.version, "hits": known.hits}
    tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
    tmp.write_bytes(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS))
    tmp.replace(path)


def repair(home: Home, tenant: str, now: datetime, fence: Fence) -> RepairReport:
    """Make the tenant's receipts whole again from the lake (see the module docstring).

    Call under the tenant's commit lock.
    """
    report = RepairReport()
    home.receipts.repair()  # a torn last line is not a receipt
    index = home.receipt_index.refresh()
    report.restored_to_log = _restore_log_from_table(home, tenant, fence)
    if report.restored_to_log:
        index = home.receipt_index.refresh()
    missing = [s for s in sorted(lake_batches(home, tenant).hits) if not index.accepted(s)]
    if missing:
        drafts = _drafts_from_lake(home, tenant, set(missing))
        for sha in missing:
            draft = drafts.get(sha) or _draft_from_rows(home, tenant, sha)
            draft["repaired"] = True
            draft["detail"] = (
                "receipt sealed from the lake: the batch was committed but its receipt was lost"
            )
            draft["finished_at"] = now.isoformat()
            fence.check()
            home.receipts.append(draft)
        report.resealed_from_lake = len(missing)
        home.receipt_index.refresh()
    return report


def _restore_log_from_table(home: Home, tenant: str, fence: Fence) -> int:
    index = home.receipt_index
    in_log = index.last_sequence.get(tenant, 0)
    mirrored = home.lake.table("ingest_receipts").transaction_version(receipts_app(tenant)) or 0
    if mirrored <= in_log:
        return 0
    rows = (
        home.lake.scan("ingest_receipts", tenant=tenant)
        .filter(pl.col("sequence") > in_log)
        .select("sequence", "receipt_json")
        .sort("sequence")
        .collect()
    )
    restored = 0
    for _, raw in rows.iter_rows():
        doc = orjson.loads(raw) if raw else None
        if doc is None or chain_of(doc) != tenant:  # rows of an old log's global chain stay
            continue
        fence.check()
        home.receipts.restore(doc)
        restored += 1
    return restored


def _drafts_from_lake(home: Home, tenant: str, shas: set[str]) -> dict[str, dict[str, Any]]:
    """Receipt drafts carried by the batch table's commits, for the given batches."""
    found: dict[str, dict[str, Any]] = {}
    for commit in home.lake.table("runtime_fact_batches").history():
        raw = commit.get(COMMIT_RECEIPTS_KEY)
        if not raw:
            continue
        for draft in orjson.loads(raw):
            sha = draft.get("batch_sha256")
            if sha in shas and draft.get("tenant") == tenant and sha not in found:
                found[sha] = draft
        if len(found) == len(shas):
            break
    return found


def _draft_from_rows(home: Home, tenant: str, sha: str) -> dict[str, Any]:
    from runtime_facts import __version__
    from runtime_facts.stores.cas import cas_uri

    rows = (
        home.lake.scan("runtime_fact_batches", tenant=tenant)
        .filter(pl.col("batch_sha256") == sha)
        .collect()
    )
    first = rows.row(0, named=True)
    return {
        "batch_sha256": sha,
        "cas_uri": cas_uri("runtime", sha),
        "source": "cas",
        "tenant": tenant,
        "subject_key": first["subject_key"],
        "callgraph_id": first["callgraph_id"],
        "status": "accepted",
        "line_count": int(rows.get_column("event_count").sum()),
        "accepted_count": int(rows.get_column("event_count").sum()),
        "rejected_count": 0,
        "key_count": rows.height,
        "reason_codes": [],
        "rejected_lines": [],
        "unknown_fields": {},
        "compressed_bytes": 0,
        "decompressed_bytes": 0,
        "started_at": first["ingested_at"].isoformat(),
        "table_versions": {},
        "duration_ms": 0.0,
        "hit_count_total": str(int(rows.get_column("hit_count").cast(pl.Int128).sum())),
        "pipeline_version": __version__,
    }


def commit_metadata(drafts: list[dict[str, Any]]) -> dict[str, str]:
    """The commit metadata that makes the lake carry its batches' receipt drafts."""
    slim = [{k: v for k, v in d.items() if k != "rejected_lines"} for d in drafts]
    return {COMMIT_RECEIPTS_KEY: orjson.dumps(slim).decode()}


def receipt_rows(receipts: list[dict[str, Any]]) -> pl.DataFrame:
    """`ingest_receipts` rows for sealed receipts (the whole receipt kept as `receipt_json`)."""
    rows = []
    for r in receipts:
        row = {k: r.get(k) for k in RECEIPT_SCHEMA}
        row["unknown_fields"] = orjson.dumps(r.get("unknown_fields") or {}).decode()
        row["table_versions"] = orjson.dumps(r.get("table_versions") or {}).decode()
        row["receipt_json"] = orjson.dumps(r, option=orjson.OPT_SORT_KEYS).decode()
        for ts in ("started_at", "finished_at"):
            row[ts] = datetime.fromisoformat(r[ts]) if r.get(ts) else None
        rows.append(row)
    return pl.DataFrame(rows, schema=RECEIPT_SCHEMA, orient="row")


def sync_receipts(home: Home, tenant: str | None = None) -> int:
    """Bring `ingest_receipts` up to the log (one tenant, or all); returns receipts mirrored.

    Every receipts chain is mirrored on its own: receipts without a tenant (a batch whose
    context could not be read) and an old log's global chain too (`stores.receipts.mirror_app`).
    Call under the tenant's lock (or the home lock for all).
    """
    chains = list(home.receipt_index.refresh().last_sequence) if tenant is None else [tenant]
    total = 0
    for chain in sorted(chains, key=lambda c: (c is None, c == LEGACY, c or "")):
        total += _sync_one(home, chain)
    return total


def _sync_one(home: Home, chain: ChainKey) -> int:
    app = mirror_app(chain)  # the null chain and an old log's global chain have their own
    mirrored = home.lake.table("ingest_receipts").transaction_version(app) or 0
    last = home.receipts.last(chain)
    if last is None or int(last["sequence"]) <= mirrored:
        return 0
    missing = home.receipts.after(chain, mirrored)
    if not missing:
        return 0
    home.lake.append("ingest_receipts", receipt_rows(missing), txn=(app, missing[-1]["sequence"]))
    return len(missing)
