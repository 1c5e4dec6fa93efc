"""The two systems the benchmark drives: Déclic's real workers, and the naive baseline.

Each is started as real ``celery worker`` processes against the run's services and the SES
stand-in, and answers the same questions: publish an event, say when everything published
since a mark is final, and map each SES message (by its ``send_id`` tag) back to its event.
Marks are Postgres's own ``now()``, so nothing depends on two clocks agreeing.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import psycopg
from celery import Celery

from bench.naive.app import CREATE_TABLE, EMAILS, QUEUE, TABLE
from declic.processes import ManagedProcess, WorkerSpec, workers
from events import Publisher
from workers.app import QUEUES

# Two cores, two processes (one Python process is held to one core by the GIL), each on every
# queue: ingest delivers transactional mail itself, and a send waits ~50 ms on SES, so each
# needs enough threads to keep SES calls in flight while its CPU is busy.
DECLIC_WORKERS = (
    WorkerSpec("w1", list(QUEUES), concurrency=32, pool="threads"),
    WorkerSpec("w2", list(QUEUES), concurrency=32, pool="threads"),
)
# A naive deployment: Celery's default prefork pool, one process per core.
NAIVE_CONCURRENCY = 2


class System(Protocol):
    """What a benchmark phase needs from a system under test."""

    name: str

    @property
    def pids(self) -> dict[str, int]:
        """The worker processes, by name, whose trees' CPU and memory are measured."""
        ...

    def mark(self) -> datetime: ...

    def publish(self, event: dict[str, Any]) -> None: ...

    def publish_many(self, events: list[dict[str, Any]]) -> None: ...

    def done(self, mark: datetime, published: int) -> bool: ...

    def send_events(self, mark: datetime) -> dict[str, str]:
        """``send_id`` → event id for everything sent since ``mark``."""
        ...


class _Database:
    """A connection for the benchmark's own bookkeeping queries."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True)

    def now(self) -> datetime:
        row = self.conn.execute("SELECT now()").fetchone()
        assert row is not None
        value: datetime = row[0]
        return value

    def pairs(self, query: str, mark: datetime) -> dict[str, str]:
        return {str(a): str(b) for a, b in self.conn.execute(query, (mark,)).fetchall()}


class DeclicSystem:
    """Déclic as deployed: the SDK publishes, an ingest worker and a send worker process it."""

    name = "pipeline"

    def __init__(self, db: _Database, publisher: Publisher, processes: list[ManagedProcess]) -> None:
        self._db, self._publisher, self.processes = db, publisher, processes

    @property
    def pids(self) -> dict[str, int]:
        return {p.name: p.pid for p in self.processes if p.pid is not None}

    def mark(self) -> datetime:
        return self._db.now()

    def publish(self, event: dict[str, Any]) -> None:
        self._publisher.publish(event)

    def publish_many(self, events: list[dict[str, Any]]) -> None:
        """As the HTTP API's batch endpoint publishes: few messages, 25 events to one."""
        _taken, error = self._publisher.publish_many(events)
        if error is not None:
            raise error

    def done(self, mark: datetime, published: int) -> bool:
        # Every event ingested, and none of its sends still waiting to be tried (scheduled
        # follow-ups are the schedule's business, not this run's).
        row = self._db.conn.execute(
            "SELECT (SELECT count(*) FROM events WHERE received_at >= %(m)s),"
            " (SELECT count(*) FROM sends WHERE created_at >= %(m)s AND state IN ('pending', 'sending', 'retry'))",
            {"m": mark},
        ).fetchone()
        return row is not None and row[0] >= published and row[1] == 0

    def send_events(self, mark: datetime) -> dict[str, str]:
        return self._db.pairs("SELECT id, event_id FROM sends WHERE created_at >= %s AND event_id IS NOT NULL", mark)


@contextlib.contextmanager
def declic_system(env: Mapping[str, str], broker_url: str, database_url: str, log_dir: Path) -> Iterator[DeclicSystem]:
    """Déclic's workers started and ready; stopped on exit."""
    db = _Database(database_url)
    try:
        with workers(env, log_dir, DECLIC_WORKERS) as started, Publisher(broker_url) as publisher:
            yield DeclicSystem(db, publisher, list(started))
    finally:
        db.conn.close()


class NaiveSystem:
    """The baseline: Celery's own producer, a prefork worker, one task per event and per email."""

    name = "baseline"

    def __init__(self, db: _Database, producer: Celery, process: ManagedProcess) -> None:
        self._db, self._producer, self.process = db, producer, process
        self._expected = 0

    @property
    def pids(self) -> dict[str, int]:
        return {"naive": self.process.pid} if self.process.pid is not None else {}

    def mark(self) -> datetime:
        self._expected = 0
        return self._db.now()

    def publish(self, event: dict[str, Any]) -> None:
        self._expected += len(EMAILS.get(event["type"], ()))
        self._producer.send_task("naive.handle_event", args=[event], queue=QUEUE)

    def publish_many(self, events: list[dict[str, Any]]) -> None:
        for event in events:  # a naive producer has no batches: one task per event
            self.publish(event)

    def done(self, mark: datetime, published: int) -> bool:
        row = self._db.conn.execute(f"SELECT count(*) FROM {TABLE} WHERE created_at >= %s", (mark,)).fetchone()
        return row is not None and row[0] >= self._expected

    def send_events(self, mark: datetime) -> dict[str, str]:
        return self._db.pairs(f"SELECT id, event_id FROM {TABLE} WHERE created_at >= %s", mark)


@contextlib.contextmanager
def naive_system(env: Mapping[str, str], broker_url: str, database_url: str, log_dir: Path) -> Iterator[NaiveSystem]:
    """The baseline's worker started and ready, its table created; both gone on exit."""
    db = _Database(database_url)
    db.conn.execute(CREATE_TABLE)
    naive_env = {**env, "BENCH_NAIVE_BROKER_URL": broker_url, "BENCH_NAIVE_DATABASE_URL": database_url}
    argv = [sys.executable, "-m", "celery", "-A", "bench.naive.app", "worker", "--pool", "prefork",
            "--concurrency", str(NAIVE_CONCURRENCY), "--hostname", "naive@%h", "-l", "INFO"]
    process = ManagedProcess(argv, naive_env, log_dir / "naive.log", ready_line=" ready.", name="naive")
    producer = Celery("naive-producer", broker=broker_url, set_as_current=False)
    try:
        with process:
            yield NaiveSystem(db, producer, process)
    finally:
        producer.close()
        db.conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        db.conn.close()
