"""A 1 GiB gzip bomb: refused at a cap, with the ingest process's peak RSS far below 1 GiB.

Each measurement is one child process (`python -c` calling `ingest`) reaped with `os.wait4`,
so `ru_maxrss` is that process's own peak. A baseline child ingests a tiny batch first: the
bomb's cost is its peak minus the baseline's (imports, Delta, thread pools).
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import pytest

from runtime_facts.config import Settings
from runtime_facts.home import Home
from runtime_facts.subject import SubjectContext
from tests.reliability.conftest import GOOD_BATCH, ChildResult, json_lines, make_hostile, run_python

MIB = 1024 * 1024
GIB = 1024 * MIB
CTX = SubjectContext("acme", "cg-1", scan_id="s-1")

INGEST_CHILD = """
import sys, orjson
from runtime_facts.config import Settings
from runtime_facts.home import Home
from runtime_facts.pipeline.ingest import ingest
summary = ingest(Home(Settings.load(sys.argv[1])))
rows = [{"sha": o.batch_sha256, "status": o.status, "reason_codes": o.reason_codes}
        for o in summary.outcomes]
sys.stdout.write(orjson.dumps(rows).decode() + "\\n")
"""


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, int]:
    """A valid gzip stream of ~1 MB that expands to 1 GiB (blank lines, then one event)."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.ndjson.gz"
    make_hostile().write_gzip_bomb(path, GIB)
    return path.read_bytes(), GIB


@pytest.fixture(scope="module")
def baseline_rss(tmp_path_factory: pytest.TempPathFactory) -> int:
    """Peak RSS of the same child ingesting one small good batch."""
    root = tmp_path_factory.mktemp("baseline")
    home = Home(Settings.load(str(root / "home")))
    home.cas.put("runtime", gzip.compress(GOOD_BATCH), CTX)
    child = run_python(INGEST_CHILD, str(home.root))
    assert child.returncode == 0, child.stderr[-2000:]
    assert json_lines(child.stdout)[0][0]["status"] == "accepted"
    return child.max_rss_bytes


def _ingest_in_child(
    root: Path, payload: bytes, env: dict[str, str]
) -> tuple[ChildResult, dict[str, Any]]:
    home = Home(Settings.load(str(root / "home")))
    bomb_sha = home.cas.put("runtime", payload, CTX).sha256
    good_sha = home.cas.put("runtime", gzip.compress(GOOD_BATCH), CTX).sha256
    child = run_python(INGEST_CHILD, str(home.root), env=env)
    assert child.returncode == 0, child.stderr[-2000:]
    outcomes = {o["sha"]: o for o in json_lines(child.stdout)[0]}
    assert outcomes[good_sha]["status"] == "accepted"  # the run went on
    assert home.lake.read("runtime_fact_batches").get_column("batch_sha256").unique().to_list() == [
        good_sha
    ]
    return child, outcomes[bomb_sha]


def test_a_1_gib_bomb_stops_at_the_ratio_cap_with_bounded_memory(
    bomb: tuple[bytes, int], baseline_rss: int, tmp_path: Path
) -> None:
    payload, expansion = bomb
    assert len(payload) * 900 < expansion  # a real bomb: > 900x
    child, outcome = _ingest_in_child(tmp_path, payload, {})
    assert (outcome["status"], outcome["reason_codes"]) == (
        "rejected",
        ["compression_ratio_exceeded"],
    )
    ratio_cap = len(payload) * Settings.load().ingest.max_compression_ratio  # ~200 MB
    extra = child.max_rss_bytes - baseline_rss  # measured: ~210 MiB over a ~240 MiB baseline
    peaks = f"peak {child.max_rss_bytes / MIB:.0f} MiB, baseline {baseline_rss / MIB:.0f} MiB"
    assert extra < ratio_cap + 96 * MIB, peaks
    assert extra < expansion // 4, peaks


def test_the_decompressed_bytes_cap_stops_a_bomb_on_its_own(
    bomb: tuple[bytes, int], baseline_rss: int, tmp_path: Path
) -> None:
    """Ratio check out of the way: the 64 MiB output cap alone bounds memory."""
    env = {
        "RUNTIME_FACTS__INGEST__MAX_DECOMPRESSED_BYTES": str(64 * MIB),
        "RUNTIME_FACTS__INGEST__MAX_COMPRESSION_RATIO": str(10**6),
    }
    child, outcome = _ingest_in_child(tmp_path, bomb[0], env)
    assert (outcome["status"], outcome["reason_codes"]) == ("rejected", ["decompressed_too_large"])
    peaks = f"peak {child.max_rss_bytes / MIB:.0f} MiB, baseline {baseline_rss / MIB:.0f} MiB"
    assert child.max_rss_bytes - baseline_rss < 64 * MIB + 96 * MIB, peaks
