"""`runtime-facts bench` / `make bench`: the product against a bare DuckDB query, same run.

Every figure is measured in child processes of this run, alternating baseline and product,
and reported as a ratio against the baseline measured alongside it (the machines are shared
and noisy, so absolute seconds mean little on their own).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from runtime_facts.generate import GeneratorSpec, generate_batches

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "bench"

BASELINE_SQL = """
COPY (
  SELECT symbolId, codeId, loaderBase, sum(hitCount) AS hit_count, count(*) AS event_count,
         min(observedAt) AS first_observed_at, max(observedAt) AS last_observed_at
  FROM read_ndjson({files}, columns = {{symbolId: 'VARCHAR', codeId: 'VARCHAR',
       loaderBase: 'VARCHAR', hitCount: 'BIGINT', observedAt: 'TIMESTAMPTZ'}})
  WHERE symbolId IS NOT NULL
  GROUP BY ALL
) TO '{out}' (FORMAT parquet, COMPRESSION zstd)
"""


@dataclass
class BenchConfig:
    """Sizes; the defaults are the issue's figures, `quick()` is for the smoke test."""

    events: int = 2_000_000
    symbols: int = 200_000
    code_ids: int = 2_000
    repeats: int = 3
    growth_batches: int = 200
    growth_events: int = 20_000
    growth_subjects: int = 40  # the second growth figure: batches round-robin over subjects
    growth_compact_every: int = 50
    rss_batches: int = 50
    rss_events: int = 20_000
    lattice: tuple[tuple[int, int, int], ...] = ((1_000_000, 5_000_000, 200_000),
                                                 (2_000_000, 10_000_000, 400_000))  # fmt: skip
    lattice_repeats: int = 5  # one size takes about a second: more runs for a steady median

    @classmethod
    def quick(cls) -> BenchConfig:
        """Tiny sizes that exercise every code path in seconds."""
        return cls(
            events=20_000, symbols=2_000, code_ids=50, repeats=1, growth_batches=4,
            growth_events=500, growth_subjects=2, growth_compact_every=2, rss_batches=3,
            rss_events=500,
            lattice=((2_000, 8_000, 500), (4_000, 16_000, 1_000)), lattice_repeats=1,
        )  # fmt: skip


@dataclass
class BenchResult:
    """What `bench` prints and writes as JSON."""

    events: int = 0
    uncompressed_bytes: int = 0
    batches: int = 0
    baseline_seconds: list[float] = field(default_factory=list)
    product_seconds: list[float] = field(default_factory=list)
    baseline_rss_mib: float = 0.0
    product_rss_mib: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)


def _dataset(cfg: BenchConfig, *, events: int, per_chunk: int | None, seed: int) -> list[Path]:
    key = f"e{events}-s{cfg.symbols}-c{cfg.code_ids}-p{per_chunk}-r{seed}"
    folder = CACHE / key
    done = folder / ".complete"
    if not done.exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        spec = GeneratorSpec(
            events=events, symbols=cfg.symbols, code_ids=cfg.code_ids, seed=seed,
            events_per_chunk=per_chunk,
        )  # fmt: skip
        for i, chunk in enumerate(generate_batches(spec)):
            (folder / f"batch-{i:05d}.ndjson.gz").write_bytes(chunk)
        done.touch()
    return sorted(folder.glob("*.ndjson.gz"))


# The child reports its own VmHWM: ru_maxrss would include the parent's size at fork time.
_PEAK = """
import atexit, os
def _peak():
    with open("/proc/self/status") as status, open(os.environ["RF_BENCH_PEAK"], "w") as out:
        out.write(next(line.split()[1] for line in status if line.startswith("VmHWM")))
atexit.register(_peak)
"""


def _child(code: str, *args: str) -> tuple[float, float]:
    """Run Python code in a child; returns (wall seconds, peak RSS MiB) of that child alone."""
    with tempfile.NamedTemporaryFile(prefix="rf-peak-") as peak:
        env = {**os.environ, "RF_BENCH_PEAK": peak.name}
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", _PEAK + code, *args],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:  # a rejected batch (exit 3) would make the figures meaningless
            raise RuntimeError(f"benchmark child failed with exit code {proc.returncode}")
        kib = Path(peak.name).read_text().strip()
    return elapsed, int(kib) / 1024 if kib else 0.0


