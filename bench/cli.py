"""``declic bench`` (and ``declic bench pipeline``): the pipeline benchmark on the command line.

:func:`register` adds the ``bench`` group to the main typer app, or reuses the one another
benchmark (``bench api``, ``bench reporting``) already registered, and gives it a callback so
that ``declic bench`` with no subcommand runs the pipeline benchmark.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console()

Events = Annotated[int, typer.Option("--events", help="Events per saturation run (Déclic)")]
BaselineEvents = Annotated[int | None, typer.Option(help="Events per saturation run of the baseline; default a third")]
JsonFile = Annotated[Path | None, typer.Option("--json", help="Also write the figures as JSON to this file")]
Latency = Annotated[float, typer.Option("--latency-ms", help="The SES stand-in's answer latency")]
Repeats = Annotated[int, typer.Option(help="Saturation runs of Déclic; medians are reported")]
FixedRate = Annotated[float, typer.Option(help="Events/s offered in the fixed-load run")]
FixedSeconds = Annotated[float, typer.Option(help="Seconds of fixed load (0 skips it)")]
NoBaseline = Annotated[bool, typer.Option("--no-baseline", help="Measure Déclic only")]
PublishBatch = Annotated[int, typer.Option("--publish-batch", min=1, max=1000,
                                           help="Déclic's events per publication, as the API's batch endpoint"
                                                " (1: one at a time, as the SDK's publish)")]


def run(events: int = 2000, json_path: Path | None = None, latency_ms: float = 50.0, *,
        baseline_events: int | None = None, repeats: int = 3, fixed_rate: float = 300.0, fixed_s: float = 5.0,
        no_baseline: bool = False, publish_batch: int = 1) -> None:
    """Run the pipeline benchmark, print its table, and write the JSON when asked."""
    from bench.pipeline import run_pipeline_bench, write_json

    report = run_pipeline_bench(events=events, baseline_events=baseline_events, repeats=repeats,
                                latency_ms=latency_ms, fixed_rate=fixed_rate, fixed_s=fixed_s,
                                baseline=not no_baseline, publish_batch=publish_batch)
    console.print(report.table())
    if json_path is not None:
        write_json(report, json_path)
        console.print(f"wrote {json_path}")


def register(app: typer.Typer) -> None:
    """Add ``declic bench`` and ``declic bench pipeline`` to ``app``."""
    bench = next((g.typer_instance for g in app.registered_groups if g.name == "bench" and g.typer_instance), None)
    if bench is None:
        bench = typer.Typer(help="Benchmarks.")
        app.add_typer(bench, name="bench")

    # Set on the callback, which takes precedence over a group created with no_args_is_help.
    @bench.callback(invoke_without_command=True, no_args_is_help=False)
    def bench_default(
        ctx: typer.Context, events: Events = 2000, json_path: JsonFile = None, latency_ms: Latency = 50.0,
        baseline_events: BaselineEvents = None, repeats: Repeats = 3, fixed_rate: FixedRate = 300.0,
        fixed_s: FixedSeconds = 5.0, no_baseline: NoBaseline = False, publish_batch: PublishBatch = 1,
    ) -> None:
        """Benchmarks; with no subcommand, the whole pipeline against a naive baseline."""
        if ctx.invoked_subcommand is None:
            run(events, json_path, latency_ms, baseline_events=baseline_events, repeats=repeats,
                fixed_rate=fixed_rate, fixed_s=fixed_s, no_baseline=no_baseline, publish_batch=publish_batch)

    @bench.command("pipeline")
    def bench_pipeline(
        events: Events = 2000, json_path: JsonFile = None, latency_ms: Latency = 50.0,
        baseline_events: BaselineEvents = None, repeats: Repeats = 3, fixed_rate: FixedRate = 300.0,
        fixed_s: FixedSeconds = 5.0, no_baseline: NoBaseline = False, publish_batch: PublishBatch = 1,
    ) -> None:
        """Producer → broker → real workers → SES stand-in → Postgres, beside a naive Celery baseline."""
        run(events, json_path, latency_ms, baseline_events=baseline_events, repeats=repeats,
            fixed_rate=fixed_rate, fixed_s=fixed_s, no_baseline=no_baseline, publish_batch=publish_batch)

    @bench.command("schedule")
    def bench_schedule(
        sends: Annotated[int, typer.Option(help="Scheduled sends to hold in Postgres")] = 1_000_000,
        due: Annotated[int, typer.Option(help="How many of them fall due during the run")] = 2_000,
        json_path: JsonFile = None,
    ) -> None:
        """A million future sends in Postgres: worker and dispatcher memory, lateness of due sends."""
        import json

        from bench.schedule import run_schedule_bench

        report = run_schedule_bench(sends=sends, due=due)
        console.print(report.table())
        if json_path is not None:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(report.as_json(), indent=2) + "\n", encoding="utf-8")
            console.print(f"wrote {json_path}")
