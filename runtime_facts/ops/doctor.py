"""`runtime-facts doctor`: is this home healthy? Quick, read-only checks an operator runs first.

Checks: the home exists and is writable; a seeded random sample of CAS objects still hashes
to its address; the five Delta tables are there (version, files, rows); the receipts log's
hash chains verify; the lake still holds what the receipts say (every recorded table version
in the Delta log, every accepted batch's rows, `runtime_facts` equal to the fold of
`runtime_fact_batches`: `runtime_facts.ops.lake_audit`); the metrics textfile is there; and the
effective configuration. Nothing
is created or changed (the writability probe is a temp file, removed at once).
"""

from __future__ import annotations

import os
import random
import re
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import polars as pl
from deltalake import DeltaTable

from runtime_facts.analyst.report_data import receipt_lines
from runtime_facts.errors import RuntimeFactsError
from runtime_facts.home import RECEIPTS_LOG, Home
from runtime_facts.ops.lake_audit import audit_lake
from runtime_facts.pipeline.publish import METRICS_KEY
from runtime_facts.stores.cas import Kind, cas_uri
from runtime_facts.stores.lake import MERGED_KEYS, TABLES, Lake, recent_name
from runtime_facts.stores.receipts import verify_log

Status = Literal["ok", "warn", "fail", "skip"]
BATCHES_METRIC = "signals_runtime_batches_total{"
_SECRET = re.compile(r"secret|password|token|credential|private", re.IGNORECASE)


@dataclass
class Check:
    """One check's outcome; `fail` makes the doctor exit 3, `warn` does not."""

    name: str
    status: Status
    summary: str
    hint: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class DoctorReport:
    """Every check, in the order they ran."""

    home: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no check failed."""
        return all(c.status != "fail" for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {"home": self.home, "ok": self.ok, "checks": [asdict(c) for c in self.checks]}


def check_home(home: Home) -> Check:
    """The home is a directory this process can write to (an object store: it answers)."""
    if home.remote:
        try:
            home.objects.exists(RECEIPTS_LOG)
        except Exception as exc:  # any client error: unreachable, no such bucket, denied
            return Check(
                "home",
                "fail",
                f"cannot reach {home.uri}: {exc}",
                hint="check AWS_ENDPOINT_URL, the credentials and that the bucket exists",
            )
        return Check("home", "ok", f"{home.uri} answers", details={"local_dir": str(home.root)})
    root = home.root
    if not root.exists():
        return Check(
            "home",
            "fail",
            f"{root} does not exist",
            hint="point --home / RUNTIME_FACTS_HOME at the right place; "
            "`runtime-facts cas put` creates a new home",
        )
    if not root.is_dir():
        return Check("home", "fail", f"{root} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(dir=root, prefix=".doctor-", suffix=".probe")
        os.close(fd)
        Path(probe).unlink()
    except OSError as exc:
        return Check(
            "home",
            "fail",
            f"{root} is not writable: {exc.strerror or exc}",
            hint="run as the user that owns the home, or fix its permissions",
        )
    return Check("home", "ok", f"{root} exists and is writable")


def check_cas(home: Home, sample: int, seed: int) -> Check:
    """Rehash a seeded random sample of CAS objects (runtime batches and graphs)."""
    objects: list[tuple[Kind, str]] = [("runtime", s) for s in home.cas.list("runtime")]
    objects += [("graphs", s) for s in home.cas.list("graphs")]
    if not objects:
        return Check("cas", "ok", "no CAS objects yet", details={"objects": 0, "sampled": 0})
    picked = sorted(random.Random(seed).sample(objects, min(sample, len(objects))))
    bad = []
    for kind, sha in picked:
        try:
            home.cas.get(kind, sha)
        except RuntimeFactsError as exc:
            bad.append({"uri": cas_uri(kind, sha), "reason": exc.reason})
    details = {"objects": len(objects), "sampled": len(picked), "seed": seed, "bad": bad}
    if bad:
        return Check(
            "cas",
            "fail",
            f"{len(bad)} of {len(picked)} sampled objects do not verify",
            hint="run `runtime-facts cas verify --all` for the full list; restore or re-stage them",
            details=details,
        )
    return Check(
        "cas", "ok", f"{len(picked)} of {len(objects)} objects rehashed: all match", details=details
    )


def _merged_counts(lake: Lake, name: str) -> dict[str, int]:
    """A merged table's version, files and rows as readers see them (base and recent)."""
    path = lake.path(recent_name(name))
    if not DeltaTable.is_deltatable(path, storage_options=lake.storage_options):
        return {"recent_files": 0, "recent_rows": 0}  # a home from before recent tables
    recent = lake.table(recent_name(name))
    adds = pl.DataFrame(recent.get_add_actions(flatten=True))
    pending = adds.get_column("num_records").sum() if "num_records" in adds.columns else 0
    merged = lake.scan(name).select(pl.len()).collect().item()
    return {
        "version": lake.version(name),
        "recent_files": adds.height,
        "recent_rows": int(pending or 0),
        "rows": int(merged),
    }


