"""Ingesting an event: record it, upsert its contact, apply exits and caps, record its sends."""

from __future__ import annotations

from datetime import timedelta

from psycopg import Connection
from psycopg.types.json import Jsonb

from events.envelope import Event
from flows.planning import EventPlan
from workers.store_base import Enqueue, IngestResult, Row, StoreBase

OPT_IN_EVENT = "marketing_opt_in"
"""The event type that re-subscribes a contact who unsubscribed (with ``contact.opt_in: true``)."""

_UPSERT_CONTACT = """
INSERT INTO contacts AS c (id, email, locale, timezone, attributes, opt_in, last_activity_at,
                           profile_at, purchases, total_spent, last_purchase_at)
VALUES (%(id)s, %(email)s, %(locale)s, %(timezone)s, %(attributes)s, coalesce(%(opt_in)s, false),
        %(at)s, %(at)s, %(bought)s, %(spent)s::numeric, CASE WHEN %(bought)s > 0 THEN %(at)s END)
ON CONFLICT (id) DO UPDATE SET
    -- A purchase counts whatever its age: it happened, even if its profile is stale.
    purchases  = c.purchases + excluded.purchases,
    total_spent = c.total_spent + excluded.total_spent,
    last_purchase_at = greatest(c.last_purchase_at, excluded.last_purchase_at),
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
RETURNING *, (SELECT reason FROM suppressions x WHERE x.email = lower(c.email)) AS suppressed
"""

# The contact's columns a claimed send's row carries, as LedgerStore.claim selects them
# (where the contact's locale is named contact_locale: the send has a locale of its own).
_CLAIM_CONTACT = ("email", "timezone", "attributes", "opt_in", "unsubscribed_at", "purchases", "total_spent",
                  "last_purchase_at", "last_activity_at", "suppressed")


class IngestStore(StoreBase):
    def ingest(self, event: Event, plan: EventPlan, *, claim_queues: frozenset[str] = frozenset()) -> IngestResult:
        """Record the event, upsert its contact and record its sends in one transaction.

        An event id seen before changes nothing; its sends still pending are returned so a
        message lost between commit and enqueue is enqueued again. Sends due now on one of
        ``claim_queues`` are recorded claimed, for the caller to deliver at once
        (``IngestResult.claimed``, rows as :meth:`LedgerStore.claim` returns them).
        """
        with self._tx() as conn:
            inserted = conn.execute(
                "INSERT INTO events (id, type, occurred_at, contact_id, payload)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING RETURNING payload, received_at",
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
            to_enqueue, claimed = self._insert_sends(conn, planned, event.contact.id, event_id=event.id,
                                                     claim_queues=claim_queues)
            rows = [{**send, "event": inserted["payload"], "received_at": inserted["received_at"],
                     **{column: contact[column] for column in _CLAIM_CONTACT},
                     "contact_locale": contact["locale"], "ambiguous_age_s": None} for send in claimed]
            return IngestResult(False, to_enqueue, len(planned), cancelled, rows)

    def known_events(self, event_ids: list[str]) -> set[str]:
        """Which of these events are in Postgres, ingested or dead-lettered."""
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT id FROM events WHERE id = ANY(%(ids)s)"
                " UNION SELECT ref FROM dead_letters WHERE kind = 'event' AND ref = ANY(%(ids)s)",
                {"ids": event_ids},
            ).fetchall()
        return {r["id"] for r in rows}

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
             "explicit": event.type == OPT_IN_EVENT, "bought": int(event.type == "purchase"),
             "spent": event.data.get("total", 0) if event.type == "purchase" else 0},
        ).fetchone()
        assert row is not None
        return row
