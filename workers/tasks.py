"""Thin task entry points: parse arguments, call one stage, act on its outcome."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

import kombu.exceptions
import psycopg
import psycopg_pool
import redis
from celery import Task

from workers import runtime
from workers.app import app
from workers.pipeline import Retry, deliver, deliver_claimed, ingest_event
from workers.store import Enqueue

INLINE_QUEUES = frozenset({"send.critical", "send.transactional"})

# Postgres, Redis or the broker briefly down or restarting: retry with backoff. Work already
# committed is safe: a retried ingest finds its event and re-offers what is still pending.
_DATABASE_DOWN = (
    psycopg.OperationalError, psycopg_pool.PoolTimeout, redis.ConnectionError, redis.TimeoutError,
    kombu.exceptions.OperationalError,
)


def enqueue(sends: Iterable[Enqueue]) -> None:
    """Put sends on their queues; called only after the transaction that made them committed."""
    for item in sends:
        deliver_send.apply_async(args=(item.send_id,), queue=item.queue, routing_key=item.queue)


@app.task(name="declic.ingest", autoretry_for=_DATABASE_DOWN, retry_backoff=1, retry_backoff_max=30,
          retry_jitter=True, max_retries=None)
def ingest(event: Any) -> str:
    """Ingest one event published on the ``events`` queue."""
    return ingest_one(event, inline=True)


@app.task(name="declic.ingest_batch", autoretry_for=_DATABASE_DOWN, retry_backoff=1, retry_backoff_max=30,
          retry_jitter=True, max_retries=None)
def ingest_batch(events: list[Any]) -> str:
    """Ingest events published together (the API's batches), one after the other.

    Their sends go to the send queues rather than inline, so a batch's emails leave in parallel
    on every worker thread instead of one after the other here. Retried whole: events already
    ingested are found again and only their pending sends re-offered.
    """
    if not isinstance(events, list):
        return ingest_one(events, inline=False)
    outcomes = Counter(ingest_one(event, inline=False) for event in events)
    return ", ".join(f"{n} {label}" for label, n in sorted(outcomes.items()))


def ingest_one(event: Any, *, inline: bool) -> str:
    deps = runtime.deps()
    inline = inline and deps.inline_sends
    # An event's first due-now critical or transactional send goes out from here, recorded
    # already claimed: no broker hop, no task and no claim statement of its own. It is
    # committed before SES is called and delivered before anything else can fail, so a crash
    # loses nothing and its claim's lease decides who delivers it. Further inline sends are
    # claimed one by one as before, so a failure on the first never holds them up.
    result = ingest_event(deps.store, deps.catalogue, event, delay_scale=deps.delay_scale,
                          claim_queues=INLINE_QUEUES if inline else frozenset())
    for row in result.claimed if result is not None else ():
        _retry_later(str(row["id"]), str(row["queue"]), deliver_claimed(row, deps))
    outbox = runtime.outbox()
    if outbox is not None and isinstance(event, dict) and isinstance(event.get("id"), str):
        outbox.done(event["id"])  # in Postgres now, as an event or a dead letter
    if result is None:
        return "invalid"
    # The event's other due sends, and a redelivered event's sends still due.
    inline_sends = [item for item in result.to_enqueue if inline and item.queue in INLINE_QUEUES]
    enqueue(item for item in result.to_enqueue if item not in inline_sends)
    for item in inline_sends:
        _retry_later(item.send_id, item.queue, deliver(item.send_id, deps))
    return "duplicate" if result.duplicate else "ingested"


def _retry_later(send_id: str, queue: str, outcome: object) -> None:
    if isinstance(outcome, Retry):
        deliver_send.apply_async(args=(send_id,), queue=queue, routing_key=queue, countdown=outcome.delay_s)


@app.task(name="declic.send", bind=True, autoretry_for=_DATABASE_DOWN, retry_backoff=1, retry_backoff_max=30,
          retry_jitter=True, max_retries=None)
def deliver_send(self: Task[Any, Any], send_id: str) -> str:
    """Deliver one send; transient SES failures come back after a backoff."""
    outcome = deliver(str(send_id), runtime.deps())
    if isinstance(outcome, Retry):
        raise self.retry(countdown=outcome.delay_s, max_retries=None)
    return outcome.label
