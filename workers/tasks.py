"""Thin task entry points: parse arguments, call one stage, act on its outcome."""

from __future__ import annotations

import time
import traceback
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kombu.exceptions
import psycopg
import psycopg_pool
import redis
import structlog
from botocore.exceptions import BotoCoreError
from celery import Task

from workers import runtime
from workers.app import app
from workers.pipeline import (
    Deps,
    Outcome,
    Retry,
    deliver,
    deliver_claimed,
    event_ref,
    ingest_event,
    keep_as_dead_letter,
)
from workers.store import Enqueue, Store

log = structlog.get_logger("declic")

INLINE_QUEUES = frozenset({"send.critical", "send.transactional"})

# Sends per broker message, by queue. A password reset travels alone; receipts in small
# groups, so a burst still spreads over every worker thread; bulk mail in larger ones (one
# after the other, a message of ten takes about ten SES round trips: bounded latency). A
# message of several sends costs one Celery task instead of one per email.
SENDS_PER_MESSAGE = {"send.critical": 1, "send.transactional": 5, "send.bulk": 10}
# A message of sends hands what it has not reached after this long back to its queue, so a
# slow SES or a rate wait never brings it near Celery's time limit.
SEND_BATCH_BUDGET_S = 60.0

# Postgres, Redis or the broker briefly down or restarting: retry with backoff. Work already
# committed is safe: a retried ingest finds its event and re-offers what is still pending.
_DATABASE_DOWN = (
    psycopg.OperationalError, psycopg_pool.PoolTimeout, redis.ConnectionError, redis.TimeoutError,
    kombu.exceptions.OperationalError,
)


class WorkerNotReady(Exception):
    """This process could not build what it works with (its configuration, a client): the task
    is retried with backoff and its message kept, rather than failed and acknowledged."""


_RETRIED = (*_DATABASE_DOWN, WorkerNotReady)


def _deps() -> Deps:
    try:
        return runtime.deps()
    except _DATABASE_DOWN:
        raise
    except Exception as exc:
        # botocore says what to set ("You must specify a region"); other messages may quote a
        # setting's value (a URL with its password), so only their class is told.
        detail = f"{exc.__class__.__name__}: {exc}" if isinstance(exc, BotoCoreError) else exc.__class__.__name__
        log.error("worker_not_ready", error=detail)
        raise WorkerNotReady(f"the worker could not build its clients: {detail}") from exc


def enqueue(sends: Iterable[Enqueue]) -> None:
    """Put sends on their queues, grouped per message by SENDS_PER_MESSAGE; called only after
    the transaction that made them committed."""
    by_queue: dict[str, list[str]] = {}
    for item in sends:
        by_queue.setdefault(item.queue, []).append(item.send_id)
    for queue, ids in by_queue.items():
        size = SENDS_PER_MESSAGE.get(queue, 1)
        for start in range(0, len(ids), size):
            _publish_sends(ids[start:start + size], queue)


def _publish_sends(send_ids: list[str], queue: str) -> None:
    if len(send_ids) == 1:
        deliver_send.apply_async(args=(send_ids[0],), queue=queue, routing_key=queue)
    else:
        deliver_sends.apply_async(args=(send_ids, queue), queue=queue, routing_key=queue)


@app.task(name="declic.ingest", autoretry_for=_RETRIED, retry_backoff=1, retry_backoff_max=30,
          retry_jitter=True, max_retries=None)
def ingest(event: Any) -> str:
    """Ingest one event published on the ``events`` queue."""
    return ingest_one(event, inline=True)


@dataclass
class Batch:
    """What the events of one message leave to do once they are all ingested, in one go each."""

    due: list[Enqueue] = field(default_factory=list)  # sends to put on their queues
    in_postgres: list[Any] = field(default_factory=list)  # events to stop watching in the outbox


@app.task(name="declic.ingest_batch", autoretry_for=_RETRIED, retry_backoff=1, retry_backoff_max=30,
          retry_jitter=True, max_retries=None)
def ingest_batch(events: list[Any]) -> str:
    """Ingest events published together (the API's batches), one after the other.

    Their sends go to the send queues rather than inline, a few to a message, so a batch's
    emails leave in parallel on every worker thread instead of one after the other here.
    Retried whole: events already ingested are found again and only their pending sends
    re-offered.
    """
    if not isinstance(events, list):
        return ingest_one(events, inline=False)
    batch = Batch()
    outcomes = Counter(ingest_one(event, inline=False, batch=batch) for event in events)
    enqueue(batch.due)
    _forget_in_outbox(*batch.in_postgres)
    return ", ".join(f"{n} {label}" for label, n in sorted(outcomes.items()))


