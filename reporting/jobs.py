"""The reporting jobs wired to the settings: what ``declic report …`` and the Celery tasks call.

One pool per process, built on first use (never at import), so a forked worker builds its own.
"""

from __future__ import annotations

import threading

from declic.settings import Settings
from reporting.aggregate import AggregateResult, aggregate
from reporting.db import Pool, connect_pool
from reporting.insights import InsightSettings
from reporting.sqs import DrainResult, drain, sqs_client

_lock = threading.Lock()
_pools: dict[str, Pool] = {}


class NotConfigured(RuntimeError):
    """A setting the job needs is missing; the message names the variable."""


def pool_for(settings: Settings) -> Pool:
    with _lock:
        if settings.database_url not in _pools:
            _pools[settings.database_url] = connect_pool(settings.database_url, max_size=4)
        return _pools[settings.database_url]


def insight_settings(settings: Settings) -> InsightSettings:
    """Thresholds from the settings, and preheaders rendered from the flows' templates."""
    from reporting.copy import template_preheaders
    from workers.runtime import brand

    return InsightSettings(
        reset_threshold=settings.report_reset_threshold,
        min_delivered=settings.report_min_delivered,
        preheaders=template_preheaders(settings.flows_dir, settings.templates_dir, brand(settings)),
    )


def run_ingest(settings: Settings, *, max_seconds: float = 50.0, wait_s: int = 2) -> DrainResult:
    """Drain the SES events queue once (until empty or ``max_seconds``)."""
    if not settings.ses_queue_url:
        raise NotConfigured("DECLIC_SES_QUEUE_URL is not set: no SES events queue to drain")
    return drain(pool_for(settings), sqs_client(), settings.ses_queue_url, max_seconds=max_seconds, wait_s=wait_s)


def run_aggregate(settings: Settings, *, full: bool = False) -> AggregateResult:
    """Aggregate what was ingested since the last run (everything with ``full``)."""
    return aggregate(
        pool_for(settings), too_fast_s=settings.report_machine_open_s,
        reset_types=tuple(settings.report_reset_event_types), insight_settings=insight_settings(settings),
        full=full,
    )
