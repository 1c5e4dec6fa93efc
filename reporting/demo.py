"""The demo's reporting act: engagement for the emails just sent, through SQS, into the trends.

Called by ``declic demo`` once the catalogue's emails have reached the SES stand-in: simulate
what SES and recipients do with them (and, so the charts have a shape, a few weeks of
simulated history for the same flows), publish it all to the SES events queue, drain it the way
``declic.report.ingest`` does, aggregate, and return the trend table and the HTML report path.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.table import Table

from reporting.aggregate import aggregate
from reporting.db import connect_pool
from reporting.html import render_report
from reporting.ingest import Received, ingest
from reporting.insights import InsightSettings, recent
from reporting.simulator import from_send_requests, history, notifications, publish
from reporting.sqs import drain
from reporting.trend import trend_rows, trend_table


@dataclass(frozen=True)
class DemoReport:
    notifications: int
    stored: int
    table: Table
    html: Path
    insights: int


def play_engagement(
    services: Any, out: Path, *, history_days: int = 28, per_day: int = 300,
    insight_settings: InsightSettings | None = None,
) -> DemoReport:
    """Simulate, publish to SQS, drain, aggregate; write ``out/report.html``."""
    now = datetime.now(UTC)
    sent = from_send_requests(services.moto.send_requests(), sent_at=now)
    flows: dict[str, set[str]] = {}
    for message in sent:
        flows.setdefault(message.tags.get("flow", "unknown"), set()).add(message.tags.get("variant", "a"))
    past = history({f: sorted(v) for f, v in flows.items()}, days=history_days, per_day=per_day, end=now) \
        if history_days and flows else []
    today = notifications(sent, seed=2)
    sqs = services.moto.client("sqs")
    publish(sqs, services.moto.ses_queue_url, today)
    pool = connect_pool(services.database_url, max_size=2)
    try:
        # The history is only there to give the charts a shape: it goes straight to the same
        # ingest function. Today's notifications take the real path, through SQS.
        older = notifications(past, seed=1)
        for start in range(0, len(older), 2000):
            ingest(pool, [Received(body) for body in older[start:start + 2000]], source="simulated_history")
        drained = drain(pool, sqs, services.moto.ses_queue_url, wait_s=1, max_messages=len(today) + 100,
                        max_seconds=300)
        aggregate(pool, insight_settings=insight_settings)
        with pool.connection() as conn:
            rows = trend_rows(conn, days=1)
            chart_rows = trend_rows(conn, days=history_days + 7)
            found = recent(conn)
    finally:
        pool.close()
    out.mkdir(parents=True, exist_ok=True)
    html = out / "report.html"
    html.write_text(render_report(chart_rows, found, now), encoding="utf-8")
    return DemoReport(len(today), drained.stored, trend_table(rows), html, len(found))