def ingest_one(event: Any, *, inline: bool, batch: Batch | None = None) -> str:
    """Ingest one event and deliver or enqueue its due sends; with ``batch``, what is left to
    enqueue and to forget in the outbox is added there, for the caller to do once for all."""
    deps = _deps()
    inline = inline and deps.inline_sends
    # Once the event is in Postgres (ingested, a duplicate or a dead letter), the outbox stops
    # watching it: now, or with the rest of its batch.
    in_postgres = _forget_in_outbox if batch is None else batch.in_postgres.append
    # An event's first due-now critical or transactional send goes out from here, recorded
    # already claimed: no broker hop, no task and no claim statement of its own. It is
    # committed before SES is called and delivered before anything else can fail, so a crash
    # loses nothing and its claim's lease decides who delivers it. Further inline sends are
    # claimed one by one as before, so a failure on the first never holds them up.
    try:
        result = ingest_event(deps.store, deps.catalogue, event, delay_scale=deps.delay_scale,
                              claim_queues=INLINE_QUEUES if inline else frozenset())
    except _DATABASE_DOWN:
        raise  # retried with backoff, the message kept
    except Exception as exc:  # a fault of ours, not the event's: keep it for a replay once fixed
        _dead_letter_failed(deps.store, event, exc)
        in_postgres(event)
        return "failed"
    for row in result.claimed if result is not None else ():
        _retry_later(str(row["id"]), str(row["queue"]), deliver_claimed(row, deps))
    in_postgres(event)
    if result is None:
        return "invalid"
    # The event's other due sends, and a redelivered event's sends still due.
    inline_sends = [item for item in result.to_enqueue if inline and item.queue in INLINE_QUEUES]
    queued = [item for item in result.to_enqueue if item not in inline_sends]
    if batch is None:
        enqueue(queued)
    else:
        batch.due.extend(queued)
    for item in inline_sends:
        _retry_later(item.send_id, item.queue, deliver(item.send_id, deps))
    return "duplicate" if result.duplicate else "ingested"


def _forget_in_outbox(*events: Any) -> None:
    outbox = runtime.outbox()
    refs = [ref for ref in map(event_ref, events) if ref is not None]
    if outbox is not None and refs:
        outbox.done_many(refs)  # in Postgres now, as events or dead letters


def _dead_letter_failed(store: Store, event: Any, exc: Exception) -> None:
    """An event whose ingest failed unexpectedly becomes a dead letter with the reason, instead
    of a failed task whose acknowledged message is gone; ``declic dlq replay`` publishes it again.

    The log line names the error's class and where it was raised, never its message, which may
    quote the event's data; the dead letter, beside the payload in Postgres, keeps the message.
    """
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f"{Path(frame.filename).name}:{frame.lineno} in {frame.name}" if frame else "?"
    log.error("event_failed", event_id=event_ref(event), error=exc.__class__.__name__, where=where)
    keep_as_dead_letter(store, event, f"ingest_error: {exc.__class__.__name__} at {where}: {exc}")


def _retry_later(send_id: str, queue: str, outcome: Outcome) -> None:
    if isinstance(outcome, Retry):
        deliver_send.apply_async(args=(send_id,), queue=queue, routing_key=queue, countdown=outcome.delay_s)


@app.task(name="declic.send", bind=True, autoretry_for=_RETRIED, retry_backoff=1, retry_backoff_max=30,
          retry_jitter=True, max_retries=None)
def deliver_send(self: Task[Any, Any], send_id: str) -> str:
    """Deliver one send; transient SES failures come back after a backoff."""
    outcome = deliver(str(send_id), _deps())
    if isinstance(outcome, Retry):
        raise self.retry(countdown=outcome.delay_s, max_retries=None)
    return outcome.label


@app.task(name="declic.send_batch", autoretry_for=_RETRIED, retry_backoff=1, retry_backoff_max=30,
          retry_jitter=True, max_retries=None)
def deliver_sends(send_ids: list[str], queue: str) -> str:
    """Deliver several sends of one queue, one after the other, each claimed on its own.

    Each send's transient failure comes back alone after its backoff. Retried whole when the
    database is down: sends already delivered are no longer claimable and cost one statement.
    """
    deps = _deps()
    ids = [str(i) for i in send_ids]
    started = time.monotonic()
    outcomes: Counter[str] = Counter()
    for n, send_id in enumerate(ids):
        if n and time.monotonic() - started > SEND_BATCH_BUDGET_S:  # at least one per message
            _publish_sends(ids[n:], queue)
            outcomes["handed_on"] += len(ids) - n
            break
        outcome = deliver(send_id, deps)
        _retry_later(send_id, queue, outcome)
        outcomes[outcome.label] += 1
    return ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))
