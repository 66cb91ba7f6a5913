"""Publish what an ingest run did: a run summary, and Prometheus metrics for the whole home.

The metrics (SPEC §6) are recomputed from the `ingest_receipts` table on every run, never
incremented in memory, so they are cumulative across runs and processes and survive a crash:
a lost publish is repaired by the next one. Each of the table's files is summed once
(`cache/metrics/receipt-files.json` keeps the sums by file; Delta files never change, and a
file that compaction or retention removed leaves the sum with its entry), so a run reads only
the files written since the last. They are written in the Prometheus text format to
`<home>/metrics/runtime_facts.prom`, atomically (temp file, fsync, rename), for node_exporter's
textfile collector (`--collector.textfile.directory=<home>/metrics`).
"""

from __future__ import annotations

import dataclasses
import os
import re
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from datetime import date, datetime
from typing import Any

import orjson
import polars as pl
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from runtime_facts.home import Home
from runtime_facts.pipeline.ledger import sync_receipts
from runtime_facts.pipeline.prepare import count_cas_misses
from runtime_facts.stores.lake import scan_table
from runtime_facts.stores.objects import LocalObjectStore
from runtime_facts.stores.receipts import canonical_json

METRICS_KEY = "metrics/runtime_facts.prom"
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
"""Upper bounds (seconds) of the ingest latency histogram: batches take 0.05 s to minutes."""
UNKNOWN_TENANT = "unknown"
EXPORTS = "receipts/exports"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class ReceiptMetrics(Collector):
    """A collector whose samples are aggregated from the receipts table at collect time."""

    def __init__(self, home: Home) -> None:
        self.home = home
        self.totals: dict[str, float] = {}

    def collect(self) -> Iterator[Metric]:
        """Yield the SPEC §6 metric families (plus batches by status)."""
        sums = receipt_sums(self.home)
        by_tenant = (
            sums.group_by("tenant")
            .agg(
                pl.col("ev").sum(),
                pl.col("n").filter(pl.col("status") == "rejected").sum().alias("failures"),
            )
            .sort("tenant")
        )
        events = CounterMetricFamily(
            "signals_runtime_events",
            "Runtime events accepted into the facts (lines of accepted batches).",
            labels=["tenant"],
        )
        failures = CounterMetricFamily(
            "signals_runtime_ingest_failures",
            "Batch ingest attempts rejected (each has a receipt with its reason codes).",
            labels=["tenant"],
        )
        for tenant, ev, failed in by_tenant.iter_rows():
            events.add_metric([tenant], float(ev or 0))
            failures.add_metric([tenant], float(failed or 0))
        yield events
        yield failures

        batches = CounterMetricFamily(
            "signals_runtime_batches",
            "Batch ingest attempts by outcome (accepted, rejected, duplicate).",
            labels=["tenant", "status"],
        )
        by_status = (
            sums.group_by("tenant", "status").agg(pl.col("n").sum()).sort("tenant", "status")
        )
        for tenant, status, count in by_status.iter_rows():
            batches.add_metric([tenant, status], float(count))
        yield batches

        total = sums.select(pl.exclude("tenant", "status").sum()).row(0, named=True)
        buckets = [
            (_le(bound), float(total[f"le_{i}"] or 0)) for i, bound in enumerate(LATENCY_BUCKETS)
        ]
        buckets.append(("+Inf", float(total["n"] or 0)))
        yield HistogramMetricFamily(
            "signals_runtime_ingest_latency_seconds",
            "Wall time of one batch ingest attempt, from read to sealed receipt.",
            buckets=buckets,
            sum_value=float(total["us"] or 0) / 1e6,
        )

        misses = int(total["misses"] or 0) + count_cas_misses(self.home)
        yield CounterMetricFamily(
            "signals_runtime_cas_miss",
            "Batches that were not found in CAS when an ingest read them.",
            value=float(misses),
        )
        self.totals = {
            "receipts": float(total["n"] or 0),
            "events": float(by_tenant.get_column("ev").sum() or 0),
            "failures": float(by_tenant.get_column("failures").sum() or 0),
            "cas_misses": float(misses),
        }


SUMS_KEY = "cache/metrics/receipt-files.json"
_SUM_COLUMNS = ["n", "ev", "us", "misses", *(f"le_{i}" for i in range(len(LATENCY_BUCKETS)))]
_SUMS_SCHEMA = {
    "tenant": pl.String(),
    "status": pl.String(),
    **dict.fromkeys(_SUM_COLUMNS, pl.Int64()),
}


