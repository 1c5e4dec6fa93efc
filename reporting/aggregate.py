"""The periodic aggregation: raw events into flow_daily, flow_trends, resets and insights.

Incremental: ingestion queues the cohort days it touched in ``reporting.pending_days`` (in
the same transaction as the rows), and one run recomputes exactly those (day, flow) groups from
the raw events — a late open for last Monday re-counts last Monday. Idempotent: a run claims
the queue in the transaction that rewrites the figures, so a second run finds nothing to do and
changes nothing; a crash rolls both back. Runs are serialised by an advisory lock.

Password resets come from the core ``events`` table, followed by a ``received_at`` watermark
re-read with a five-minute overlap (an event committed late by a slow transaction is not
missed; re-reading is harmless because the affected days are recomputed whole).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache
from pathlib import Path
from typing import Any

import structlog
from psycopg import Connection
from psycopg_pool import ConnectionPool

from reporting.insights import InsightSettings, refresh_insights

log = structlog.get_logger(__name__)

SQL_DIR = Path(__file__).parent / "sql"
_LOCK = 0x7265706F7274  # "report"
_OVERLAP = "5 minutes"


@cache
def statements(name: str) -> tuple[str, ...]:
    """The statements of ``sql/<name>.sql`` (a blank line after ``;`` separates them)."""
    text = (SQL_DIR / f"{name}.sql").read_text(encoding="utf-8")
    return tuple(s.strip() for s in text.split(";\n\n") if s.strip())


@dataclass(frozen=True)
class AggregateResult:
    groups: int
    flows: list[str]
    reset_days: int
    insights: int
    seconds: float


def aggregate(
    pool: ConnectionPool[Any], *, too_fast_s: float = 5.0, reset_types: tuple[str, ...] = ("password_reset",),
    insight_settings: InsightSettings | None = None, full: bool = False,
) -> AggregateResult:
    """Run one aggregation; ``full`` re-queues every cohort day first (after a rule change)."""
    started = time.monotonic()
    with pool.connection() as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
        if full:
            conn.execute(
                "INSERT INTO reporting.pending_days (day, flow)"
                " SELECT DISTINCT sent_day, coalesce(flow, 'unknown') FROM reporting.email_events"
                " ON CONFLICT DO NOTHING"
            )
        _backfill_joins(conn)
        groups, flows = _flow_tables(conn, too_fast_s)
        reset_days = _password_resets(conn, reset_types, full)
        insights = 0
        if groups or reset_days:
            insights = refresh_insights(conn, insight_settings or InsightSettings())
    result = AggregateResult(groups, flows, reset_days, insights, time.monotonic() - started)
    log.info("reporting_aggregated", groups=groups, flows=len(flows), reset_days=reset_days,
             insights=insights, seconds=round(result.seconds, 3))
    return result


def _backfill_joins(conn: Connection[Any]) -> None:
    """Join events that arrived before their send was marked sent (SES can be that fast).

    Their cohort is queued again so the figures pick up the flow, variant and locale.
    """
    conn.execute(
        """
        WITH joined AS (
            UPDATE reporting.email_events e
               SET send_id = s.id, contact_id = s.contact_id, flow = coalesce(e.flow, s.flow),
                   step = coalesce(e.step, s.step), variant = coalesce(e.variant, s.variant),
                   locale = s.locale, subject = coalesce(s.subject, e.subject)
              FROM sends s
             WHERE e.send_id IS NULL AND s.ses_message_id = e.ses_message_id
               AND e.received_at > now() - interval '2 days'
            RETURNING e.sent_day, e.flow
        )
        INSERT INTO reporting.pending_days (day, flow)
        SELECT DISTINCT sent_day, coalesce(flow, 'unknown') FROM joined
        ON CONFLICT DO NOTHING
        """
    )
    # Rows that moved from the 'unknown' flow need their old group recomputed too.
    conn.execute(
        "INSERT INTO reporting.pending_days (day, flow)"
        " SELECT DISTINCT day, 'unknown' FROM reporting.pending_days WHERE flow <> 'unknown'"
        "   AND EXISTS (SELECT 1 FROM reporting.flow_daily d WHERE d.day = pending_days.day AND d.flow = 'unknown')"
        " ON CONFLICT DO NOTHING"
    )


def _flow_tables(conn: Connection[Any], too_fast_s: float) -> tuple[int, list[str]]:
    conn.execute("CREATE TEMP TABLE todo_days (day date, flow text) ON COMMIT DROP")
    conn.execute(
        "WITH claimed AS (DELETE FROM reporting.pending_days RETURNING day, flow)"
        " INSERT INTO todo_days SELECT day, flow FROM claimed"
    )
    rows = conn.execute("SELECT count(*) AS n, array_agg(DISTINCT flow) AS flows FROM todo_days").fetchone()
    groups, flows = _value(rows, "n") or 0, sorted(_value(rows, "flows") or [])
    if not groups:
        return 0, []
    conn.execute("ANALYZE todo_days")
    for statement in statements("flow_daily"):
        conn.execute(statement, {"too_fast_s": too_fast_s})
    for statement in statements("flow_trends"):
        conn.execute(statement, {"flows": flows})
    conn.execute(
        "INSERT INTO reporting.watermarks AS w (name, rows, updated_at) VALUES ('flow_daily', %s, now())"
        " ON CONFLICT (name) DO UPDATE SET rows = w.rows + excluded.rows, updated_at = now()",
        (groups,),
    )
    return int(groups), flows


def _password_resets(conn: Connection[Any], types: tuple[str, ...], full: bool) -> int:
    row = conn.execute("SELECT position FROM reporting.watermarks WHERE name = 'password_resets'").fetchone()
    since: datetime | None = None if full or row is None else _value(row, "position")
    found = conn.execute(
        "SELECT array_agg(DISTINCT (occurred_at AT TIME ZONE 'UTC')::date) AS days, max(received_at) AS upto"
        "  FROM events WHERE type = ANY(%s)"
        f"   AND (%s::timestamptz IS NULL OR received_at > %s::timestamptz - interval '{_OVERLAP}')",
        (list(types), since, since),
    ).fetchone()
    days: list[date] = _value(found, "days") or []
    if not days:
        return 0
    # Only days whose figures can have changed: skip a re-read that found the same events.
    for statement in statements("password_resets"):
        conn.execute(statement, {"days": days, "types": list(types)})
    conn.execute(
        "INSERT INTO reporting.watermarks AS w (name, position, rows, updated_at)"
        " VALUES ('password_resets', %s, %s, now())"
        " ON CONFLICT (name) DO UPDATE SET position = greatest(w.position, excluded.position),"
        " rows = w.rows + excluded.rows, updated_at = now()",
        (_value(found, "upto"), len(days)),
    )
    return len(days)


def _value(row: Any, key: str) -> Any:
    return None if row is None else row[key]
