"""A home with the repository's fixture batches ingested over two days, for analyst tests.

Day 1 ingests every batch of fixtures/batches/contexts.json except checkout-api-0002 (the
invalid `mixed-bad-lines` batch is rejected, so `rejections` has rows) and stages the
checkout callgraph; day 2 ingests checkout-api-0002, whose `Refund::issue` hit the graph
says is unreachable, so `reachability_states` holds a contested (`X`) symbol.
"""

from __future__ import annotations

import gzip
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from runtime_facts.analyst.query import table_versions
from runtime_facts.config import Settings
from runtime_facts.home import Home
from runtime_facts.pipeline.ingest import ingest
from runtime_facts.pipeline.score import recompute
from runtime_facts.stores.graphs import stage_graph
from runtime_facts.subject import SubjectContext

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
DAY1 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
DAY2 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
LATE = "valid/checkout-api-0002.ndjson"
CHECKOUT_IMAGE = "image:sha256:9f2c1e0a7b3d4c5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6"


@dataclass
class FixtureHome:
    """The home, the table versions after day 1, and a wall-clock instant between the days."""

    home: Home
    day1_versions: dict[str, int]
    between: datetime


def _stage(home: Home, rel: str, doc: dict[str, object]) -> None:
    data = gzip.compress((FIXTURES / "batches" / rel).read_bytes(), mtime=0)
    home.cas.put("runtime", data, SubjectContext.from_json(doc))


def build_fixture_home(root: Path) -> FixtureHome:
    """Stage and ingest the fixtures into a new home at `root`."""
    home = Home(Settings.load(str(root)))
    contexts = orjson.loads((FIXTURES / "batches" / "contexts.json").read_bytes())
    for rel, doc in sorted(contexts.items()):
        if rel != LATE:
            _stage(home, rel, doc)
    ingest(home, clock=lambda: DAY1)
    graph = stage_graph(home, FIXTURES / "callgraphs" / "cg-checkout-2.4.1.json", "acme", DAY1)
    recompute(home, "acme", graph.callgraph_id, None, DAY1)
    day1 = {k: int(v) for k, v in table_versions(home).items()}
    time.sleep(0.05)  # Delta commit timestamps are milliseconds: keep `between` strictly between
    between = datetime.now(UTC)
    time.sleep(0.05)
    _stage(home, LATE, contexts[LATE])
    ingest(home, clock=lambda: DAY2)
    return FixtureHome(home, day1, between)


_SHARED: dict[str, FixtureHome] = {}


def shared_fixture_home(factory: pytest.TempPathFactory) -> FixtureHome:
    """One fixture home per test session (read-only: tests that change a home build their own)."""
    if "home" not in _SHARED:
        _SHARED["home"] = build_fixture_home(factory.mktemp("analyst") / "home")
    return _SHARED["home"]
