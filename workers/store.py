"""The Postgres store: events, contacts, sends and dead letters (psycopg 3 with a pool).

Every method is one short transaction. The send ledger is the heart of the guarantees: a
send row is created under its unique ``send_key`` on ingest and *claimed* (``sending``)
before SES is called, so a redelivered message, a replay or a second worker cannot send it
again; a claim left behind by a dead worker may be taken over after ``lease_s`` seconds.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from psycopg import Connection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from events.envelope import Event
from flows.planning import PlannedSend

Row = dict[str, Any]


@dataclass(frozen=True)
class Enqueue:
    """A send due now, to put on its queue once the transaction has committed."""

    send_id: str
    queue: str


@dataclass(frozen=True)
class IngestResult:
    duplicate: bool
    to_enqueue: list[Enqueue]
    planned: int


_CLAIM = """
WITH claimed AS (
    UPDATE sends
       SET state = 'sending', attempts = attempts + 1, claimed_at = now(), updated_at = now()
     WHERE id = %(id)s
       AND (state IN ('pending', 'retry')
            OR (state = 'sending' AND claimed_at < now() - make_interval(secs => %(lease)s)))
 RETURNING *
)
SELECT s.*, e.payload AS event, e.received_at,
       c.email, c.locale AS contact_locale, c.timezone, c.attributes, c.opt_in,
       c.unsubscribed_at, c.purchases, c.total_spent, c.last_purchase_at, c.last_activity_at,
       (SELECT reason FROM suppressions x WHERE x.email = lower(c.email)) AS suppressed
  FROM claimed s
  JOIN events e ON e.id = s.event_id
  JOIN contacts c ON c.id = s.contact_id
"""

_UPSERT_CONTACT = """
INSERT INTO contacts AS c (id, email, locale, timezone, attributes, opt_in, last_activity_at,
                           profile_at)
VALUES (%(id)s, %(email)s, %(locale)s, %(timezone)s, %(attributes)s, coalesce(%(opt_in)s, false),
        %(at)s, %(at)s)
ON CONFLICT (id) DO UPDATE SET
    email      = CASE WHEN excluded.profile_at >= c.profile_at THEN excluded.email ELSE c.email END,
    locale     = CASE WHEN excluded.profile_at >= c.profile_at
                      THEN coalesce(excluded.locale, c.locale) ELSE c.locale END,
    timezone   = CASE WHEN excluded.profile_at >= c.profile_at
                      THEN coalesce(excluded.timezone, c.timezone) ELSE c.timezone END,
    attributes = CASE WHEN excluded.profile_at >= c.profile_at
                      THEN c.attributes || excluded.attributes
                      ELSE excluded.attributes || c.attributes END,
    opt_in     = CASE WHEN %(opt_in)s::boolean IS NOT NULL AND excluded.profile_at >= c.profile_at
                      THEN %(opt_in)s::boolean ELSE c.opt_in END,
    last_activity_at = greatest(c.last_activity_at, excluded.last_activity_at),
    profile_at = greatest(c.profile_at, excluded.profile_at),
    updated_at = now()
RETURNING *
"""

_COUNT_PURCHASE = """
UPDATE contacts SET purchases = purchases + 1, total_spent = total_spent + %(total)s,
       last_purchase_at = greatest(last_purchase_at, %(at)s)
 WHERE id = %(id)s