def check_lake(home: Home) -> Check:
    """Every table is a Delta table; its version, file count and row count (from the log)."""
    lake = home.lake
    tables: dict[str, Any] = {}
    missing, broken = [], []
    for name in TABLES:
        path = lake.path(name)
        try:
            if not DeltaTable.is_deltatable(path, storage_options=lake.storage_options):
                missing.append(name)
                tables[name] = None
                continue
            table = DeltaTable(path, storage_options=lake.storage_options)
            adds = pl.DataFrame(table.get_add_actions(flatten=True))
            rows = adds.get_column("num_records").sum() if "num_records" in adds.columns else 0
            tables[name] = {
                "version": table.version(),
                "files": adds.height,
                "rows": int(rows or 0),
            }
            if name in MERGED_KEYS:
                tables[name].update(_merged_counts(lake, name))
        except Exception as exc:  # a corrupt log is exactly what this check is for
            broken.append(f"{name}: {exc}")
            tables[name] = {"error": str(exc)}
    details = {"root": lake.root, "tables": tables}
    if broken:
        return Check("lake", "fail", f"cannot read {'; '.join(broken)}", details=details)
    if len(missing) == len(TABLES):
        has_receipts = home.receipts.last() is not None
        status: Status = "fail" if has_receipts else "warn"
        return Check(
            "lake",
            status,
            "no tables yet" + (" although the receipts log has entries" if has_receipts else ""),
            hint="run `runtime-facts ingest`",
            details=details,
        )
    if missing:
        return Check(
            "lake",
            "fail",
            f"missing table(s): {', '.join(missing)}",
            hint="`runtime-facts ingest` creates missing tables; restore them if they were lost",
            details=details,
        )
    versions = ", ".join(f"{n} v{t['version']}" for n, t in tables.items())
    return Check("lake", "ok", f"5 tables: {versions}", details=details)


def check_receipts(home: Home) -> Check:
    """The receipts log's hash chains verify from the first line to the last."""
    result = verify_log(receipt_lines(home))
    count, broken = result.receipts, result.first_break
    details: dict[str, Any] = {
        "log": home.receipts.location,
        "receipts": count,
        "chains": len(result.chains),
        "checkpoints": result.checkpoints,
    }
    if broken is not None:
        details["first_break"] = {"line": broken.line_number, "reason": broken.reason}
        return Check(
            "receipts",
            "fail",
            f"chain broken at line {broken.line_number}: {broken.reason}",
            hint="run `runtime-facts receipts verify --json`; restore the log from a backup",
            details=details,
        )
    if not count:
        return Check("receipts", "ok", "no receipts yet", details=details)
    return Check(
        "receipts",
        "ok",
        f"{count} receipts in {len(result.chains)} chains verify "
        f"({result.checkpoints} checkpoints; `receipts verify` also checks the table)",
        details=details,
    )


