"""`facts list` and `events tail`: read the cumulative facts and the outbox."""

from __future__ import annotations

from typing import Annotated

import typer

from runtime_facts.cli.common import HomeOpt, JsonOpt, handles_errors, new_typer, state

app = new_typer(help="Read cumulative runtime facts.")
events_app = new_typer(help="Read the signals.fact.updated.v1 outbox.")

FACT_COLUMNS = [
    "symbol_id", "code_id", "loader_base", "hit_count", "event_count", "batch_count",
    "first_observed_at", "last_observed_at",
]  # fmt: skip


@app.command("list")
@handles_errors
def facts_list(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Option(help="Tenant.")],
    subject: Annotated[
        str, typer.Option(help="Subject key: image:<digest>, scan:<id> or component:<name>@<ver>.")
    ],
    limit: Annotated[
        int | None,
        typer.Option("--limit", "-n", min=1, help="Show only the first N keys (in key order)."),
    ] = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List the cumulative facts of one subject; exit 4 when the subject or home is unknown.

    Example: runtime-facts facts list --tenant acme --subject scan:s-42 --limit 20
    """
    from rich.table import Table

    from runtime_facts.ops.facts import list_facts

    st = state(ctx)
    facts = list_facts(st.open_home(home, must_exist=True), tenant, subject)
    total = facts.height
    if limit is not None:
        facts = facts.head(limit)
    if st.wants_json(json_out):
        st.emit(facts.to_dicts())
        return
    shown = f"{facts.height} of {total} keys" if facts.height < total else f"{total} keys"
    table = Table(title=f"{subject} ({shown})")
    for col in FACT_COLUMNS:
        table.add_column(col, overflow="fold")
    for row in facts.select(FACT_COLUMNS).iter_rows():
        table.add_row(*("" if v is None else str(v) for v in row))
    st.out.print(table)


@events_app.command("tail")
@handles_errors
def events_tail(
    ctx: typer.Context,
    n: Annotated[int, typer.Option("-n", help="How many of the latest events.")] = 20,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show the latest signals.fact.updated.v1 events from the outbox.

    Example: runtime-facts events tail -n 5
    """
    st = state(ctx)
    events = list(st.open_home(home, must_exist=True).outbox)[-n:] if n > 0 else []
    if st.wants_json(json_out):
        st.emit(events)
        return
    for e in events:
        st.out.print(
            f"{e['emitted_at']}  {e['tenant']}  {e['subject_key']}  {e['fact_kind']} "
            f"v{e['fact_version']}  {e['digest'][:23]}…  {e['event_id']}",
            highlight=False,
            markup=False,
        )
