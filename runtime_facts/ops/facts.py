"""Read facts for people and programs."""

from __future__ import annotations

import polars as pl

from runtime_facts.errors import NotFoundError, Reason
from runtime_facts.home import Home
from runtime_facts.readable import readable_frame
from runtime_facts.stores.graphs import current_graph_sha
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


def subjects_of(home: Home, tenant: str, callgraph_id: str) -> list[str]:
    """The subject keys that have runtime facts for one tenant's callgraph, sorted."""
    validate_tenant(tenant)
    if not home.lake.exists():
        return []
    return sorted(
        home.lake.scan("runtime_facts", tenant=tenant)
        .filter(pl.col("callgraph_id") == callgraph_id)
        .select("subject_key")
        .unique()
        .collect()
        .get_column("subject_key")
        .to_list()
    )


def check_recompute_target(
    home: Home, tenant: str, callgraph_id: str, subject_key: str | None
) -> list[str]:
    """The subjects a recompute would re-score; a typo is an error rather than 0 subjects.

    Returns:
        The known subject keys of the callgraph (all of them, or just `subject_key`).

    Raises:
        NotFoundError: `unknown_callgraph` when the tenant has neither facts nor a staged
            graph for `callgraph_id`; `unknown_subject` when `subject_key` has no facts there.
    """
    known = subjects_of(home, tenant, callgraph_id)
    if not known and current_graph_sha(home, tenant, callgraph_id) is None:
        raise NotFoundError(
            Reason.UNKNOWN_CALLGRAPH,
            f"tenant {tenant!r} has no facts and no callgraph for {callgraph_id!r}",
            hint='check the callgraph id (`runtime-facts query "SELECT DISTINCT callgraph_id '
            'FROM runtime_facts"` lists them); `cas put-graph` stages a graph',
        )
    if subject_key is None:
        return known
    if subject_key not in known:
        raise NotFoundError(
            Reason.UNKNOWN_SUBJECT,
            f"no facts for subject {subject_key!r} of tenant {tenant!r} and callgraph "
            f"{callgraph_id!r}",
            hint="subject keys look like image:<digest>, scan:<id> or component:<name>@<version>",
        )
    return [subject_key]
