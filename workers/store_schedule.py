"""The schedule: due sends for the dispatcher, date and inactivity scans, cancellation."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

from flows.planning import PlannedSend
from workers.store_base import Enqueue, Row, StoreBase

_CONTACT_VIEW = (
    "id, email, locale, timezone, attributes, opt_in, purchases, total_spent::text AS total_spent,"
    " last_purchase_at, last_activity_at"
)


class ScheduleStore(StoreBase):
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
            return self._insert_sends(conn, planned, contact_id, payload=payload)[0]

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
