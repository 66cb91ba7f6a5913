"""The `runtime-facts` command line (SPEC §9). Every command: --help, --json, stable exit codes."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from runtime_facts.config import Settings
from runtime_facts.errors import ExitCode, RuntimeFactsError
from runtime_facts.home import Home

app = typer.Typer(
    help="Runtime reachability evidence: stage batches in CAS, ingest them into Delta facts.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
cas_app = typer.Typer(
    help="Stage and verify objects in the content-addressed store.", no_args_is_help=True
)
facts_app = typer.Typer(help="Read cumulative runtime facts.", no_args_is_help=True)
app.add_typer(cas_app, name="cas")
app.add_typer(facts_app, name="facts")
events_app = typer.Typer(help="Read the signals.fact.updated.v1 outbox.", no_args_is_help=True)
app.add_typer(events_app, name="events")

out = Console(soft_wrap=True)
err = Console(stderr=True)

HomeOpt = Annotated[
    str | None,
    typer.Option("--home", help="Home directory (overrides the global --home)."),
]
GlobalHomeOpt = Annotated[
    str | None,
    typer.Option("--home", envvar="RUNTIME_FACTS_HOME", help="Home directory (default ./var)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


class State:
    """Options shared by every command."""

    home: str | None = None
    json: bool = False


STATE = State()


@app.callback()
def _main(home: GlobalHomeOpt = None, json_out: JsonOpt = False) -> None:
    STATE.home = home
    STATE.json = json_out


def _home(home: str | None) -> Home:
    return Home(Settings.load(home or STATE.home))


def _emit(doc: Any, json_out: bool) -> None:
    if json_out or STATE.json:
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2, default=str).decode() + "\n")


def _fail(exc: RuntimeFactsError, json_out: bool) -> None:
    if json_out or STATE.json:
        _emit({"error": exc.reason, "message": exc.message, "hint": exc.hint}, True)
    else:
        err.print(
            f"[bold red]error[/] {escape(f'[{exc.reason}]')} {escape(exc.message)}", highlight=False
        )
        if exc.hint:
            err.print(f"  [dim]hint:[/] {escape(exc.hint)}", highlight=False)
    raise typer.Exit(int(exc.exit_code))


@cas_app.command("put")
def cas_put(
    file: Annotated[
        Path, typer.Argument(help="A batch: .ndjson.gz, or .ndjson text (gzipped at staging).")
    ],
    tenant: Annotated[str, typer.Option(help="Tenant, lower-case [a-z0-9][a-z0-9._-]*.")],
    callgraph_id: Annotated[
        str, typer.Option("--callgraph-id", help="Callgraph the batch belongs to.")
    ],
    image_digest: Annotated[str | None, typer.Option("--image-digest")] = None,
    scan_id: Annotated[str | None, typer.Option("--scan-id")] = None,
    component: Annotated[str | None, typer.Option("--component")] = None,
    version: Annotated[str | None, typer.Option("--version")] = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Stage a batch in CAS and print its cas:// URI.

    Example: runtime-facts cas put batch.ndjson.gz --tenant acme --callgraph-id cg-1 --scan-id s-42
    """
    from runtime_facts.pipeline.stage import stage_batch
    from runtime_facts.subject import SubjectContext

    try:
        ctx = SubjectContext(tenant, callgraph_id, image_digest, scan_id, component, version)
        result = stage_batch(_home(home), file, ctx)
    except RuntimeFactsError as exc:
        _fail(exc, json_out)
        return
    if json_out or STATE.json:
        _emit(result.to_json(), True)
    else:
        sys.stdout.write(result.uri + "\n")
        if result.gzipped_here:
            err.print("[dim]plain NDJSON: staged gzip-compressed (the URI is of the gzip)[/]")
        if not result.created:
            err.print("[dim]already staged: nothing written[/]")


