"""The send ledger: claiming a send before SES is called, and recording how it ended."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from workers.store_base import Enqueue, Row, StoreBase

_CLAIM = """
WITH claimed AS (
    UPDATE sends
       SET state = 'sending', attempts = attempts + 1, claimed_at = now(), updated_at = now(),
           -- Taking over a dead worker's claim: its SES call may have gone through.
           ambiguous_at = CASE WHEN state = 'sending' THEN coalesce(ambiguous_at, claimed_at) ELSE ambiguous_at END
     WHERE id = %(id)s
       AND (state IN ('pending', 'retry')
            OR (state = 'sending' AND claimed_at < now() - make_interval(secs => %(lease)s)))
 RETURNING *
)
SELECT s.*, coalesce(e.payload, s.payload) AS event, e.received_at,
       c.email, c.locale AS contact_locale, c.timezone, c.attributes, c.opt_in,
       c.unsubscribed_at, c.purchases, c.total_spent, c.last_purchase_at, c.last_activity_at,
       extract(epoch FROM now() - s.ambiguous_at)::float8 AS ambiguous_age_s,
       (SELECT reason FROM suppressions x WHERE x.email = lower(c.email)) AS suppressed
  FROM claimed s
  LEFT JOIN events e ON e.id = s.event_id
  JOIN contacts c ON c.id = s.contact_id
"""


class LedgerStore(StoreBase):
    def claim(self, send_id: str) -> Row | None:
        """Take a send for delivery, with everything needed to render it; None if not ours."""
        with self._statement() as conn:
            return conn.execute(_CLAIM, {"id": send_id, "lease": self.lease_s}).fetchone()

    def lease_left(self, send_id: str) -> float | None:
        """Seconds until a claim held by another worker may be taken over; None if not claimed."""
        with self._statement() as conn:
            row = conn.execute(
                "SELECT greatest(0, extract(epoch FROM claimed_at + make_interval(secs => %s) - now()))"
                " AS left_s FROM sends WHERE id = %s AND state = 'sending'",
                (self.lease_s, send_id),
            ).fetchone()
        return None if row is None else float(row["left_s"])

    def mark_sent(self, send_id: str, ses_message_id: str, subject: str, locale: str) -> None:
        with self._statement() as conn:
            conn.execute(
                "UPDATE sends SET state = 'sent', ses_message_id = %s, subject = %s, locale = %s,"
                " sent_at = now(), reason = NULL, ambiguous_at = NULL, updated_at = now()"
                " WHERE id = %s AND state = 'sending'",
                (ses_message_id, subject, locale, send_id),
            )

    def mark_skipped(self, send_id: str, reason: str) -> None:
        with self._statement() as conn:
            conn.execute(
                "UPDATE sends SET state = 'skipped', reason = %s, updated_at = now() WHERE id = %s",
                (reason, send_id),
            )

    def mark_retry(self, send_id: str, reason: str, *, ambiguous: bool = False) -> None:
        """Back to ``retry``; ``ambiguous``: SES may have accepted it (look before sending again)."""
        with self._statement() as conn:
            conn.execute(
                "UPDATE sends SET state = 'retry', reason = %s, updated_at = now(),"
                " ambiguous_at = CASE WHEN %s THEN coalesce(ambiguous_at, now()) ELSE ambiguous_at END"
                " WHERE id = %s AND state = 'sending'",
                (reason, ambiguous, send_id),
            )

    def ses_accepted(self, send_id: str) -> str | None:
        """The SES message id of this send's Send notification, if SES published one."""
        with self._statement() as conn:
            row = conn.execute(
                "SELECT ses_message_id FROM reporting.email_events"
                " WHERE send_id = %s AND event_type = 'send' ORDER BY occurred_at LIMIT 1",
                (send_id,),
            ).fetchone()
        return None if row is None else str(row["ses_message_id"])

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
        with self._statement() as conn:
            conn.execute(
                "UPDATE sends SET state = 'scheduled', due_at = %s, reason = %s, attempts = attempts - 1,"
                " updated_at = now() WHERE id = %s AND state = 'sending'",
                (until, reason, send_id),
            )

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
