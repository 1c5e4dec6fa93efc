"""What every part of the Postgres store shares: the pool, transactions, ledger rows.

The store is split by concern — ingest, the send ledger, the schedule, consent and dead
letters — into mixins over this base; :class:`workers.store.Store` puts them together.
"""

from __future__ import annotations

import select
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Self

import psycopg
from psycopg import Connection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb, set_json_dumps
from psycopg_pool import ConnectionPool

from events.encoding import json_bytes
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
    cancelled: int = 0
    # Due-now sends recorded already claimed by this worker, as LedgerStore.claim returns them.
    claimed: list[Row] = field(default_factory=list)


def check_idle_connection(conn: Connection[Row]) -> None:
    """The pool's check, asking Postgres only when the idle connection's socket has news.

    A server that restarts or ends a session sends its FATAL notice and closes the socket, which
    makes the socket readable; a healthy idle connection has nothing to read. So the round trip
    of ConnectionPool.check_connection is paid only then, not on every checkout. A connection
    that dies unnoticed still fails its statement, which the task retries.
    """
    if conn.closed:
        raise psycopg.OperationalError("the connection is closed")
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    if poller.poll(0):
        ConnectionPool.check_connection(conn)


def _configure(conn: Connection[Row]) -> None:
    # jsonb parameters (event payloads, contact attributes) through orjson; json's exact
    # integers are kept for reading (orjson would read integers beyond 64 bits as floats).
    set_json_dumps(json_bytes, conn)


class StoreBase:
    """One instance (one connection pool) per process; every method is one short transaction."""

    def __init__(self, pool: ConnectionPool[Connection[Row]], lease_s: int = 120) -> None:
        self.pool = pool
        self.lease_s = lease_s

    @classmethod
    def connect(cls, database_url: str, *, max_size: int = 10, lease_s: int = 120) -> Self:
        pool: ConnectionPool[Connection[Row]] = ConnectionPool(
            database_url,
            min_size=1,
            max_size=max_size,
            # Autocommit: a one-statement write is one round trip (see _statement); several
            # statements still share one transaction (_tx).
            kwargs={"row_factory": dict_row, "autocommit": True},
            # A connection broken by a Postgres restart is replaced, not handed out.
            check=check_idle_connection,
            configure=_configure,
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

    @contextmanager
    def _statement(self) -> Iterator[Connection[Row]]:
        """For exactly one statement, atomic on its own: no BEGIN and COMMIT round trips."""
        with self.pool.connection() as conn:
            yield conn

    def _insert_sends(
        self, conn: Connection[Row], planned: Sequence[PlannedSend], contact_id: str, *,
        event_id: str | None = None, payload: dict[str, Any] | None = None,
        claim_queues: frozenset[str] = frozenset(),
    ) -> tuple[list[Enqueue], list[Row]]:
        """Record planned sends: those due now to put on their queues, and the one recorded
        already claimed (the first due now on one of ``claim_queues``) with its ledger row."""
        to_enqueue: list[Enqueue] = []
        claimed: list[Row] = []
        for send in planned:
            send_id = str(uuid.uuid4())
            # The first due-now send on claim_queues is claimed as it is recorded, as
            # LedgerStore.claim would: the caller delivers it right after commit.
            claim = send.state == "pending" and send.queue in claim_queues and not claimed
            row = conn.execute(
                "INSERT INTO sends (id, send_key, event_id, payload, contact_id, flow, step, variant,"
                " category, queue, state, reason, due_at, attempts, claimed_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
                " CASE WHEN %s THEN now() END)"
                f" ON CONFLICT (send_key) DO NOTHING RETURNING {'*' if claim else 'id'}",
                (send_id, send.send_key, event_id, None if payload is None else Jsonb(payload), contact_id,
                 send.flow, send.step, send.variant, send.category, send.queue,
                 "sending" if claim else send.state, send.reason, send.due_at, 1 if claim else 0, claim),
            ).fetchone()
            if row is None:
                continue
            if claim:
                claimed.append(row)
            elif send.state == "pending":
                to_enqueue.append(Enqueue(send_id, send.queue))
            elif send.state == "failed":
                self._dead_letter(conn, "send", send_id, send.flow, send.reason or "failed")
        return to_enqueue, claimed

    @staticmethod
    def _dead_letter(
        conn: Connection[Row], kind: str, ref: str | None, flow: str | None, reason: str,
        payload: Any = None,
    ) -> None:
        conn.execute(
            "INSERT INTO dead_letters (kind, ref, flow, reason, payload) VALUES (%s, %s, %s, %s, %s)",
            (kind, ref, flow, reason[:4000], None if payload is None else Jsonb(payload)),
        )