def _sum_receipts(receipts: pl.DataFrame, *, by: tuple[str, ...] = ()) -> pl.DataFrame:
    """Additive sums of receipts by (tenant, status): count, accepted events, duration in whole
    microseconds (integers: the total does not depend on the order files are added in),
    receipted CAS misses, and the count at or under each latency bucket's bound."""
    micros = (pl.col("duration_ms").fill_null(0.0) * 1000).round(0).cast(pl.Int64)
    return (
        receipts.with_columns(pl.col("tenant").fill_null(UNKNOWN_TENANT))
        .group_by(*by, "tenant", "status")
        .agg(
            pl.len().cast(pl.Int64).alias("n"),
            pl.col("accepted_count").filter(pl.col("status") == "accepted").sum().alias("ev"),
            micros.sum().alias("us"),
            pl.col("reason_codes").list.contains("cas_miss").fill_null(False).sum().alias("misses"),
            *(
                (micros <= round(bound * 1e6)).sum().alias(f"le_{i}")
                for i, bound in enumerate(LATENCY_BUCKETS)
            ),
        )
        .select(*by, *(pl.col(c).cast(t) for c, t in _SUMS_SCHEMA.items()))
    )


def receipt_sums(home: Home) -> pl.DataFrame:
    """The sums of `_sum_receipts` over every receipt in the table, one row per file and
    (tenant, status): files summed by an earlier run come from the cache, the others are read."""
    if not home.lake.exists():
        return pl.DataFrame(schema=_SUMS_SCHEMA)
    table = home.lake.table("ingest_receipts")
    live = {_in_table(table.table_uri, uri): uri for uri in table.file_uris()}
    cached = _load_sums(home, str(table.metadata().id))
    known = set(cached.get_column("file").to_list())
    new = [name for name in live if name not in known]
    fresh = []
    if new:
        sums = _sum_receipts(_new_receipts(home, table, live, new), by=("file",))
        # a file without rows is remembered too (a row of no tenant), or it is read every run
        empty = sorted(set(new) - set(sums.get_column("file").to_list()))
        fresh = [sums, pl.DataFrame({"file": empty}, schema={"file": pl.String()})]
    kept = pl.concat([cached, *fresh], how="diagonal_relaxed").filter(
        pl.col("file").is_in(list(live))
    )
    if new or kept.height != cached.height:
        _save_sums(home, str(table.metadata().id), kept)
    return kept.filter(pl.col("status").is_not_null()).drop("file")


_CACHED_SCHEMA = {"file": pl.String(), **_SUMS_SCHEMA}
_RECEIPT_COLUMNS = ["tenant", "status", "accepted_count", "duration_ms", "reason_codes"]


def _new_receipts(home: Home, table: Any, live: dict[str, str], new: list[str]) -> pl.DataFrame:
    """The receipts of the files `new` (paths inside the table), with a `file` column."""
    options = home.lake.storage_options
    frame = (
        scan_table(table, None, options, files=[live[n] for n in new], file_column="file")
        .select(*_RECEIPT_COLUMNS, "file")
        .collect()
    )
    reported = frame.get_column("file").unique().to_list()
    names = {path: _in_table(table.table_uri, path) for path in reported}
    if set(names.values()) <= set(new):
        return frame.with_columns(pl.col("file").replace_strict(names, return_dtype=pl.String))
    # the scan named a file otherwise than the log: read the files one by one instead
    return pl.concat(
        scan_table(table, None, options, files=[live[n]])
        .select(*_RECEIPT_COLUMNS)
        .with_columns(pl.lit(n).alias("file"))
        .collect()
        for n in new
    )


def _in_table(table_uri: str, uri: str) -> str:
    """A file's path inside its table (what the Delta log records): the key of its sums,
    the same wherever the home is."""
    root = table_uri.rstrip("/")
    for prefix in (root + "/", root.removeprefix("file://") + "/"):
        if uri.startswith(prefix):
            return uri[len(prefix) :]
    return uri


def _load_sums(home: Home, table_id: str) -> pl.DataFrame:
    try:
        doc = orjson.loads((home.root / SUMS_KEY).read_bytes())
        if doc["table_id"] == table_id:
            return pl.DataFrame(doc["rows"], schema=_CACHED_SCHEMA, orient="row")
    except (OSError, ValueError, KeyError, TypeError, pl.exceptions.PolarsError):
        pass  # missing or damaged: every file is summed again
    return pl.DataFrame(schema=_CACHED_SCHEMA)


def _save_sums(home: Home, table_id: str, sums: pl.DataFrame) -> None:
    path = home.path(*SUMS_KEY.split("/"))
    doc = {"table_id": table_id, "rows": sums.sort("file", "tenant", "status").rows()}
    tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_bytes(orjson.dumps(doc))
    tmp.replace(path)


def _le(bound: float) -> str:
    return repr(float(bound))


