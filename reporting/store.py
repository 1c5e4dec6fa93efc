"""Writing normalised SES events to Postgres: one transaction per batch, rows by COPY.

A batch is written in one transaction so an SQS message can be deleted as soon as it commits:

1. SNS message ids are claimed in ``reporting.sns_messages``; a redelivered one is skipped
   before any work (a concurrent consumer holding the same id makes this one wait, then skip).
2. The month partitions the batch needs are created.
3. Rows are COPYed into a temporary table, then moved into ``reporting.email_events`` joined
   to their send (by the ``send_id`` tag, else by SES message id) — ``ON CONFLICT DO NOTHING``
   on the event key makes a duplicate notification harmless however it arrives.
4. In the same statement: the cohort days to re-aggregate are queued, hard bounces and
   complaints are added to ``suppressions`` (the list the send path checks), and an SES
   list-management opt-out marks the contact unsubscribed.
5. Bodies that could not be parsed go to ``reporting.ingest_dead_letters`` with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import Connection
from psycopg.types.json import Jsonb

from reporting.parse import EmailEvent

_STAGE = """
CREATE TEMP TABLE staged_events (
    event_key text, event_type text, occurred_at timestamptz, sent_at timestamptz,
    ses_message_id text, sns_message_id text, recipient text, send_tag text, flow text, step text,
    variant text, subject text, bounce_type text, bounce_subtype text, feedback_type text, link text,
    user_agent text, ip_address text, machine_reason text, unsubscribed boolean, detail text, raw jsonb
) ON COMMIT DROP
"""
_COLUMNS = (
    "event_key, event_type, occurred_at, sent_at, ses_message_id, sns_message_id, recipient, send_tag,"
    " flow, step, variant, subject, bounce_type, bounce_subtype, feedback_type, link, user_agent,"
    " ip_address, machine_reason, unsubscribed, detail, raw"
)

_MOVE = """
WITH staged AS (
    SELECT st.*,
           CASE WHEN st.send_tag ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                THEN st.send_tag::uuid END AS send_uuid
      FROM staged_events st
),
ins AS (
    INSERT INTO reporting.email_events AS e (
        event_key, event_type, occurred_at, sent_at, sent_day, ses_message_id, sns_message_id,
        recipient, send_id, contact_id, flow, step, variant, locale, subject, bounce_type,
        bounce_subtype, feedback_type, link, user_agent, ip_address, machine_reason, unsubscribed,
        detail, raw)
    SELECT st.event_key, st.event_type, st.occurred_at, st.sent_at,
           (coalesce(st.sent_at, st.occurred_at) AT TIME ZONE 'UTC')::date,
           st.ses_message_id, st.sns_message_id, st.recipient, coalesce(s.id, st.send_uuid), s.contact_id,
           coalesce(st.flow, s.flow), coalesce(st.step, s.step), coalesce(st.variant, s.variant),
           s.locale, coalesce(s.subject, st.subject), st.bounce_type, st.bounce_subtype,
           st.feedback_type, st.link, st.user_agent, st.ip_address, st.machine_reason,
           st.unsubscribed, st.detail, st.raw
      FROM staged st
      LEFT JOIN LATERAL (
          SELECT x.id, x.contact_id, x.flow, x.step, x.variant, x.locale, x.subject FROM (
              SELECT 1 AS o, id, contact_id, flow, step, variant, locale, subject
                FROM sends WHERE id = st.send_uuid
              UNION ALL
              SELECT 2, id, contact_id, flow, step, variant, locale, subject
                FROM sends WHERE ses_message_id = st.ses_message_id
          ) x ORDER BY x.o LIMIT 1
      ) s ON true
    ON CONFLICT (event_key, occurred_at) DO NOTHING
    RETURNING e.sent_day, e.flow, e.event_type, e.bounce_type, e.recipient, e.contact_id,
              e.unsubscribed, e.ses_message_id, e.occurred_at
),
pending AS (
    INSERT INTO reporting.pending_days (day, flow)
    SELECT DISTINCT sent_day, coalesce(flow, 'unknown') FROM ins
    ON CONFLICT DO NOTHING
),
suppressed AS (
    INSERT INTO suppressions (email, reason, source)
    SELECT DISTINCT ON (recipient) recipient,
           CASE WHEN event_type = 'complaint' THEN 'complaint' ELSE 'hard_bounce' END,
           'ses:' || ses_message_id
      FROM ins
     WHERE event_type = 'complaint' OR (event_type = 'bounce' AND bounce_type = 'permanent')
     ORDER BY recipient, (event_type = 'complaint') DESC
    ON CONFLICT (email) DO NOTHING
    RETURNING email
),
unsubscribed AS (
    UPDATE contacts c SET unsubscribed_at = u.at, updated_at = now()
      FROM (SELECT contact_id, min(occurred_at) AS at FROM ins
             WHERE unsubscribed AND contact_id IS NOT NULL GROUP BY contact_id) u
     WHERE c.id = u.contact_id AND c.unsubscribed_at IS NULL
    RETURNING c.id
)
SELECT (SELECT count(*) FROM ins) AS stored, (SELECT count(*) FROM suppressed) AS suppressed,
       (SELECT count(*) FROM unsubscribed) AS unsubscribed
