"""The Postgres store: events, contacts, sends and dead letters (psycopg 3 with a pool).

Every method is one short transaction. The send ledger is the heart of the guarantees: a
send row is created under its unique ``send_key`` on ingest and *claimed* (``sending``)
before SES is called, so a redelivered message, a replay or a second worker cannot send it
again; a claim left behind by a dead worker may be taken over after ``lease_s`` seconds.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg import Connection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from events.envelope import Event
from flows.planning import EventPlan, PlannedSend

Row = dict[str, Any]

OPT_IN_EVENT = "marketing_opt_in"
"""The event type that re-subscribes a contact who unsubscribed (with ``contact.opt_in: true``)."""


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
    cancelled: int = 0


_CLAIM = """
WITH claimed AS (
    UPDATE sends
       SET state = 'sending', attempts = attempts + 1, claimed_at = now(), updated_at = now()
     WHERE id = %(id)s
       AND (state IN ('pending', 'retry')
            OR (state = 'sending' AND claimed_at < now() - make_interval(secs => %(lease)s)))
 RETURNING *
)
SELECT s.*, coalesce(e.payload, s.payload) AS event, e.received_at,
       c.email, c.locale AS contact_locale, c.timezone, c.attributes, c.opt_in,
       c.unsubscribed_at, c.purchases, c.total_spent, c.last_purchase_at, c.last_activity_at,
       (SELECT reason FROM suppressions x WHERE x.email = lower(c.email)) AS suppressed
  FROM claimed s
  LEFT JOIN events e ON e.id = s.event_id
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
    -- After an unsubscribe, only an explicit marketing_opt_in event newer than it opts the
    -- contact back in: a producer echoing its own stale "opt_in: true" must not undo it.
    opt_in     = CASE WHEN %(opt_in)s::boolean IS NOT NULL AND excluded.profile_at >= c.profile_at
                           AND (c.unsubscribed_at IS NULL
                                OR (%(explicit)s AND excluded.profile_at > c.unsubscribed_at))
                      THEN %(opt_in)s::boolean ELSE c.opt_in END,
    unsubscribed_at = CASE WHEN %(explicit)s AND %(opt_in)s::boolean AND excluded.profile_at > c.unsubscribed_at
                           THEN NULL ELSE c.unsubscribed_at END,
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