def write_metrics(home: Home) -> dict[str, float]:
    """Recompute the metrics from the receipts and write the textfile; returns the totals."""
    registry = CollectorRegistry(auto_describe=False)
    collector = ReceiptMetrics(home)
    registry.register(collector)
    data = generate_latest(registry)
    # Always a local file (for an object-store home, under its local working folder): the
    # textfile collector reads it from this machine's disk.
    home.path(*METRICS_KEY.split("/"))
    LocalObjectStore(home.root).put(METRICS_KEY, data, overwrite=True)
    return collector.totals


def summarize(outcomes: Iterable[dict[str, Any] | None]) -> dict[str, Any]:
    """Totals of one run from its batch outcomes (as returned by `ingest_one`)."""
    done = [o for o in outcomes if isinstance(o, dict)]
    statuses = Counter(str(o.get("status")) for o in done)
    accepted = [o for o in done if o.get("status") == "accepted"]
    rejected = [o for o in done if o.get("status") == "rejected"]
    reasons = Counter(code for o in rejected for code in o.get("reason_codes") or [])
    return {
        "batches": len(done),
        "accepted": statuses["accepted"],
        "rejected": statuses["rejected"],
        "duplicate": statuses["duplicate"],
        "events": sum(int(o.get("accepted_count") or 0) for o in accepted),
        "keys": sum(int(o.get("key_count") or 0) for o in accepted),
        "rejected_lines": sum(int(o.get("rejected_count") or 0) for o in done),
        "reason_codes": dict(sorted(reasons.items())),
        "rejected_batches": [
            {
                "batch_sha256": o.get("batch_sha256"),
                "cas_uri": o.get("cas_uri"),
                "tenant": o.get("tenant"),
                "reason_codes": list(o.get("reason_codes") or []),
                "detail": o.get("detail"),
            }
            for o in sorted(rejected, key=lambda o: str(o.get("batch_sha256")))
        ],
    }


def publish_run(home: Home, outcomes: list[dict[str, Any]]) -> dict[str, Any]:
    """Write the metrics textfile and return the run's summary.

    Args:
        home: the home whose receipts are aggregated and where `metrics/` lives.
        outcomes: this run's batch outcomes (dicts from `ingest_one`; `None`s are skipped).

    Returns:
        The run totals (`batches`, `accepted`, `rejected`, `duplicate`, `events`, `keys`,
        `rejected_lines`, `reason_codes`, `rejected_batches`), the receipts chain head
        (`receipts.count`, `receipts.head_sha256`), the cumulative metric totals and the
        metrics file path.
    """
    summary = summarize(outcomes)
    if home.lake.exists():
        # The table mirrors the log: bring each tenant up to date first (its own lock).
        for tenant in sorted({o["tenant"] for o in outcomes if o and o.get("tenant")}):
            with home.commit_lock(tenant):
                sync_receipts(home, tenant)
        if any(o and not o.get("tenant") for o in outcomes):
            with home.commit_lock():
                sync_receipts(home)
    totals = write_metrics(home)
    home.receipts.checkpoint()  # with a signing key, every run ends signed
    last = home.receipts.last()
    summary["receipts"] = {
        "count": sum(head.count for head in home.receipts.heads().values()),
        "head_sha256": last["receipt_sha256"] if last else None,
        "log": str(getattr(home.receipts, "location", home.receipts.path)),
    }
    summary["cumulative"] = {k: int(v) for k, v in sorted(totals.items())}
    summary["metrics_path"] = str(home.root.joinpath(*METRICS_KEY.split("/")))
    return summary


def export_receipts(home: Home, outcomes: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """Write the full sealed receipts of a run's batches to `receipts/exports/<name>.ndjson`.

    The file is what an air-gapped site carries back for audit next to the receipts log:
    the receipts are copied verbatim (hash-chain fields included), in log order, so
    `runtime-facts receipts verify` can check each against the log it came from.

    Args:
        home: the home whose receipts log is read.
        outcomes: the run's batch outcomes (each carries its `receipt_sha256`).
        name: the export's name (e.g. the Airflow run id); unsafe characters become `_`.

    Returns:
        `path` of the export, `receipts` written, and `missing` receipt digests not found.
    """
    wanted = {str(o["receipt_sha256"]) for o in outcomes if o and o.get("receipt_sha256")}
    found = [r for r in home.receipts if r.get("receipt_sha256") in wanted]
    key = f"{EXPORTS}/{_UNSAFE.sub('_', name).strip('._') or 'run'}.ndjson"
    home.objects.put(key, b"".join(canonical_json(r) + b"\n" for r in found), overwrite=True)
    missing = sorted(wanted - {str(r["receipt_sha256"]) for r in found})
    return {"path": f"{home.uri}/{key}", "receipts": len(found), "missing": missing}


def to_jsonable(value: Any) -> Any:
    """A JSON-friendly copy of a job's result (dataclasses, mappings, tuples, datetimes)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value))
    if hasattr(value, "to_dict") and callable(value.to_dict):
        return to_jsonable(value.to_dict())
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
