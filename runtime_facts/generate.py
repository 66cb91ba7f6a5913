"""Deterministic, seeded generator of realistic runtime-fact batches (demo, tests, benchmarks).

Symbols are Zipf-skewed over a fixed pool, code ids and loader bases come from a smaller
pool, timestamps are monotonic within a chunk, optional fields appear in realistic
proportions, and chunks are cut so none passes the compressed size cap.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import orjson

MIB = 1024 * 1024


@dataclass(frozen=True)
class GeneratorSpec:
    """What to generate."""

    events: int = 10_000
    symbols: int = 2_000
    code_ids: int = 50
    zipf_a: float = 1.2
    seed: int = 7
    start: datetime = datetime(2026, 11, 1, tzinfo=UTC)
    seconds_per_event: float = 0.05
    max_chunk_bytes: int = 10 * MIB
    events_per_chunk: int | None = None
    gzip_level: int = 6


def _symbol_pool(n: int, rng: np.random.Generator) -> list[str]:
    langs = ["java", "dotnet", "go", "python", "node", "native"]
    out = []
    for i in range(n):
        lang = langs[int(rng.integers(len(langs)))]
        pkg = f"com.example.svc{i % 97}.mod{i % 13}"
        out.append(f"sym:{lang}:{pkg}.Class{i // 7}::method{i}(Ljava/lang/String;)V")
    return out


def generate_events(spec: GeneratorSpec) -> Iterator[bytes]:
    """Yield NDJSON lines (bytes, newline-terminated) deterministically."""
    rng = np.random.default_rng(spec.seed)
    symbols = _symbol_pool(spec.symbols, rng)
    code_ids = [f"{int(x):040x}" for x in rng.integers(0, 2**62, size=spec.code_ids)]
    bases = [f"0x7f{int(x):010x}" for x in rng.integers(0, 2**38, size=spec.code_ids)]
    procs = ["java", "dotnet", "node", "python3", "envoy", "nginx"]
    containers = [f"{int(x):064x}" for x in rng.integers(0, 2**62, size=16)]
    block = 65_536
    emitted = 0
    clock = spec.start
    while emitted < spec.events:
        n = min(block, spec.events - emitted)
        ranks = rng.zipf(spec.zipf_a, size=n)
        sym_idx = (ranks - 1) % spec.symbols
        code_idx = sym_idx % spec.code_ids
        hits = rng.geometric(0.3, size=n)
        optional = rng.random((n, 5))
        pids = rng.integers(1, 65_535, size=n)
        steps = rng.exponential(spec.seconds_per_event, size=n)
        for i in range(n):
            clock += timedelta(seconds=float(steps[i]))
            c = int(code_idx[i])
            event: dict[str, object] = {
                "symbolId": symbols[int(sym_idx[i])],
                "hitCount": int(hits[i]),
                "codeId": code_ids[c],
                "loaderBase": bases[c],
                "observedAt": clock.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            }
            proc = procs[c % len(procs)]
            if optional[i, 0] < 0.5:
                event["process"] = {"id": int(pids[i]), "name": proc}
            elif optional[i, 0] < 0.8:
                event["processId"] = int(pids[i])
                event["processName"] = proc
            if optional[i, 1] < 0.7:
                event["containerId"] = containers[c % len(containers)]
            if optional[i, 2] < 0.3:
                event["evidenceUri"] = f"cas://reachability/evidence/{c:04d}"
            if optional[i, 3] < 0.2:
                event["purl"] = f"pkg:maven/com.example/svc{c % 97}@1.{c % 9}.0"
                event["buildId"] = code_ids[c][:32]
            if optional[i, 4] < 0.1:
                event["metadata"] = {"env": "prod", "region": "eu-west-1"}
            yield orjson.dumps(event) + b"\n"
        emitted += n


def generate_batches(spec: GeneratorSpec) -> Iterator[bytes]:
    """Yield gzip chunks, each under `max_chunk_bytes` compressed (and optionally N events)."""
    # Plan by uncompressed size with a safety margin; realistic NDJSON compresses 6-10x.
    budget = spec.max_chunk_bytes * 4
    lines: list[bytes] = []
    size = 0
    for line in generate_events(spec):
        if lines and (
            size + len(line) > budget
            or (spec.events_per_chunk is not None and len(lines) >= spec.events_per_chunk)
        ):
            yield from _compress(lines, spec)
            lines, size = [], 0
        lines.append(line)
        size += len(line)
    if lines:
        yield from _compress(lines, spec)


def _compress(lines: list[bytes], spec: GeneratorSpec) -> Iterator[bytes]:
    data = gzip.compress(b"".join(lines), compresslevel=spec.gzip_level, mtime=0)
    if len(data) <= spec.max_chunk_bytes or len(lines) == 1:
        yield data
        return
    half = len(lines) // 2
    yield from _compress(lines[:half], spec)
    yield from _compress(lines[half:], spec)
