"""``declic bench reporting``: ingestion throughput and aggregation time, with a baseline.

In one run, on the same database and the same simulated notifications:

1. **baseline** — what a naive consumer does: parse one notification, one ``INSERT`` per row,
   one commit per notification;
2. **Déclic** — :func:`reporting.ingest.ingest`: batches parsed, deduplicated and COPYed in one
   transaction each;
3. **aggregation** — the stored events multiplied up to ``aggregate_rows`` rows (copies with
   new message ids), then one full aggregation timed, then a second run that finds nothing to do.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg.types.json import Jsonb

from reporting.aggregate import aggregate
from reporting.db import Pool
from reporting.ingest import Received, ingest
from reporting.parse import parse_body
from reporting.simulator import history, notifications

FLOWS = {"order_confirmation": ("a",), "password_reset": ("a",), "shipping_confirmation": ("a",),
         "survey": ("a", "b"), "welcome": ("a", "b")}
TRUNCATE = ("TRUNCATE reporting.email_events, reporting.sns_messages, reporting.pending_days,"
            " reporting.flow_daily, reporting.flow_trends, reporting.insights, reporting.ingest_dead_letters,"
            " reporting.password_resets_daily, reporting.watermarks")

_ROW_INSERT = """
INSERT INTO reporting.email_events (event_key, event_type, occurred_at, sent_at, sent_day, ses_message_id,
    sns_message_id, recipient, send_id, flow, step, variant, subject, bounce_type, link, user_agent,
    ip_address, machine_reason, unsubscribed, detail, raw)
VALUES (%s, %s, %s, %s, (coalesce(%s, %s) AT TIME ZONE 'UTC')::date, %s, %s, %s, %s::uuid, %s, %s, %s, %s,
        %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT DO NOTHING
"""


@dataclass(frozen=True)
class BenchResult:
    notifications: int
    baseline_notifications: int
    baseline_per_s: float
    copy_per_s: float
    aggregate_rows: int
    aggregate_s: float
    aggregate_again_s: float
    groups: int

    @property
    def speedup(self) -> float:
        return self.copy_per_s / self.baseline_per_s if self.baseline_per_s else 0.0


def simulated_bodies(count: int, seed: int = 3) -> list[str]:
    """About ``count`` SQS bodies from a month of simulated sends."""
    days = 35
    per_day = max(1, count // (days * 4))
    bodies = notifications(history(FLOWS, days=days, per_day=per_day, end=datetime.now(UTC), seed=seed), seed=seed)
    while len(bodies) < count:
        per_day *= 2
        bodies = notifications(history(FLOWS, days=days, per_day=per_day, end=datetime.now(UTC), seed=seed), seed=seed)
    return bodies[:count]


def _row_at_a_time(pool: Pool, bodies: list[str]) -> float:
    started = time.perf_counter()
    with pool.connection() as conn:
        for body in bodies:
            _, events = parse_body(body)
            with conn.transaction():
                for e in events:
                    conn.execute("SELECT reporting.ensure_month(%s)", (e.occurred_at,))
                    conn.execute(_ROW_INSERT, (
                        e.event_key, e.event_type.value, e.occurred_at, e.sent_at, e.sent_at, e.occurred_at,
                        e.ses_message_id, e.sns_message_id, e.recipient, e.send_id, e.flow, e.step, e.variant,
                        e.subject, e.bounce_type, e.link, e.user_agent, e.ip_address, e.machine_reason,
                        e.unsubscribed, e.detail, Jsonb(e.raw),
                    ))
    return len(bodies) / (time.perf_counter() - started)


def _multiply(pool: Pool, target: int) -> int:
    """Copy the stored events (new message ids and keys) until there are ``target`` rows."""
    with pool.connection() as conn:
        have = int(_one(conn, "SELECT count(*) AS n FROM reporting.email_events"))
        copies = max(0, -(-target // max(have, 1)) - 1)
        if copies:
            conn.execute(
                """
                INSERT INTO reporting.email_events (event_key, event_type, occurred_at, sent_at, sent_day,
                    ses_message_id, recipient, flow, step, variant, subject, bounce_type, link, user_agent,
                    ip_address, machine_reason, unsubscribed, detail, raw)
                SELECT md5(event_key || g), event_type, occurred_at, sent_at, sent_day, ses_message_id || '-' || g,
                       recipient, flow, step, variant, subject, bounce_type, link, user_agent, ip_address,
                       machine_reason, unsubscribed, detail, raw
                  FROM reporting.email_events, generate_series(1, %s) AS g
                """,
                (copies,),
            )
            conn.commit()
        conn.execute("ANALYZE reporting.email_events")
        return int(_one(conn, "SELECT count(*) AS n FROM reporting.email_events"))


def _one(conn: Any, sql: str) -> Any:
    row = conn.execute(sql).fetchone()
    return row["n"]


def run_bench(pool: Pool, *, notifications_n: int = 20_000, baseline_n: int = 2_000,
              aggregate_rows: int = 1_000_000, batch: int = 500) -> BenchResult:
    """Run the three measures on an empty reporting schema (it is emptied first and after)."""
    bodies = simulated_bodies(notifications_n)
    with pool.connection() as conn:
        conn.execute(TRUNCATE)
    baseline = _row_at_a_time(pool, bodies[:baseline_n])
    with pool.connection() as conn:
        conn.execute(TRUNCATE)
    started = time.perf_counter()
    for start in range(0, len(bodies), batch):
        ingest(pool, [Received(b) for b in bodies[start:start + batch]], "bench")
    copy_rate = len(bodies) / (time.perf_counter() - started)
    rows = _multiply(pool, aggregate_rows)
    first = aggregate(pool, full=True)
    again = aggregate(pool)
    with pool.connection() as conn:
        conn.execute(TRUNCATE)
    return BenchResult(len(bodies), min(baseline_n, len(bodies)), baseline, copy_rate, rows,
                       first.seconds, again.seconds, first.groups)
