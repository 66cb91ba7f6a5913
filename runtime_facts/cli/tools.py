"""`generate` (realistic batches) and `bench` (the product against a bare DuckDB query)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import orjson
import typer

from runtime_facts.cli.common import JsonOpt, handles_errors, is_tty, state


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("generate")(generate_cmd)
    app.command("bench")(bench_cmd)


@handles_errors
def generate_cmd(
    ctx: typer.Context,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the .ndjson.gz chunks.")],
    events: Annotated[int, typer.Option(help="Number of events.")] = 10_000,
    symbols: Annotated[int, typer.Option(help="Symbol pool size (Zipf-skewed).")] = 2_000,
    code_ids: Annotated[int, typer.Option("--code-ids", help="Code id pool size.")] = 50,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
    events_per_chunk: Annotated[
        int | None, typer.Option("--events-per-chunk", help="At most this many events a chunk.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Generate realistic batches deterministically (same seed, same bytes).

    Example: runtime-facts generate --out /tmp/batches --events 100000
    """
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from runtime_facts.generate import GeneratorSpec, generate_batches

    st = state(ctx)
    as_json = st.wants_json(json_out)
    spec = GeneratorSpec(
        events=events,
        symbols=symbols,
        code_ids=code_ids,
        seed=seed,
        events_per_chunk=events_per_chunk,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    with Progress(
        SpinnerColumn(),
        TextColumn("generating {task.fields[events]:,} events: {task.completed} chunks written"),
        TimeElapsedColumn(),
        console=st.err,
        disable=as_json or not is_tty(),
        transient=True,
    ) as progress:
        task = progress.add_task("generate", total=None, events=events)
        for i, chunk in enumerate(generate_batches(spec)):
            path = out_dir / f"batch-{seed}-{i:05d}.ndjson.gz"
            path.write_bytes(chunk)
            paths.append(str(path))
            progress.advance(task)
    if as_json:
        st.emit({"files": paths})
    else:
        st.out.print(f"wrote {len(paths)} chunks to {out_dir}", highlight=False)


@handles_errors
def bench_cmd(
    ctx: typer.Context,
    quick: Annotated[bool, typer.Option("--quick", help="Tiny sizes (smoke test).")] = False,
    out_file: Annotated[Path | None, typer.Option("--out", help="Also write JSON here.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Benchmark ingest against a bare DuckDB query, table growth, memory and the lattice.

    Example: runtime-facts bench --out bench.json
    """
    from rich.table import Table

    from runtime_facts.bench import BenchConfig, as_dict, run_bench

    st = state(ctx)
    quiet = st.wants_json(json_out)
    cfg = BenchConfig.quick() if quick else BenchConfig()

    def log(message: str) -> None:
        if not quiet:
            st.err.print(message, highlight=False)

    result = run_bench(cfg, log)
    doc = as_dict(result)
    if out_file is not None:
        out_file.write_text(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
    if quiet:
        st.emit(doc)
        return
    f = result.figures
    growth, rss, lattice = f["growth"], f["rss"], f["lattice"]
    spread, startup = f["growth_subjects"], f["startup"]
    table = Table("figure", "value", title=f"{result.events:,} events in {result.batches} batches")
    for name, value in [
        ("baseline (DuckDB) median", f"{f['baseline_median_s']} s"),
        ("product (ingest) median", f"{f['product_median_s']} s"),
        ("ratio product / baseline", f"{f['ratio_product_over_baseline']}x"),
        ("baseline events/s, MB/s", f"{f['baseline_events_per_s']:,}, {f['baseline_mb_per_s']}"),
        ("product events/s, MB/s", f"{f['product_events_per_s']:,}, {f['product_mb_per_s']}"),
        ("peak RSS baseline / product",
         f"{result.baseline_rss_mib:.0f} / {result.product_rss_mib:.0f} MiB"),
        (f"batch #{growth['batches']} / batch #1", f"{growth['ratio_last_over_first']}x"),
        ("the same as whole commands",
         f"{growth['ratio_whole_command']}x (fixed cost {growth['command_fixed_s']} s)"),
        (f"the same over {spread['subjects']} subjects, compacted",
         f"{spread['ratio_last_over_first']}x"),
        ("start-up: ingest with nothing pending",
         f"{startup['nothing_pending_s']} s (interpreter alone {startup['interpreter_s']} s)"),
        ("imported for a clean batch", ", ".join(startup["clean_batch_imports"]) or "none"),
        ("peak RSS by batch count",
         ", ".join(f"{k.split('_')[3]} batches: {v} MiB" for k, v in rss.items())),
        ("lattice 1x / 2x graph", f"{lattice['small_s']} s / {lattice['large_s']} s "
                                  f"({lattice['ratio_double_over_single']}x)"),
    ]:  # fmt: skip
        table.add_row(name, value)
    st.out.print(table)
