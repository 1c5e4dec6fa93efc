"""Consent, the suppression list and dead letters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from workers.store_base import Enqueue, Row, StoreBase


class ConsentStore(StoreBase):
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

    def suppress(self, email: str, reason: str, source: str | None = None) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO suppressions (email, reason, source) VALUES (lower(%s), %s, %s)"
                " ON CONFLICT (email) DO UPDATE SET reason = excluded.reason",
                (email, reason, source),
            )

    def unsuppress(self, email: str) -> bool:
        with self._tx() as conn:
            return conn.execute("DELETE FROM suppressions WHERE email = lower(%s)", (email,)).rowcount > 0

    def suppressions(self, limit: int = 1000) -> list[Row]:
        with self._tx() as conn:
            return conn.execute("SELECT * FROM suppressions ORDER BY created_at DESC LIMIT %s", (limit,)).fetchall()


class DeadLetterStore(StoreBase):
    def dead_letter_event(self, ref: str | None, reason: str, payload: Any) -> None:
        with self._tx() as conn:
            self._dead_letter(conn, "event", ref, None, reason, payload)

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
