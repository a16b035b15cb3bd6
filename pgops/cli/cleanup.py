"""`pgops cleanup`: run cleanup policies (or a one-off policy from options) and list the policies."""

from __future__ import annotations

import dataclasses

import typer
from rich.markup import escape

from pgops import cleanup, output
from pgops.cleanup.policy import describe_condition, one_off_policy, policy_summary, resolve_policies
from pgops.cleanup.runner import CleanupResult, RunOptions
from pgops.cli.app import FormatOption, app, duration_option, state
from pgops.config import INT4_MAX, INT8_MAX, CleanupPolicy
from pgops.db import connect
from pgops.errors import PgopsError
from pgops.sqltext import printable

cleanup_app = typer.Typer(help="Batched cleanup of expired rows without long locks.", no_args_is_help=True)
app.add_typer(cleanup_app, name="cleanup")


def _selected(
    policies: dict[str, CleanupPolicy], names: list[str], one_off: CleanupPolicy | None
) -> dict[str, CleanupPolicy]:
    if one_off is not None:
        if names:
            raise PgopsError("give either policy names or --table, not both")
        return {one_off.table: one_off}
    unknown = [n for n in names if n not in policies]
    if unknown:
        raise PgopsError(f"no cleanup policy {unknown[0]} (known: {', '.join(policies) or 'none'})")
    return {n: policies[n] for n in names} if names else policies


def _render(results: list[CleanupResult], fmt: output.Format) -> None:
    if fmt is output.Format.json:
        output.print_json(results)
        return
    if any(r.dry_run for r in results):
        rows = [
            (
                r.policy,
                r.table,
                r.status,
                r.reason,
                "" if r.would_delete is None else f"{r.would_delete:,}" + ("" if r.counted else " (estimate)"),
                ", ".join(sorted(set(r.walks.values()))),
            )
            for r in results
        ]
        output.console.print(
            output.table(
                "cleanup dry run",
                ["policy", "table", "status", "note", "would delete", "walk"],
                rows,
                keep=("policy", "status", "would delete"),
            )
        )
        for r in results:
            if r.plan:
                output.console.print(f"\n[bold]{escape(printable(r.policy))}[/] batch plan:", highlight=False)
                output.console.print(r.plan, markup=False, highlight=False)
    else:
        rows = [
            (
                r.policy,
                r.table,
                r.status,
                r.reason,
                f"{r.rows_deleted:,}",
                r.batches,
                output.human_duration(r.seconds),
                f"{r.rows_per_second:,.0f}",
                output.human_duration(r.throttled_seconds) if r.throttled else "",
                "" if r.rows_left is None else f"~{r.rows_left:,}",
            )
            for r in results
        ]
        columns = ["policy", "table", "status", "note", "rows", "batches", "time", "rows/s", "paused", "left"]
        output.console.print(output.table("cleanup", columns, rows, keep=("policy", "status", "rows")))
    for r in results:
        for message in [*r.warnings, *(f"whole partition expired: {a}" for a in r.expired_partitions)]:
            output.err_console.print(f"pgops: warning: {r.policy}: {message}", markup=False, highlight=False)


@cleanup_app.command("run")
def run(
    ctx: typer.Context,
    names: list[str] = typer.Argument(
        None, metavar="POLICY", help="Policies to run (default: all, ready-made ones included)."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Count (or estimate) what would go and show the plan."),
    table: str | None = typer.Option(None, "--table", help="One-off policy: SCHEMA.TABLE."),
    expired_column: str | None = typer.Option(None, "--expired-column", help="Rows go when COLUMN < now()."),
    older_than: str | None = typer.Option(
        None, "--older-than", metavar="COLUMN=INTERVAL", help="Rows go when COLUMN < now() - INTERVAL (e.g. 30d)."
    ),
    where: str | None = typer.Option(None, "--where", help="One-off policy: an extra SQL predicate."),
    batch_size: int | None = typer.Option(
        None, "--batch-size", min=1, max=INT4_MAX, help="First batch size (then adapts)."
    ),
    pause: str | None = typer.Option(None, "--pause", help="Pause between batches, e.g. 50ms."),
    max_runtime: str | None = typer.Option(None, "--max-runtime", help="Stop each policy after this long."),
    max_rows: int | None = typer.Option(
        None, "--max-rows", min=1, max=INT8_MAX, help="Stop each policy after this many rows."
    ),
    fmt: output.Format = FormatOption,
) -> None:
    """Delete expired rows in short batches; exit 1 when a policy warned (missing index) or hit its limits."""
    st = state(ctx)
    one_off = None
    if table is not None:
        one_off = one_off_policy(table, expired_column=expired_column, older_than=older_than, where=where)
    elif expired_column or older_than or where:
        raise PgopsError("--expired-column, --older-than and --where need --table")
    policies = _selected(resolve_policies(st.settings) if one_off is None else {}, names or [], one_off)
    overrides = {
        "batch_size": batch_size,
        "pause": duration_option(pause, "--pause"),
        "max_runtime": duration_option(max_runtime, "--max-runtime"),
        "max_rows": max_rows,
    }
    overrides = {key: value for key, value in overrides.items() if value is not None}
    policies = {name: dataclasses.replace(policy, **overrides) for name, policy in policies.items()}
    # the chosen policies become the settings' only ones: `prepare` plans exactly those
    chosen = dataclasses.replace(st.settings.cleanup, policies=policies, ready_made=[])
    settings = dataclasses.replace(st.settings, cleanup=chosen)
    with connect(st.dsn, settings.database) as conn:
        plan = dataclasses.replace(cleanup.prepare(conn, settings), options=RunOptions(dry_run=dry_run))
        result = cleanup.run(conn, plan, output.Bars())
    _render(list(result.results), fmt)
    raise typer.Exit(result.outcome.exit_code)


@cleanup_app.command("list")
def list_policies(ctx: typer.Context, fmt: output.Format = FormatOption) -> None:
    """The policies `cleanup run` would run: configured and ready-made, with their conditions and schedules."""
    policies = resolve_policies(state(ctx).settings)
    if fmt is output.Format.json:
        output.print_json({name: policy_summary(policy) for name, policy in policies.items()})
        return
    rows = [
        (name, p.table, describe_condition(p), p.schedule, p.database or "", "yes" if p.if_exists else "")
        for name, p in policies.items()
    ]
    columns = ["policy", "table", "condition", "schedule", "database", "if exists"]
    output.console.print(output.table("cleanup policies", columns, rows, keep=("policy",)))