# What trigger conditions see of a contact in scans (the same names as in templates).
_CONTACT_VIEW = (
    "id, email, locale, timezone, attributes, opt_in, purchases, total_spent::text AS total_spent,"
    " last_purchase_at, last_activity_at"
)


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

    def ingest(self, event: Event, plan: EventPlan) -> IngestResult:
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
                    # 'sending' too: a worker that died holding the claim left no message behind.
                    "SELECT id::text AS id, queue FROM sends"
                    " WHERE event_id = %s AND state IN ('pending', 'retry', 'sending') AND due_at <= now()",
                    (event.id,),
                ).fetchall()
                return IngestResult(True, [Enqueue(r["id"], r["queue"]) for r in pending], 0)
            # The upsert locks the contact's row until commit, so concurrent events of one
            # contact are decided one after the other: caps and exits see each other's sends.
            contact = self._upsert_contact(conn, event)
            cancelled = self._apply_exits(conn, event, plan)
            planned = plan.sends(contact, self._recent_counts(conn, event.contact.id, plan.caps()))
            to_enqueue = self._insert_sends(conn, planned, event.contact.id, event_id=event.id)
            return IngestResult(False, to_enqueue, len(planned), cancelled)

    def _insert_sends(
        self, conn: Connection[Row], planned: Sequence[PlannedSend], contact_id: str, *,
        event_id: str | None = None, payload: dict[str, Any] | None = None,
    ) -> list[Enqueue]:
        to_enqueue: list[Enqueue] = []
        for send in planned:
            send_id = str(uuid.uuid4())
            row = conn.execute(
                "INSERT INTO sends (id, send_key, event_id, payload, contact_id, flow, step, variant,"
                " category, queue, state, reason, due_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (send_key) DO NOTHING RETURNING id",
                (send_id, send.send_key, event_id, None if payload is None else Jsonb(payload), contact_id,
                 send.flow, send.step, send.variant, send.category, send.queue, send.state, send.reason,
                 send.due_at),
            ).fetchone()
            if row is None:
                continue
            if send.state == "pending":
                to_enqueue.append(Enqueue(send_id, send.queue))
            elif send.state == "failed":
                self._dead_letter(conn, "send", send_id, send.flow, send.reason or "failed")
        return to_enqueue

    @staticmethod
    def _recent_counts(conn: Connection[Row], contact_id: str, caps: dict[str, timedelta]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for flow, window in caps.items():
            row = conn.execute(
                "SELECT count(*) AS n FROM sends WHERE contact_id = %s AND flow = %s"
                " AND created_at > now() - %s AND state NOT IN ('skipped', 'failed')",
                (contact_id, flow, window),
            ).fetchone()
            counts[flow] = int(row["n"]) if row else 0
        return counts

    @staticmethod
    def _apply_exits(conn: Connection[Row], event: Event, plan: EventPlan) -> int:
        flows = plan.exit_flows()
        if not flows:
            return 0
        pending = conn.execute(
            "SELECT s.id, s.flow, coalesce(e.payload, s.payload) AS trigger FROM sends s"
            " LEFT JOIN events e ON e.id = s.event_id"
            " WHERE s.contact_id = %s AND s.flow = ANY(%s) AND s.state IN ('scheduled', 'pending', 'retry')",
            (event.contact.id, flows),
        ).fetchall()
        doomed = [r["id"] for r in pending if plan.cancels(r["flow"], r["trigger"])]
        if doomed:
            conn.execute(
                "UPDATE sends SET state = 'skipped', reason = 'cancelled', updated_at = now()"
                " WHERE id = ANY(%s) AND state IN ('scheduled', 'pending', 'retry')",
                (doomed,),
            )
        return len(doomed)

    def _upsert_contact(self, conn: Connection[Row], event: Event) -> Row:
        c = event.contact
        row = conn.execute(
            _UPSERT_CONTACT,
            {"id": c.id, "email": c.email, "locale": c.locale, "timezone": c.timezone,
             "attributes": Jsonb(c.attributes), "opt_in": c.opt_in, "at": event.occurred_at,
             "explicit": event.type == OPT_IN_EVENT},
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

    def lease_left(self, send_id: str) -> float | None:
        """Seconds until a claim held by another worker may be taken over; None if not claimed."""
        with self._tx() as conn:
            row = conn.execute(
                "SELECT greatest(0, extract(epoch FROM claimed_at + make_interval(secs => %s) - now()))"
                " AS left_s FROM sends WHERE id = %s AND state = 'sending'",
                (self.lease_s, send_id),
            ).fetchone()
        return None if row is None else float(row["left_s"])

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

    def defer(self, send_id: str, until: datetime, reason: str) -> None:
        """Hand a claimed send back to the schedule (quiet hours): the dispatcher sends it then."""
        with self._tx() as conn:
            conn.execute(
                "UPDATE sends SET state = 'scheduled', due_at = %s, reason = %s, attempts = attempts - 1,"
                " updated_at = now() WHERE id = %s AND state = 'sending'",
                (until, reason, send_id),
            )

    # -- the schedule -----------------------------------------------------------------------

    def dispatch_due(self, limit: int = 500) -> list[Enqueue]:
        """Claim scheduled sends that are due and make them pending; enqueue the result.

        ``SKIP LOCKED`` lets several dispatchers run at once without taking the same rows.
        """
        with self._tx() as conn:
            rows = conn.execute(
                "UPDATE sends SET state = 'pending', updated_at = now() WHERE id IN ("
                "  SELECT id FROM sends WHERE state = 'scheduled' AND due_at <= now()"
                "  ORDER BY due_at LIMIT %s FOR UPDATE SKIP LOCKED)"
                " RETURNING id::text AS id, queue",
                (limit,),
            ).fetchall()
        return [Enqueue(r["id"], r["queue"]) for r in rows]

    def schedule(self, contact_id: str, planned: Sequence[PlannedSend], payload: dict[str, Any]) -> list[Enqueue]:
        """Record sends not caused by an event (dates, inactivity); their keys make them once-only."""
        with self._tx() as conn:
            return self._insert_sends(conn, planned, contact_id, payload=payload)

    def contacts_with_attribute(self, attribute: str, batch: int = 5000) -> Iterator[Row]:
        """Contacts holding a date attribute, streamed in batches by id."""
        last = ""
        while True:
            with self._tx() as conn:
                rows = conn.execute(
                    f"SELECT {_CONTACT_VIEW}, attributes ->> %s AS value FROM contacts"
                    " WHERE attributes ? %s AND id > %s ORDER BY id LIMIT %s",
                    (attribute, attribute, last, batch),
                ).fetchall()
            yield from rows
            if len(rows) < batch:
                return
            last = rows[-1]["id"]

    def inactive_contacts(self, flow: str, first_step: str, after: timedelta, limit: int = 5000) -> list[Row]:
        """Contacts inactive for ``after`` that this flow has not mailed in this inactive period.

        The period is named by the last activity's epoch second, as in the send key.
        """
        with self._tx() as conn:
            return conn.execute(
                f"SELECT {_CONTACT_VIEW} FROM contacts c"
                " WHERE c.last_activity_at < now() - %(after)s AND NOT EXISTS ("
                "   SELECT 1 FROM sends s WHERE s.send_key = 'inactive:' || c.id || ':'"
                "   || floor(extract(epoch FROM c.last_activity_at))::bigint || ':' || %(flow)s || ':' || %(step)s)"
                " ORDER BY c.last_activity_at LIMIT %(limit)s",
                {"after": after, "flow": flow, "step": first_step, "limit": limit},
            ).fetchall()

    def cancel_pending(self, *, event_id: str | None = None, contact_id: str | None = None) -> int:
        """Cancel what is still to send for an event or a contact; sent mail is untouched."""
        if (event_id is None) == (contact_id is None):
            raise ValueError("cancel by event_id or by contact_id, one of the two")
        column = "event_id" if event_id is not None else "contact_id"
        with self._tx() as conn:
            cursor = conn.execute(
                f"UPDATE sends SET state = 'skipped', reason = 'cancelled', updated_at = now()"
                f" WHERE {column} = %s AND state IN ('scheduled', 'pending', 'retry')",
                (event_id or contact_id,),
            )
            return cursor.rowcount

    # -- consent ----------------------------------------------------------------------------

    def unsubscribe(self, contact_id: str) -> bool:
        """Withdraw marketing consent at once and cancel marketing still pending."""
        with self._tx() as conn:
            row = conn.execute(
                "UPDATE contacts SET opt_in = false, unsubscribed_at = coalesce(unsubscribed_at, now()),"
                " updated_at = now() WHERE id = %s RETURNING id",
                (contact_id,),
            ).fetchone()
            conn.execute(
                "UPDATE sends SET state = 'skipped', reason = 'unsubscribed', updated_at = now()"
                " WHERE contact_id = %s AND category = 'marketing' AND state IN ('scheduled', 'pending', 'retry')",
                (contact_id,),
            )
            return row is not None

    def unsuppress(self, email: str) -> bool:
        with self._tx() as conn:
            return conn.execute("DELETE FROM suppressions WHERE email = lower(%s)", (email,)).rowcount > 0

    def suppressions(self, limit: int = 1000) -> list[Row]:
        with self._tx() as conn:
            return conn.execute("SELECT * FROM suppressions ORDER BY created_at DESC LIMIT %s", (limit,)).fetchall()

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

    def sends_for_contacts(self, contact_ids: Sequence[str]) -> list[Row]:
        with self._tx() as conn:
            return conn.execute(
                "SELECT * FROM sends WHERE contact_id = ANY(%s) ORDER BY created_at, flow, step",
                (list(contact_ids),),
            ).fetchall()

    def stale_pending(self, older_than_s: int, limit: int = 1000) -> list[Enqueue]:
        """Sends due for a while that nobody took: their broker message was probably lost.

        Each one returned is stamped, so it is offered again only after another
        ``older_than_s``: a long backlog is not flooded with copies. A copy that does reach a
        worker finds the send already claimed and does nothing.
        """
        with self._tx() as conn:
            rows = conn.execute(
                "UPDATE sends SET updated_at = now() WHERE id IN ("
                "  SELECT id FROM sends"
                "   WHERE due_at <= now() AND ((state IN ('pending', 'retry')"
                "          AND updated_at < now() - make_interval(secs => %s))"
                "      OR (state = 'sending' AND claimed_at < now() - make_interval(secs => %s)))"
                "   ORDER BY due_at LIMIT %s FOR UPDATE SKIP LOCKED)"
                " RETURNING id::text AS id, queue",
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

