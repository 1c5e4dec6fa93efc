"""`declic bench reporting` runs end to end on a tiny workload."""

from __future__ import annotations

import typer

from reporting.bench import run_bench
from reporting.cli import register
from reporting.db import Pool
from workers.store import Store


def test_bench_measures_both_paths_and_the_aggregation(pool: Pool, store: Store) -> None:
    """Both ingestion rates are measured, rows are multiplied to the target and aggregated twice."""
    result = run_bench(pool, notifications_n=300, baseline_n=50, aggregate_rows=2_000, batch=100)
    assert result.notifications == 300 and result.baseline_notifications == 50
    assert result.baseline_per_s > 0 and result.copy_per_s > 0
    assert result.aggregate_rows >= 2_000 and result.groups > 0
    assert result.aggregate_s > 0 and result.aggregate_again_s >= 0
    with pool.connection() as conn:  # the bench leaves the schema as it found it: empty
        assert conn.execute("SELECT count(*) AS n FROM reporting.email_events").fetchone() == {"n": 0}


def test_register_reuses_an_existing_bench_group() -> None:
    """Another developer's `bench` group is reused, not duplicated."""
    app = typer.Typer()
    bench = typer.Typer()
    app.add_typer(bench, name="bench")
    register(app)
    assert [g.name for g in app.registered_groups] == ["bench", "report"]
    assert [c.name for c in bench.registered_commands] == ["reporting"]