RETURNING *
"""


class Store:
    """All database access of the pipeline; one instance (one pool) per process."""

    def __init__(self, pool: ConnectionPool[Connection[Row]], lease_s: int = 120) -> None:
        self.pool = pool
        self.lease_s = lease_s

    @classmethod
    def connect(cls, database_url: str, *, max_size: int = 10, lease_s: int = 120) -> Store:
        pool: ConnectionPool[Connection[Row]] = ConnectionPool(
            database_url,
            min_size=1,
            max_size=max_size,
            kwargs={"row_factory": dict_row},
            # A connection broken by a Postgres restart is replaced, not handed out.
            check=ConnectionPool.check_connection,
            timeout=30,
            open=True,
        )
        return cls(pool, lease_s=lease_s)

    def close(self) -> None:
        self.pool.close()

    @contextmanager
    def _tx(self) -> Iterator[Connection[Row]]:
        with self.pool.connection() as conn, conn.transaction():
            yield conn

    # -- ingest -----------------------------------------------------------------------------

    def ingest(
        self, event: Event, plan: Callable[[Row], Sequence[PlannedSend]]
    ) -> IngestResult:
        """Record the event, upsert its contact and record its sends in one transaction.

        An event id seen before changes nothing; its sends still pending are returned so a
        message lost between commit and enqueue is enqueued again.
        """
        with self._tx() as conn:
            inserted = conn.execute(
                "INSERT INTO events (id, type, occurred_at, contact_id, payload)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING RETURNING id",
                (event.id, event.type, event.occurred_at, event.contact.id, Jsonb(event.to_json())),
            ).fetchone()
            if inserted is None:
                pending = conn.execute(
                    "SELECT id::text AS id, queue FROM sends"
                    " WHERE event_id = %s AND state IN ('pending', 'retry') AND due_at <= now()",
                    (event.id,),
                ).fetchall()
                return IngestResult(True, [Enqueue(r["id"], r["queue"]) for r in pending], 0)
            contact = self._upsert_contact(conn, event)
            planned = plan(contact)
            to_enqueue: list[Enqueue] = []
            for send in planned:
                send_id = str(uuid.uuid4())
                row = conn.execute(
                    "INSERT INTO sends (id, send_key, event_id, contact_id, flow, step, variant,"
                    " category, queue, state, reason, due_at)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (send_key) DO NOTHING RETURNING id",
                    (send_id, send.send_key, event.id, event.contact.id, send.flow, send.step,
                     send.variant, send.category, send.queue, send.state, send.reason,
                     send.due_at),
                ).fetchone()
                if row is None:
                    continue
                if send.state == "pending":
                    to_enqueue.append(Enqueue(send_id, send.queue))
                elif send.state == "failed":
                    self._dead_letter(conn, "send", send_id, send.flow, send.reason or "failed")
            return IngestResult(False, to_enqueue, len(planned))

    def _upsert_contact(self, conn: Connection[Row], event: Event) -> Row:
        c = event.contact
        row = conn.execute(
            _UPSERT_CONTACT,
            {"id": c.id, "email": c.email, "locale": c.locale, "timezone": c.timezone,
             "attributes": Jsonb(c.attributes), "opt_in": c.opt_in, "at": event.occurred_at},
        ).fetchone()
        if event.type == "purchase":
            row = conn.execute(
                _COUNT_PURCHASE,
                {"id": c.id, "total": event.data.get("total", 0), "at": event.occurred_at},
            ).fetchone()
        assert row is not None
        return row

    # -- the send ledger --------------------------------------------------------------------

    def claim(self, send_id: str) -> Row | None:
        """Take a send for delivery, with everything needed to render it; None if not ours."""
        with self._tx() as conn:
            return conn.execute(_CLAIM, {"id": send_id, "lease": self.lease_s}).fetchone()

    def mark_sent(self, send_id: str, ses_message_id: str, subject: str, locale: str) -> None:
        with self._tx() as conn:
            conn.execute(
                "UPDATE sends SET state = 'sent', ses_message_id = %s, subject = %s, locale = %s,"
                " sent_at = now(), reason = NULL, updated_at = now()"
                " WHERE id = %s AND state = 'sending'",
                (ses_message_id, subject, locale, send_id),
            )

    def mark_skipped(self, send_id: str, reason: str) -> None:
        with self._tx() as conn:
            conn.execute(
                "UPDATE sends SET state = 'skipped', reason = %s, updated_at = now() WHERE id = %s",
                (reason, send_id),
            )

    def mark_retry(self, send_id: str, reason: str) -> None:
        with self._tx() as conn:
            conn.execute(
                "UPDATE sends SET state = 'retry', reason = %s, updated_at = now()"
                " WHERE id = %s AND state = 'sending'",
                (reason, send_id),
            )

    def mark_failed(self, send_id: str, flow: str, reason: str) -> None:
        """A permanent failure: the send is dead and a dead letter says why."""
        with self._tx() as conn:
            conn.execute(
                "UPDATE sends SET state = 'failed', reason = %s, updated_at = now() WHERE id = %s",
                (reason, send_id),
            )
            self._dead_letter(conn, "send", send_id, flow, reason)

    # -- dead letters -----------------------------------------------------------------------

    def dead_letter_event(self, ref: str | None, reason: str, payload: Any) -> None:
        with self._tx() as conn:
            self._dead_letter(conn, "event", ref, None, reason, payload)

    @staticmethod
    def _dead_letter(
        conn: Connection[Row], kind: str, ref: str | None, flow: str | None, reason: str,
        payload: Any = None,
    ) -> None:
        conn.execute(
            "INSERT INTO dead_letters (kind, ref, flow, reason, payload) VALUES (%s, %s, %s, %s, %s)",
            (kind, ref, flow, reason[:4000], None if payload is None else Jsonb(payload)),
        )

    def dead_letters(
        self, *, include_replayed: bool = False, flow: str | None = None,
        reason: str | None = None, ids: Sequence[int] = (), limit: int = 100,
    ) -> list[Row]:
        clauses: list[str] = ["TRUE"]
        params: list[Any] = []
        if not include_replayed:
            clauses.append("replayed_at IS NULL")
        if flow:
            clauses.append("flow = %s")
            params.append(flow)
        if reason:
            clauses.append("reason ILIKE %s")
            params.append(f"%{reason}%")
        if ids:
            clauses.append("id = ANY(%s)")
            params.append(list(ids))
        with self._tx() as conn:
            return conn.execute(
                f"SELECT * FROM dead_letters WHERE {' AND '.join(clauses)} ORDER BY id LIMIT %s",
                (*params, limit),
            ).fetchall()

    def reopen_send(self, dead_letter_id: int, send_id: str) -> Enqueue | None:
        """Put a failed send back to pending for a replay; never one already sent."""
        with self._tx() as conn:
            row = conn.execute(
                "UPDATE sends SET state = 'pending', reason = NULL, attempts = 0, updated_at = now()"
                " WHERE id = %s AND state = 'failed' RETURNING id::text AS id, queue",
                (send_id,),
            ).fetchone()
            conn.execute("UPDATE dead_letters SET replayed_at = now() WHERE id = %s", (dead_letter_id,))
            return Enqueue(row["id"], row["queue"]) if row else None

    def mark_replayed(self, dead_letter_id: int) -> None:
        with self._tx() as conn:
            conn.execute("UPDATE dead_letters SET replayed_at = now() WHERE id = %s", (dead_letter_id,))

    # -- reading ----------------------------------------------------------------------------

    def sends_for_event(self, event_id: str) -> list[Row]:
        with self._tx() as conn:
            return conn.execute(
                "SELECT * FROM sends WHERE event_id = %s ORDER BY flow, step", (event_id,)
            ).fetchall()

    def stale_pending(self, older_than_s: int, limit: int = 1000) -> list[Enqueue]:
        """Sends due but not taken for a while: their broker message was lost; enqueue again."""
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT id::text AS id, queue FROM sends"
                " WHERE (state IN ('pending', 'retry') AND updated_at < now() - make_interval(secs => %s))"
                "    OR (state = 'sending' AND claimed_at < now() - make_interval(secs => %s))"
                " ORDER BY due_at LIMIT %s",
                (older_than_s, self.lease_s, limit),
            ).fetchall()
        return [Enqueue(r["id"], r["queue"]) for r in rows]

    def suppress(self, email: str, reason: str, source: str | None = None) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO suppressions (email, reason, source) VALUES (lower(%s), %s, %s)"
                " ON CONFLICT (email) DO UPDATE SET reason = excluded.reason",
                (email, reason, source),
            )

