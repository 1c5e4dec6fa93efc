"""``declic report ingest|aggregate|trend|html`` and ``declic bench reporting``.

:func:`register` adds them to the main typer app (``declic/cli.py`` calls it). The ``bench``
group is shared with other benchmarks: an existing one is reused.
"""

from __future__ import annotations

import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from declic.settings import get_settings

console = Console(width=None if sys.stdout.isatty() else 180)
err = Console(stderr=True)

report_app = typer.Typer(help="SES notifications into trend tables: ingest, aggregate, read.", no_args_is_help=True)


@report_app.command("ingest")
def ingest_command(
    max_seconds: Annotated[float, typer.Option(help="Stop draining after this long")] = 50.0,
) -> None:
    """Drain the SES events queue (DECLIC_SES_QUEUE_URL) once, until it is empty."""
    from reporting.jobs import NotConfigured, run_ingest

    try:
        result = run_ingest(get_settings(), max_seconds=max_seconds)
    except NotConfigured as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc
    console.print(f"received {result.received}, stored {result.stored} event rows, {result.duplicates} duplicates,"
                  f" {result.dead_letters} dead letters, deleted {result.deleted} SQS messages")


@report_app.command("aggregate")
def aggregate_command(
    full: Annotated[bool, typer.Option("--full", help="Recompute every day, not only what changed")] = False,
) -> None:
    """Update flow_daily, flow_trends, password resets and insights from new events."""
    from reporting.jobs import run_aggregate

    result = run_aggregate(get_settings(), full=full)
    console.print(f"recomputed {result.groups} (day, flow) groups in {len(result.flows)} flows,"
                  f" {result.reset_days} password-reset days, {result.insights} insight changes"
                  f" in {result.seconds:.2f} s")


@report_app.command("trend")
def trend_command(
    flow: Annotated[str | None, typer.Option(help="Only this flow")] = None,
    days: Annotated[int, typer.Option(min=1, help="Days of data to show")] = 7,
) -> None:
    """Print the trend table: 7-day rates (human and raw opens), week-over-week change."""
    from reporting.jobs import pool_for
    from reporting.trend import trend_rows, trend_table

    with pool_for(get_settings()).connection() as conn:
        rows = trend_rows(conn, flow=flow, days=days)
    if not rows:
        console.print("no trend data yet: run `declic report ingest` then `declic report aggregate`")
        return
    console.print(trend_table(rows))


@report_app.command("html")
def html_command(
    out: Annotated[Path, typer.Option(help="The HTML file to write")] = Path("out/report.html"),
    days: Annotated[int, typer.Option(min=1, help="Days of data to chart")] = 35,
) -> None:
    """Write one self-contained HTML report: a chart per flow and the insights."""
    from reporting.html import render_report
    from reporting.insights import recent
    from reporting.jobs import pool_for
    from reporting.trend import trend_rows

    with pool_for(get_settings()).connection() as conn:
        rows = trend_rows(conn, days=days)
        insights = recent(conn, days=days)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_report(rows, insights, datetime.now(UTC)), encoding="utf-8")
    console.print(f"wrote {out} ({len({r['flow'] for r in rows})} flows, {len(insights)} insights)")


def bench_reporting(
    notifications: Annotated[int, typer.Option(help="Notifications to ingest")] = 20_000,
    baseline: Annotated[int, typer.Option(help="Notifications for the row-at-a-time baseline")] = 2_000,
    rows: Annotated[int, typer.Option(help="Event rows to aggregate")] = 1_000_000,
) -> None:
    """Notifications ingested per second (COPY vs row-at-a-time) and time to aggregate a million rows."""
    from declic.services import start_services
    from reporting.bench import run_bench
    from reporting.db import connect_pool
    from workers.migrate import migrate

    with tempfile.TemporaryDirectory(prefix="declic-bench-") as tmp, \
            start_services(Path(tmp), mode="test") as services:
        migrate(services.database_url)
        pool = connect_pool(services.database_url, max_size=2)
        try:
            result = run_bench(pool, notifications_n=notifications, baseline_n=baseline, aggregate_rows=rows)
        finally:
            pool.close()
    table = Table("measure", "value", title="declic bench reporting")
    table.add_row("baseline: row-at-a-time INSERT", f"{result.baseline_per_s:,.0f} notifications/s"
                  f" ({result.baseline_notifications:,} notifications)")
    table.add_row("Déclic: batched COPY", f"{result.copy_per_s:,.0f} notifications/s ({result.notifications:,})")
    table.add_row("speed-up", f"× {result.speedup:.1f}")
    table.add_row(f"aggregate {result.aggregate_rows:,} rows (full)",
                  f"{result.aggregate_s:.2f} s ({result.groups:,} day×flow groups)")
    table.add_row("aggregate again (nothing new)", f"{result.aggregate_again_s * 1000:.0f} ms")
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add ``report`` and ``bench reporting`` to the main command line."""
    app.add_typer(report_app, name="report")
    bench = next((g.typer_instance for g in app.registered_groups if g.name == "bench" and g.typer_instance), None)
    if bench is None:
        bench = typer.Typer(help="Benchmarks.", no_args_is_help=True)
        app.add_typer(bench, name="bench")
    bench.command("reporting")(bench_reporting)