def check_lake_receipts(home: Home) -> Check:
    """The lake still holds what the receipts say (`runtime_facts.ops.lake_audit`)."""
    if not home.lake.exists():
        return Check("lake_receipts", "skip", "skipped: no tables")
    findings = audit_lake(home, list(home.receipts))
    details: dict[str, Any] = {"findings": [asdict(f) for f in findings]}
    if findings:
        first = findings[0]
        more = f" (and {len(findings) - 1} more)" if len(findings) > 1 else ""
        return Check(
            "lake_receipts",
            "fail",
            f"[{first.reason_code}] {first.reason}{more}",
            hint="the Delta log was altered or rows were lost: restore the table from a backup, "
            "or re-ingest the named batches into a fresh home; see docs/runbook.md",
            details=details,
        )
    return Check(
        "lake_receipts",
        "ok",
        "table versions, accepted batches and the fold of runtime_fact_batches agree",
        details=details,
    )


def check_metrics(home: Home, now: datetime, receipts: int | None = None) -> Check:
    """The Prometheus textfile exists and counts every receipt of the log (else it is stale)."""
    where = f"{home.uri}/{METRICS_KEY}"
    try:
        text = home.objects.get(METRICS_KEY).decode("utf-8")
    except FileNotFoundError:
        return Check(
            "metrics",
            "warn",
            f"no metrics file at {where}",
            hint="the ingest DAGs write it after each run (pipeline.publish.publish_run); scrape "
            "it with node_exporter's textfile collector",
        )
    counted = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(BATCHES_METRIC)
    )
    details: dict[str, Any] = {"path": where, "batches_counted": int(counted)}
    summary = f"{where} is there"
    local = home.objects.local_path(METRICS_KEY)
    if local is not None:
        written = datetime.fromtimestamp(local.stat().st_mtime, UTC)
        age = round(max(0.0, (now - written).total_seconds()))
        details.update(written_at=written.isoformat(), age_seconds=age)
        summary = f"{where} written {age} s ago"
    if receipts is not None and counted < receipts:
        return Check(
            "metrics",
            "warn",
            f"{where} counts {int(counted)} of {receipts} receipts: stale",
            hint="it is rewritten after the next ingest run; alert on the textfile's mtime",
            details=details,
        )
    return Check("metrics", "ok", summary, details=details)


def redact(value: Any, key: str = "") -> Any:
    """Settings with secret-looking names hidden."""
    if isinstance(value, dict):
        return {k: redact(v, k) for k, v in value.items()}
    if _SECRET.search(key) and value not in (None, ""):
        return "***"
    return value


def check_config(home: Home) -> Check:
    """The effective configuration (secret-looking values hidden)."""
    settings = redact(home.settings.to_dict())
    return Check("config", "ok", f"home {home.settings.home}", details={"settings": settings})


def run_doctor(home: Home, *, sample: int = 20, seed: int = 0, now: datetime) -> DoctorReport:
    """Run every check.

    Args:
        home: the home to examine (not created when missing).
        sample: how many CAS objects to rehash.
        seed: seed of the random sample, so a run can be repeated exactly.
        now: the time metric-file ages are measured against.

    Returns:
        The report; `ok` is False when any check failed.
    """
    report = DoctorReport(home=str(home.root))
    first = check_home(home)
    report.checks.append(first)
    if first.status == "fail" and (home.remote or not home.root.is_dir()):
        for name in ("cas", "lake", "receipts", "lake_receipts", "metrics"):
            report.checks.append(Check(name, "skip", "skipped: no home"))
    else:
        report.checks.append(check_cas(home, sample, seed))
        report.checks.append(check_lake(home))
        receipts = check_receipts(home)
        report.checks.append(receipts)
        report.checks.append(check_lake_receipts(home))
        count = receipts.details.get("receipts") if receipts.status == "ok" else None
        report.checks.append(check_metrics(home, now, count))
    report.checks.append(check_config(home))
    return report