@cas_app.command("verify")
def cas_verify(
    digests: Annotated[
        list[str] | None, typer.Argument(help="Runtime batch digests to check.")
    ] = None,
    all_objects: Annotated[bool, typer.Option("--all", help="Rehash every object.")] = False,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Rehash CAS objects; exit 3 if any does not match its address.

    Example: runtime-facts cas verify --all
    """
    from runtime_facts.pipeline.stage import verify_cas

    h = _home(home)
    shas = None if all_objects or not digests else digests
    report = verify_cas(h, shas)
    if json_out or STATE.json:
        _emit({"checked": report.checked, "ok": report.ok, "bad": report.bad}, True)
    else:
        for kind, sha, reason in report.bad:
            err.print(f"[red]{reason}[/] cas://reachability/{kind}/{sha}", highlight=False)
        out.print(
            f"checked {report.checked} objects: {'ok' if report.ok else f'{len(report.bad)} bad'}"
        )
    raise typer.Exit(ExitCode.OK if report.ok else ExitCode.REJECTED)


@cas_app.command("put-graph")
def cas_put_graph(
    file: Annotated[
        Path, typer.Argument(help="A runtime-facts.callgraph.v1 JSON (gzip or plain).")
    ],
    tenant: Annotated[str, typer.Option(help="Tenant the graph belongs to.")],
    recompute: Annotated[
        bool, typer.Option("--recompute/--no-recompute", help="Re-score its subjects now.")
    ] = True,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Validate a callgraph, store it in CAS and make it current for its callgraphId.

    Example: runtime-facts cas put-graph graph.json.gz --tenant acme
    """
    from runtime_facts.pipeline.outcomes import utc_now
    from runtime_facts.pipeline.score import recompute as recompute_job
    from runtime_facts.stores.graphs import stage_graph

    h = _home(home)
    try:
        staged = stage_graph(h, file, tenant, utc_now())
        changed = (
            recompute_job(h, tenant, staged.callgraph_id, None, utc_now()).changed
            if recompute
            else []
        )
    except RuntimeFactsError as exc:
        _fail(exc, json_out)
        return
    if json_out or STATE.json:
        _emit({**staged.__dict__, "recomputed_subjects": changed}, True)
    else:
        sys.stdout.write(staged.uri + "\n")
        err.print(
            f"{staged.callgraph_id}: {staged.nodes} nodes, {staged.edges} edges; "
            f"{len(changed)} subject(s) re-scored",
            highlight=False,
        )


@app.command("recompute")
def recompute_cmd(
    tenant: Annotated[str, typer.Option(help="Tenant.")],
    callgraph_id: Annotated[str, typer.Option("--callgraph-id", help="Callgraph id.")],
    subject: Annotated[str | None, typer.Option(help="One subject key (default: all).")] = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Recompute reachability states; unchanged subjects are left alone and emit no event.

    Example: runtime-facts recompute --tenant acme --callgraph-id cg-1 --subject scan:s-42
    """
    from runtime_facts.pipeline.outcomes import utc_now
    from runtime_facts.pipeline.score import recompute

    try:
        result = recompute(_home(home), tenant, callgraph_id, subject, utc_now())
    except RuntimeFactsError as exc:
        _fail(exc, json_out)
        return
    if json_out or STATE.json:
        _emit(
            {"subjects": result.subjects, "changed": result.changed, "events": result.events}, True
        )
    else:
        out.print(
            f"{result.subjects} subject(s) recomputed, {len(result.changed)} changed",
            highlight=False,
        )


@events_app.command("tail")
def events_tail(
    n: Annotated[int, typer.Option("-n", help="How many of the latest events.")] = 20,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show the latest signals.fact.updated.v1 events from the outbox.

    Example: runtime-facts events tail -n 5
    """
    events = list(_home(home).outbox)[-n:] if n > 0 else []
    if json_out or STATE.json:
        _emit(events, True)
        return
    for e in events:
        out.print(
            f"{e['emitted_at']}  {e['tenant']}  {e['subject_key']}  {e['fact_kind']} "
            f"v{e['fact_version']}  {e['digest'][:23]}…  {e['event_id']}",
            highlight=False,
            soft_wrap=True,
        )


@app.command("ingest")
def ingest_cmd(
    from_kit: Annotated[
        Path | None, typer.Option("--from", help="Verify, load and ingest an offline kit.")
    ] = None,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's batches.")] = None,
    allow_partial: Annotated[
        bool, typer.Option("--allow-partial", help="Quarantine bad lines, ingest the rest.")
    ] = False,
    sealed: Annotated[
        bool, typer.Option("--sealed", help="Sealed mode: verified evidence only.")
    ] = False,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Ingest every staged batch not yet ingested (or an offline kit); exit 3 on any rejection.

    Example: runtime-facts ingest --tenant acme    ·    runtime-facts ingest --from ./kit
    """
    from runtime_facts.pipeline.ingest import ingest
    from runtime_facts.pipeline.outcomes import BatchOutcome
    from runtime_facts.pipeline.prepare import discover_pending

    h = _home(home)
    quiet = json_out or STATE.json
    try:
        todo = [] if from_kit is not None else discover_pending(h, tenant)
        with Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            disable=quiet or not todo,
            transient=True,
        ) as progress:
            task = progress.add_task("ingesting", total=len(todo))

            def tick(outcome: BatchOutcome) -> None:
                progress.advance(task)
                if outcome.status == "rejected" and not quiet:
                    err.print(
                        f"[yellow]rejected[/] {outcome.batch_sha256[:16]}… "
                        f"{escape(', '.join(outcome.reason_codes))}: {escape(str(outcome.detail))}",
                        highlight=False,
                    )

            if from_kit is not None:
                from runtime_facts.ops.offline import ingest_kit

                summary = ingest_kit(
                    h,
                    from_kit,
                    tenant=tenant,
                    sealed=sealed,
                    allow_partial=allow_partial or None,
                    on_batch=tick,
                )
            else:
                summary = ingest(
                    h,
                    todo,
                    tenant=tenant,
                    allow_partial=allow_partial or None,
                    sealed=sealed or None,
                    on_batch=tick,
                )
        from runtime_facts.pipeline.publish import write_metrics

        write_metrics(h)  # the Prometheus textfile, recomputed from the receipts (as the DAG does)
    except RuntimeFactsError as exc:
        _fail(exc, json_out)
        return
    if quiet:
        _emit(summary.to_dict(), True)
    else:
        out.print(
            f"batches {summary.batches} (accepted {summary.accepted}, rejected {summary.rejected}, "
            f"duplicate {summary.duplicate}) · events {summary.events} · keys {summary.keys} · "
            f"rejected lines {summary.rejected_lines}",
            highlight=False,
        )
    raise typer.Exit(ExitCode.REJECTED if summary.rejected else ExitCode.OK)


@facts_app.command("list")
def facts_list(
    tenant: Annotated[str, typer.Option(help="Tenant.")],
    subject: Annotated[str, typer.Option(help="Subject key, e.g. scan:s-42 or image:sha256:…")],
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List the cumulative facts of one subject.

    Example: runtime-facts facts list --tenant acme --subject scan:s-42
    """
    from runtime_facts.ops.facts import list_facts

    try:
        facts = list_facts(_home(home), tenant, subject)
    except RuntimeFactsError as exc:
        _fail(exc, json_out)
        return
    if json_out or STATE.json:
        _emit(facts.to_dicts(), True)
        return
    table = Table(title=f"{subject} ({facts.height} keys)")
    cols = ["symbol_id", "code_id", "loader_base", "hit_count", "event_count", "batch_count",
            "first_observed_at", "last_observed_at"]  # fmt: skip
    for col in cols:
        table.add_column(col, overflow="fold")
    for row in facts.select(cols).iter_rows():
        table.add_row(*("" if v is None else str(v) for v in row))
    out.print(table)


@app.command("compact")
def compact_cmd(
    no_vacuum: Annotated[bool, typer.Option("--no-vacuum", help="Only merge files.")] = False,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Merge small files, checkpoint the Delta logs and vacuum (never below 7 days).

    Example: runtime-facts compact
    """
    from runtime_facts.ops.compact import compact

    try:
        report = compact(_home(home), vacuum=not no_vacuum)
    except RuntimeFactsError as exc:
        _fail(exc, json_out)
        return
    if json_out or STATE.json:
        _emit(report.tables, True)
        return
    for name, t in report.tables.items():
        out.print(
            f"{name}: {t['files_before']} -> {t['files_after']} files, "
            f"{t['vacuumed']} vacuumed, version {t['version']}",
            highlight=False,
        )


@app.command("bench")
def bench_cmd(
    quick: Annotated[bool, typer.Option("--quick", help="Tiny sizes (smoke test).")] = False,
    out_file: Annotated[Path | None, typer.Option("--out", help="Also write JSON here.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Benchmark ingest against a bare DuckDB query, table growth, memory and the lattice.

    Example: runtime-facts bench --out bench.json
    """
    from runtime_facts.bench import BenchConfig, as_dict, run_bench

    quiet = json_out or STATE.json
    cfg = BenchConfig.quick() if quick else BenchConfig()

    def log(message: str) -> None:
        if not quiet:
            err.print(message, highlight=False)

    result = run_bench(cfg, log)
    doc = as_dict(result)
    if out_file is not None:
        out_file.write_text(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
    if quiet:
        _emit(doc, True)
        return
    f = result.figures
    growth, rss, lattice = f["growth"], f["rss"], f["lattice"]
    spread = f["growth_subjects"]
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
        (f"the same over {spread['subjects']} subjects, compacted",
         f"{spread['ratio_last_over_first']}x"),
        ("peak RSS by batch count",
         ", ".join(f"{k.split('_')[3]} batches: {v} MiB" for k, v in rss.items())),
        ("lattice 1x / 2x graph", f"{lattice['small_s']} s / {lattice['large_s']} s "
                                  f"({lattice['ratio_double_over_single']}x)"),
    ]:  # fmt: skip
        table.add_row(name, value)
    out.print(table)


@app.command("generate")
def generate_cmd(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the .ndjson.gz chunks.")],
    events: Annotated[int, typer.Option(help="Number of events.")] = 10_000,
    symbols: Annotated[int, typer.Option(help="Symbol pool size (Zipf-skewed).")] = 2_000,
    code_ids: Annotated[int, typer.Option("--code-ids", help="Code id pool size.")] = 50,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
    events_per_chunk: Annotated[int | None, typer.Option("--events-per-chunk")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Generate realistic batches deterministically (same seed, same bytes).

    Example: runtime-facts generate --out /tmp/batches --events 100000
    """
    from runtime_facts.generate import GeneratorSpec, generate_batches

    spec = GeneratorSpec(
        events=events,
        symbols=symbols,
        code_ids=code_ids,
        seed=seed,
        events_per_chunk=events_per_chunk,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, chunk in enumerate(generate_batches(spec)):
        path = out_dir / f"batch-{seed}-{i:05d}.ndjson.gz"
        path.write_bytes(chunk)
        paths.append(str(path))
    if json_out or STATE.json:
        _emit({"files": paths}, True)
    else:
        out.print(f"wrote {len(paths)} chunks to {out_dir}")


from runtime_facts.cli_offline import offline_app, receipts_app, replay_app  # noqa: E402

app.add_typer(offline_app, name="offline")
app.add_typer(receipts_app, name="receipts")
app.add_typer(replay_app, name="replay")

from runtime_facts.cli_serve import serve_app  # noqa: E402

app.add_typer(serve_app, name="serve")

from runtime_facts.cli_analyst import doctor_cmd, query_cmd, report_cmd, shell_cmd  # noqa: E402

app.command("query")(query_cmd)
app.command("shell")(shell_cmd)
app.command("report")(report_cmd)
app.command("doctor")(doctor_cmd)


def main() -> None:
    """Entry point with exit codes for unexpected errors."""
    if os.environ.get("RUNTIME_FACTS__LOG__FORMAT") or os.environ.get("RUNTIME_FACTS__LOG__LEVEL"):
        from runtime_facts.logs import configure_logging

        configure_logging()  # structured logs on stderr when an operator asks for them
    try:
        app()
    except RuntimeFactsError as exc:  # pragma: no cover - commands catch their own
        err.print(str(exc))
        sys.exit(int(exc.exit_code))
