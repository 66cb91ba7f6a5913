"""Read facts for people and programs."""

from __future__ import annotations

import polars as pl

from runtime_facts.errors import NotFoundError, Reason
from runtime_facts.home import Home
from runtime_facts.readable import readable_frame
from runtime_facts.subject import validate_tenant
from transforms.schema import FACT_KEY


def list_facts(home: Home, tenant: str, subject_key: str) -> pl.DataFrame:
    """The cumulative facts of one subject, sorted by key.

    Raises:
        NotFoundError: the subject has no facts (exit code 4).
    """
    validate_tenant(tenant)
    if not home.lake.exists():
        raise NotFoundError(Reason.NO_TABLES, f"no tables under {home.root}: nothing ingested yet")
    facts = home.lake.read(
        "runtime_facts", tenant=tenant, where=pl.col("subject_key") == subject_key
    ).sort(FACT_KEY, nulls_last=False)
    if facts.is_empty():
        raise NotFoundError(
            Reason.UNKNOWN_SUBJECT,
            f"no facts for subject {subject_key!r} of tenant {tenant!r}",
            hint="subject keys look like image:<digest>, scan:<id> or component:<name>@<version>",
        )
    return readable_frame(facts, f"facts of {subject_key}")
