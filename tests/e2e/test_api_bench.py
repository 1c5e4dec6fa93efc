"""`declic bench api` on a tiny workload: it runs end to end and reports every case."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.bench import run_api_bench

pytestmark = pytest.mark.e2e


def test_bench_api_runs_on_a_tiny_workload(tmp_path: Path) -> None:
    """The benchmark starts its own services and processes and reports events/s for baseline, single and batch."""
    report = run_api_bench(events=40, batch_size=10, concurrency=4, repeats=1, clients=2, workdir=tmp_path)
    cases = [r.case for r in report.results]
    # Every call of every client process is counted: 40 single events, and 4 batches of 10.
    assert [r.calls for r in report.results] == [40, 40, 4]
    assert cases[0].startswith("baseline") and "POST /v1/events" in cases and any("batch" in c for c in cases)
    assert all(r.events_per_s > 0 and r.p50_ms > 0 for r in report.results)
    assert "accepted events/s" in [c.header for c in report.table().columns]
