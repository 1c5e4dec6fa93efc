"""``declic bench`` on a tiny workload: both systems run end to end and the JSON has every figure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.pipeline import FIGURES, run_pipeline_bench, write_json

pytestmark = pytest.mark.e2e


def test_bench_runs_both_systems_and_writes_the_figures(tmp_path: Path) -> None:
    """A few dozen events through Déclic and the naive baseline give positive figures for each, and ratios."""
    report = run_pipeline_bench(events=30, baseline_events=20, repeats=1, fixed_rate=20, fixed_s=1,
                                services_mode="test", workdir=tmp_path, timeout_s=90)
    write_json(report, tmp_path / "bench.json")
    figures = json.loads((tmp_path / "bench.json").read_text())
    for system in ("pipeline", "baseline"):
        assert all(figures[system][key] > 0 for key in FIGURES), figures[system]
        assert figures[system]["complete"] is True
        # Every event causes at least one email, and each email's latency includes the 50 ms answer.
        assert figures[system]["saturation_emails"] >= figures[system]["saturation_events"]
        assert figures[system]["p50_ms"] >= 50
        assert 0 < figures[system]["standin_cpu_share"] < 1
        # The machine's CPU per email: at least the workers', the producer's and the stand-in's.
        machine = figures[system]["machine_cpu_ms_per_email"]
        assert machine["workers"] > 0 and machine["producer"] > 0 and machine["stand-in"] > 0
        assert machine["total"] >= machine["workers"] + machine["producer"]
        assert figures[system]["cpu_ceiling_emails_per_s"] > 0
    assert figures["ratios"]["emails_per_s"] > 0
    assert "emails/s (saturation)" in list(report.table().columns[0].cells)


def test_bench_publishes_in_batches_as_the_api_does(tmp_path: Path) -> None:
    """With --publish-batch the events travel as the batch endpoint sends them (declic.ingest_batch)
    and their emails as messages of several sends; every one still reaches the stand-in."""
    report = run_pipeline_bench(events=60, repeats=1, fixed_s=0, baseline=False, publish_batch=20,
                                services_mode="test", workdir=tmp_path, timeout_s=90)
    figures = report.as_json()
    assert figures["setup"]["publish_batch"] == 20 and "baseline" not in figures
    pipeline = figures["pipeline"]
    assert pipeline["complete"] is True and pipeline["saturation_emails"] >= pipeline["saturation_events"] == 60
