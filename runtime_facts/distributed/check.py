"""The distributed demo's independent check: DuckDB over the raw batches against the lake."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime_facts.distributed.services import ServiceError


class DemoCheckFailed(ServiceError):
    """The run succeeded but its facts or receipts disagree with the staged batches."""


@dataclass(frozen=True)
class Staged:
    """One staged batch."""

    tenant: str
    path: Path
    sha256: str


def raw_sums(staged: list[Staged]) -> dict[tuple[str, str, str, str], tuple[int, int]]:
    """(tenant, symbol, code id, loader base) → (hits, events), by DuckDB over the raw files."""
    from transforms.duck import offline_connection

    con = offline_connection()
    out: dict[tuple[str, str, str, str], tuple[int, int]] = {}
    for tenant in sorted({s.tenant for s in staged}):
        files = [str(s.path) for s in staged if s.tenant == tenant]
        rows = con.execute(
            "SELECT symbolId, coalesce(codeId, ''), coalesce(loaderBase, ''),"
            " sum(hitCount)::BIGINT, count(*) FROM read_json(?, format = 'newline_delimited',"
            " compression = 'gzip', columns = {symbolId: 'VARCHAR', hitCount: 'BIGINT',"
            " codeId: 'VARCHAR', loaderBase: 'VARCHAR'}) GROUP BY ALL",
            [files],
        ).fetchall()
        for symbol, code, base, hits, events in rows:
            out[(tenant, symbol, code, base)] = (int(hits), int(events))
    return out


def check_lake(lake: Any, staged: list[Staged]) -> dict[str, int]:
    """The facts equal the raw sums, and every batch is in exactly once.

    Returns:
        `batches` staged, accepted `receipts` of them, `hits` in the facts, `raw_hits` in
        the raw files.

    Raises:
        DemoCheckFailed: a fact differs from the raw sums, or a batch has no or several
            accepted receipts, or not exactly its rows in `runtime_fact_batches`.
    """
    import polars as pl

    tenants = sorted({s.tenant for s in staged})
    facts = lake.read("runtime_facts").filter(pl.col("tenant").is_in(tenants))
    got = {
        (t, s, c or "", b or ""): (int(h), int(e))
        for t, s, c, b, h, e in facts.select(
            "tenant", "symbol_id", "code_id", "loader_base", "hit_count", "event_count"
        ).iter_rows()
    }
    want = raw_sums(staged)
    if got != want:
        wrong = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
        raise DemoCheckFailed(f"{len(wrong)} facts differ from the raw batches, e.g. {wrong[:3]}")
    receipts = lake.read("ingest_receipts").filter(pl.col("status") == "accepted")
    accepted = Counter(receipts.get_column("batch_sha256").to_list())
    keys = dict(receipts.select("batch_sha256", "key_count").iter_rows())
    rows = lake.read("runtime_fact_batches").filter(pl.col("tenant").is_in(tenants))
    committed = dict(rows.group_by("batch_sha256").len().iter_rows())
    for batch in staged:
        if accepted[batch.sha256] != 1 or committed.get(batch.sha256) != keys[batch.sha256]:
            raise DemoCheckFailed(
                f"batch {batch.sha256[:12]} ({batch.tenant}): {accepted[batch.sha256]} accepted"
                f" receipts, {committed.get(batch.sha256)} committed rows"
            )
    return {
        "batches": len(staged),
        "receipts": sum(accepted[b.sha256] for b in staged),
        "hits": sum(h for h, _ in got.values()),
        "raw_hits": sum(h for h, _ in want.values()),
    }


def lake_of(home: str, s3_env: dict[str, str]) -> Any:
    """The home's lake, read with the given `AWS_*` values for an `s3://` home."""
    from runtime_facts.stores.lake import Lake
    from runtime_facts.stores.s3 import S3Credentials, storage_options

    if not home.startswith("s3://"):
        return Lake(str(Path(home) / "lake"))
    creds = S3Credentials(
        endpoint_url=s3_env["AWS_ENDPOINT_URL"],
        access_key_id=s3_env["AWS_ACCESS_KEY_ID"],
        secret_access_key=s3_env["AWS_SECRET_ACCESS_KEY"],
        session_token=None,
        region=s3_env["AWS_REGION"],
        source="environment",
    )
    return Lake(f"{home}/lake", storage_options(creds))
