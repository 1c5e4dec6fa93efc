"""The Postgres store: events, contacts, sends and dead letters (psycopg 3 with a pool).

Every method is one short transaction. The send ledger is the heart of the guarantees: a
send row is created under its unique ``send_key`` on ingest and *claimed* (``sending``)
before SES is called, so a redelivered message, a replay or a second worker cannot send it
again; a claim left behind by a dead worker may be taken over after ``lease_s`` seconds.
"""

from __future__ import annotations

from workers.store_admin import ConsentStore, DeadLetterStore
from workers.store_base import Enqueue, IngestResult, Row
from workers.store_ingest import OPT_IN_EVENT, IngestStore
from workers.store_ledger import LedgerStore
from workers.store_schedule import ScheduleStore

__all__ = ["OPT_IN_EVENT", "Enqueue", "IngestResult", "Row", "Store"]


class Store(IngestStore, LedgerStore, ScheduleStore, ConsentStore, DeadLetterStore):
    """All database access of the pipeline: ``Store.connect(url)`` once per process."""