_STAGE = """
import sys
from pathlib import Path
from runtime_facts.config import Settings
from runtime_facts.home import Home
from runtime_facts.subject import SubjectContext
home = Home(Settings.load(sys.argv[1]))
ctx = SubjectContext("bench", "cg-bench", image_digest="sha256:" + "be" * 32)
for f in sys.argv[2:]:
    home.cas.put("runtime", Path(f).read_bytes(), ctx)
"""
# The product is the command an operator runs: `runtime-facts ingest` (metrics included).
_INGEST = """
import sys
from runtime_facts.cli.main import main
sys.argv = ["runtime-facts", "ingest", "--home", sys.argv[1], "--json"]
main()
"""
_BASELINE = """
import sys, duckdb
con = duckdb.connect()
con.execute("SET enable_progress_bar = false")
con.execute(sys.argv[1])
"""


def _fresh_home(staged: Path, scratch: Path) -> Path:
    home = scratch / "home"
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(staged / "cas", home / "cas")
    return home


def run_bench(cfg: BenchConfig, log: Any = print) -> BenchResult:
    """Run every benchmark of the issue and return the figures."""
    result = BenchResult()
    files = _dataset(cfg, events=cfg.events, per_chunk=None, seed=1)
    result.events = cfg.events
    result.batches = len(files)
    import gzip

    result.uncompressed_bytes = sum(len(gzip.decompress(f.read_bytes())) for f in files)
    with tempfile.TemporaryDirectory(prefix="rf-bench-") as tmp:
        scratch = Path(tmp)
        staged = scratch / "staged"
        _child(_STAGE, str(staged), *map(str, files))
        out = scratch / "baseline.parquet"
        sql = BASELINE_SQL.format(files=[str(f) for f in files], out=out)
        for i in range(cfg.repeats):
            seconds, rss = _child(_BASELINE, sql)
            result.baseline_seconds.append(seconds)
            result.baseline_rss_mib = max(result.baseline_rss_mib, rss)
            home = _fresh_home(staged, scratch)
            seconds, rss = _child(_INGEST, str(home))
            result.product_seconds.append(seconds)
            result.product_rss_mib = max(result.product_rss_mib, rss)
            log(f"  round {i + 1}: baseline {result.baseline_seconds[-1]:.2f}s, "
                f"product {result.product_seconds[-1]:.2f}s")  # fmt: skip
        result.figures["growth"] = _growth(cfg, scratch)
        result.figures["growth_subjects"] = _growth(
            cfg, scratch, subjects=cfg.growth_subjects, compact_every=cfg.growth_compact_every
        )
        result.figures["rss"] = _rss(cfg, scratch)
        result.figures["startup"] = _startup(cfg, scratch)
    result.figures["lattice"] = _lattice(cfg)
    base = statistics.median(result.baseline_seconds)
    prod = statistics.median(result.product_seconds)
    mb = result.uncompressed_bytes / 1e6
    result.figures.update(
        baseline_median_s=round(base, 3),
        product_median_s=round(prod, 3),
        ratio_product_over_baseline=round(prod / base, 3),
        baseline_events_per_s=round(cfg.events / base),
        product_events_per_s=round(cfg.events / prod),
        baseline_mb_per_s=round(mb / base, 1),
        product_mb_per_s=round(mb / prod, 1),
    )
    return result


def _growth(
    cfg: BenchConfig, scratch: Path, *, subjects: int = 1, compact_every: int = 0
) -> dict[str, float]:
    """Time of ingesting batch #1 and batch #N into a home that grows one batch at a time.

    With ``subjects`` > 1 the batches go round-robin to that many subjects; with
    ``compact_every`` the home is compacted (untimed) after every that many batches, as the
    daily task would.
    """
    from runtime_facts.config import Settings
    from runtime_facts.home import Home
    from runtime_facts.ops.compact import compact
    from runtime_facts.pipeline.ingest import ingest
    from runtime_facts.pipeline.publish import write_metrics
    from runtime_facts.subject import SubjectContext

    files = _dataset(cfg, events=cfg.growth_batches * cfg.growth_events,
                     per_chunk=cfg.growth_events, seed=2)  # fmt: skip
    home = Home(Settings.load(str(scratch / f"growth-{subjects}")))
    times = []
    for i, f in enumerate(files):
        # Realistic digests: Delta statistics keep a string's first 64 characters only, so
        # digests with long common prefixes would hide every subject boundary.
        digest = "90" * 32 if subjects == 1 else hashlib.sha256(b"%d" % (i % subjects)).hexdigest()
        ctx = SubjectContext("bench", "cg-bench", image_digest="sha256:" + digest)
        sha = home.cas.put("runtime", f.read_bytes(), ctx).sha256
        start = time.perf_counter()
        ingest(home, [sha])
        write_metrics(home)  # as `runtime-facts ingest` does after every run
        times.append(time.perf_counter() - start)
        if compact_every and (i + 1) % compact_every == 0:
            compact(home, vacuum=False)
    first = statistics.median(times[:3])
    last = statistics.median(times[-3:])
    # The command's fixed cost (interpreter, imports, discovery, metrics): `runtime-facts
    # ingest` on the grown home with nothing pending. Whole commands cost it plus the batch.
    fixed = statistics.median(_child(_INGEST, str(home.root))[0] for _ in range(3))
    return {
        "batches": len(files),
        "subjects": subjects,
        "first_batches_s": round(first, 4),
        "last_batches_s": round(last, 4),
        "ratio_last_over_first": round(last / first, 3),
        "command_fixed_s": round(fixed, 4),
        "ratio_whole_command": round((fixed + last) / (fixed + first), 3),
    }


