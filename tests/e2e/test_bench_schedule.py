"""``declic bench schedule`` on a tiny schedule: the due sends go out and every figure is measured."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.schedule import run_schedule_bench

pytestmark = pytest.mark.e2e


def test_schedule_bench_sends_what_falls_due_and_measures_memory(tmp_path: Path) -> None:
    report = run_schedule_bench(sends=2_000, due=20, services_mode="test", workdir=tmp_path, timeout_s=90)

    assert report.complete and report.sent == 20  # exactly the due ones; the rest stays scheduled
    assert report.worker_peak_rss_mb > 0 and report.dispatcher_peak_rss_mb > 0
    assert report.late_p50_ms >= 0 and report.late_max_ms >= report.late_p99_ms >= report.late_p50_ms
    assert report.table_mb > 0 and report.claim_query_ms > 0
    assert "worker peak memory (RSS)" in list(report.table().columns[0].cells)
