"""Celery tasks of the reporting side: drain the SES events queue, aggregate. Thin on purpose.

Schedule them with beat (see ``workers/app.py``): ``declic.report.ingest`` every minute and
``declic.report.aggregate`` every five. Postgres down: retried with backoff; the SQS messages
stay in the queue meanwhile (nothing is deleted before it is committed).
"""

from __future__ import annotations

import psycopg
import psycopg_pool

from declic.settings import get_settings
from reporting.jobs import run_aggregate, run_ingest
from workers.app import app

_DATABASE_DOWN = (psycopg.OperationalError, psycopg_pool.PoolTimeout)


@app.task(name="declic.report.ingest", ignore_result=True, autoretry_for=_DATABASE_DOWN,
          retry_backoff=2, retry_backoff_max=60, retry_jitter=True, max_retries=5)
def ingest_ses_events() -> int:
    """Drain the SES events queue for up to 50 s (beat runs it every minute); notifications stored."""
    return run_ingest(get_settings(), max_seconds=50.0).stored


@app.task(name="declic.report.aggregate", ignore_result=True, autoretry_for=_DATABASE_DOWN,
          retry_backoff=2, retry_backoff_max=60, retry_jitter=True, max_retries=5)
def aggregate_reports() -> int:
    """Recompute the trend tables for what changed; the number of (day, flow) groups recomputed."""
    return run_aggregate(get_settings()).groups