# The first run ingests one clean batch and names the heavy modules its path imported.
_IMPORTS = """
import json, sys
from runtime_facts.cli.main import main
out = sys.argv[2]
sys.argv = ["runtime-facts", "ingest", "--home", sys.argv[1], "--json"]
try:
    main()
except SystemExit as exit:
    heavy = ("polars", "numpy", "pyarrow", "pydantic", "duckdb", "deltalake")
    with open(out, "w") as handle:
        json.dump(sorted(name for name in heavy if name in sys.modules), handle)
    if exit.code:
        raise
"""


def _startup(cfg: BenchConfig, scratch: Path) -> dict[str, Any]:
    """`runtime-facts ingest` with nothing pending (a scheduled run that finds no new batch),
    the bare interpreter, and the heavy modules a clean batch's ingest imports."""
    files = _dataset(cfg, events=cfg.rss_events, per_chunk=cfg.rss_events, seed=4)
    home = scratch / "startup"
    _child(_STAGE, str(home), *map(str, files[:1]))
    with tempfile.NamedTemporaryFile(prefix="rf-imports-", suffix=".json") as out:
        _child(_IMPORTS, str(home), out.name)
        imported = json.loads(Path(out.name).read_text())
    runs = max(3, cfg.repeats + 2)
    return {
        "nothing_pending_s": round(statistics.median(
            _child(_INGEST, str(home))[0] for _ in range(runs)), 4),
        "interpreter_s": round(statistics.median(_child("pass")[0] for _ in range(runs)), 4),
        "clean_batch_imports": imported,
    }  # fmt: skip


def _rss(cfg: BenchConfig, scratch: Path) -> dict[str, float]:
    """Peak RSS of one ingest process for 1 batch, N batches and every growth batch at once."""
    files = _dataset(cfg, events=cfg.rss_batches * cfg.rss_events,
                     per_chunk=cfg.rss_events, seed=3)  # fmt: skip
    many = _dataset(cfg, events=cfg.growth_batches * cfg.growth_events,
                    per_chunk=cfg.growth_events, seed=2)  # fmt: skip
    out: dict[str, float] = {}
    for batch_files in (files[:1], files, many):
        home = scratch / f"rss-{len(batch_files)}"
        _child(_STAGE, str(home), *map(str, batch_files))
        _, rss = _child(_INGEST, str(home))
        out[f"peak_rss_mib_{len(batch_files)}_batches"] = round(rss, 1)
    return out


_LATTICE = """
import json, sys
from benchmarks.bench_lattice import run_lattice_sizes
sizes = json.loads(sys.argv[2])
result = run_lattice_sizes([tuple(s) for s in sizes], seed=7, repeats=int(sys.argv[3]))
with open(sys.argv[1], "w") as out:
    json.dump(result, out)
"""


def _lattice(cfg: BenchConfig) -> dict[str, float]:
    """Both graph sizes in one child process of their own, their timed runs alternating."""
    with tempfile.NamedTemporaryFile(prefix="rf-lattice-", suffix=".json") as out:
        _child(_LATTICE, out.name, json.dumps(cfg.lattice), str(cfg.lattice_repeats))
        runs = json.loads(Path(out.name).read_text())
    totals = [r["total_s"] for r in runs]
    return {
        "small": cfg.lattice[0][0],
        "repeats": cfg.lattice_repeats,
        "small_s": round(totals[0], 3),
        "large_s": round(totals[1], 3),
        "ratio_double_over_single": round(totals[1] / totals[0], 3),
        "detail": runs,  # type: ignore[dict-item]
    }


def as_dict(result: BenchResult) -> dict[str, Any]:
    """JSON-friendly form."""
    return asdict(result)
