"""What a home holds at a glance: staged and pending batches, receipts, table versions."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from runtime_facts.home import Home
from runtime_facts.pipeline.prepare import discover_pending
from runtime_facts.stores.lake import TABLES


@dataclass
class HomeStatus:
    """Counts of one home; cheap enough to run before every other command."""

    home: str
    staged_batches: int = 0
    pending_batches: int = 0
    graphs: int = 0
    receipts: dict[str, int] = field(default_factory=dict)
    table_versions: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return asdict(self)


def home_status(home: Home) -> HomeStatus:
    """Count what the home holds (reads the CAS listing, the receipts log, the Delta logs)."""
    status = HomeStatus(home=home.uri)
    status.staged_batches = sum(1 for _ in home.cas.list("runtime"))
    status.graphs = sum(1 for _ in home.cas.list("graphs"))
    status.pending_batches = len(discover_pending(home))
    status.receipts = dict(sorted(Counter(str(r.get("status")) for r in home.receipts).items()))
    if home.lake.exists():
        status.table_versions = {name: home.lake.version(name) for name in TABLES}
    return status