"""


@dataclass(frozen=True)
class DeadLetter:
    """A body we could not understand, kept with the reason."""

    ref: str | None
    reason: str
    body: str


@dataclass(frozen=True)
class Written:
    stored: int
    duplicates: int
    suppressed: int
    unsubscribed: int


def claim_sns_ids(conn: Connection[Any], ids: Sequence[str]) -> set[str]:
    """Record SNS message ids; return those not seen before (the ones to process)."""
    if not ids:
        return set()
    rows = conn.execute(
        "INSERT INTO reporting.sns_messages (message_id) SELECT DISTINCT unnest(%s::text[])"
        " ON CONFLICT DO NOTHING RETURNING message_id",
        (list(ids),),
    ).fetchall()
    return {r["message_id"] for r in rows}


def write_events(conn: Connection[Any], events: Sequence[EmailEvent]) -> tuple[int, int, int]:
    """COPY the events in and move them to email_events; (stored, suppressed, unsubscribed)."""
    if not events:
        return 0, 0, 0
    months = sorted({e.occurred_at.replace(day=1, hour=0, minute=0, second=0, microsecond=0) for e in events})
    conn.execute("SELECT reporting.ensure_month(m) FROM unnest(%s::timestamptz[]) AS m", (months,))
    conn.execute(_STAGE)
    with conn.cursor() as cur, cur.copy(f"COPY staged_events ({_COLUMNS}) FROM STDIN") as copy:
        for e in events:
            copy.write_row((
                e.event_key, e.event_type.value, e.occurred_at, e.sent_at, e.ses_message_id,
                e.sns_message_id, e.recipient, e.send_id, e.flow, e.step, e.variant, e.subject,
                e.bounce_type, e.bounce_subtype, e.feedback_type, e.link, e.user_agent, e.ip_address,
                e.machine_reason, e.unsubscribed, e.detail, Jsonb(e.raw),
            ))
    row = conn.execute(_MOVE).fetchone()
    assert row is not None
    return int(row["stored"]), int(row["suppressed"]), int(row["unsubscribed"])


def write_dead_letters(conn: Connection[Any], source: str, letters: Sequence[DeadLetter]) -> None:
    if not letters:
        return
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO reporting.ingest_dead_letters (source, ref, reason, body) VALUES (%s, %s, %s, %s)",
            # NUL bytes cannot be stored in text; the rest of the body is kept as received.
            [(source, d.ref, d.reason[:2000], d.body.replace("\x00", "\\u0000")) for d in letters],
        )
