"""The producer SDK: validate an event and put it on the broker's ``events`` queue.

It speaks Celery's message protocol (version 2) through kombu directly, so a producer needs
neither Celery nor the worker code. Publishing waits for the broker (publisher confirms on
RabbitMQ) and retries a few times; when the broker stays unreachable it raises
:class:`PublishError` and nothing was accepted. On a Redis broker each envelope is also kept in
the :mod:`events.outbox` until a worker ingested it, so a message kombu loses is offered again.

    from events import Publisher
    with Publisher("redis://127.0.0.1:6379/0") as publisher:
        publisher.publish({"id": "order-1042", "type": "purchase", ...})
"""

from __future__ import annotations

import contextlib
import functools
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any

from kombu import Connection, Exchange, Queue

from events import redis_transport
from events.encoding import json_bytes
from events.envelope import Event, parse_event
from events.outbox import Outbox, Overdue, applies_to

INGEST_TASK = "declic.ingest"
INGEST_BATCH_TASK = "declic.ingest_batch"
BATCH_CHUNK = 25
"""Events per broker message when publishing many: one task ingests them one after the other."""
EVENTS_QUEUE = "events"
CRITICAL_EVENTS_QUEUE = "events.critical"
DEFAULT_CRITICAL_TYPES = frozenset({"password_reset", "account_updated"})
"""Event types published on ``events.critical``, which workers ingest before everything else."""
OUTBOX_QUEUES = (CRITICAL_EVENTS_QUEUE, EVENTS_QUEUE)


class PublishError(RuntimeError):
    """The broker did not take the event; it was not accepted. Safe to publish again."""


def celery_message(task: str, args: list[Any]) -> tuple[list[Any], dict[str, Any], str]:
    """Body and headers of a Celery protocol 2 task message, and its task id."""
    task_id = str(uuid.uuid4())
    headers = {
        "lang": "py",
        "task": task,
        "id": task_id,
        "root_id": task_id,
        "parent_id": None,
        "group": None,
        "retries": 0,
        "eta": None,
        "expires": None,
        "timelimit": [None, None],
        "argsrepr": f"<{len(args)} args>",
        "kwargsrepr": "{}",
        "origin": "declic-sdk",
        "ignore_result": True,
    }
    body = [args, {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    return body, headers, task_id


class Publisher:
    """A connection to the broker that publishes validated events; reuse it."""

    def __init__(
        self, broker_url: str, *, retries: int = 3, timeout_s: float = 5.0,
        critical_types: frozenset[str] = DEFAULT_CRITICAL_TYPES, outbox: bool | None = None,
    ) -> None:
        """``outbox``: keep envelopes until ingested; by default on a Redis broker only."""
        amqp = broker_url.startswith(("amqp", "pyamqp"))
        transport_options = {"confirm_publish": True} if amqp else {}
        self._connection = Connection(
            broker_url, connect_timeout=timeout_s, transport_options=transport_options,
            # redis:// only, as the workers: rediss:// keeps kombu's own, which checks its TLS options.
            transport=redis_transport.TRANSPORT if broker_url.startswith("redis://") else None,
        )
        self._retries = retries
        # Declared exactly as the workers declare it (a quorum queue on RabbitMQ), or the
        # broker refuses the second declaration.
        arguments = {"x-queue-type": "quorum"} if amqp else {}
        self._queues = {
            name: Queue(name, Exchange(name), routing_key=name, queue_arguments=arguments)
            for name in (EVENTS_QUEUE, CRITICAL_EVENTS_QUEUE)
        }
        self._critical_types = critical_types
        self._producer: Any = None
        use_outbox = applies_to(broker_url) if outbox is None else outbox
        self.outbox = Outbox.connect(broker_url, OUTBOX_QUEUES, timeout_s=timeout_s) if use_outbox else None

    def publish(self, event: Event | dict[str, Any] | str | bytes) -> str:
        """Validate and publish one event; return its id. Raises EventInvalid or PublishError."""
        checked = event if isinstance(event, Event) else parse_event(event)
        self.publish_json(checked.to_json())
        return checked.id

    def publish_json(self, event_json: dict[str, Any]) -> None:
        """Publish an envelope already validated (the API uses this)."""
        _, error = self.publish_many([event_json])
        if error is not None:
            raise error

    def publish_many(self, envelopes: Sequence[dict[str, Any]]) -> tuple[int, PublishError | None]:
        """Publish envelopes already validated as few messages; stop at the first failure.

        Consecutive envelopes of one queue travel together, :data:`BATCH_CHUNK` to a message
        (``declic.ingest_batch``); critical ones go one to a message, so each is ingested and
        delivered at once. Returns how many envelopes, from the first, the broker took, and the
        error that stopped it (None when all were taken): the rest was not accepted.
        """
        taken = 0
        for queue, chunk in self._chunks(envelopes):
            created: list[tuple[str, str, dict[str, Any]]] = []
            try:
                self._with_retries(functools.partial(self._publish_chunk, queue, chunk, created))
            except PublishError as exc:
                if self.outbox is not None:
                    with contextlib.suppress(Exception):
                        for event_id, queue_name, _ in created:
                            self.outbox.forget(event_id, queue_name)
                return taken, exc
            taken += len(chunk)
        return taken, None

    def _publish_chunk(self, queue: Queue, chunk: list[dict[str, Any]],
                       created: list[tuple[str, str, dict[str, Any]]]) -> None:
        if self.outbox is not None:
            items = [(str(e["id"]), e) for e in chunk]
            fresh = self.outbox.record_many(queue.name, items)
            created.extend((event_id, queue.name, e) for (event_id, e), new in zip(items, fresh, strict=True) if new)
        if len(chunk) == 1:
            self._send(chunk[0], queue)
        else:
            self._send_batch(chunk, queue)

    def _chunks(self, envelopes: Sequence[dict[str, Any]]) -> Iterator[tuple[Queue, list[dict[str, Any]]]]:
        chunk: list[dict[str, Any]] = []
        current: Queue | None = None
        for envelope in envelopes:
            critical = envelope.get("type") in self._critical_types
            queue = self._queues[CRITICAL_EVENTS_QUEUE if critical else EVENTS_QUEUE]
            if chunk and (queue is not current or critical or len(chunk) >= BATCH_CHUNK):
                assert current is not None
                yield current, chunk
                chunk = []
            current = queue
            chunk.append(envelope)
        if chunk and current is not None:
            yield current, chunk

    def republish(self, overdue: Overdue) -> None:
        """Publish again an envelope the outbox found overdue; its outbox clock starts over."""
        self._with_retries(lambda: self._send(overdue.envelope, self._queues[overdue.queue]))
        if self.outbox is not None:
            self.outbox.retried(overdue.event_id, overdue.queue)

    def _send(self, event_json: dict[str, Any], queue: Queue) -> None:
        body, headers, task_id = celery_message(INGEST_TASK, [event_json])
        self._publish(json_bytes(body).decode(), headers, task_id, queue)

    def _send_batch(self, envelopes: list[dict[str, Any]], queue: Queue) -> None:
        body, headers, task_id = celery_message(INGEST_BATCH_TASK, [envelopes])
        self._publish(json_bytes(body).decode(), headers, task_id, queue)

    def _with_retries(self, attempt_once: Callable[[], None]) -> None:
        # kombu retries only what it classes as connection errors; a connection broken in
        # another way (seen when Redis restarts) is rebuilt here and tried again, a few times.
        for attempt in range(self._retries + 1):
            try:
                attempt_once()
                return
            except Exception as exc:  # kombu raises transport-specific errors; all mean "not taken"
                self._reset()
                if attempt == self._retries:
                    raise PublishError(f"the broker did not accept the event: {exc}") from exc
                time.sleep(min(2.0, 0.2 * 2**attempt))

    def _publish(self, payload: str, headers: dict[str, Any], task_id: str, queue: Queue) -> None:
        if self._producer is None:
            self._producer = self._connection.Producer()
            # Declared once per connection (a reconnect makes a new producer), not per message:
            # kombu copies and binds a declared queue on every publish that names it.
            for declared in self._queues.values():
                declared(self._producer.channel).declare()
        self._producer.publish(
            payload,
            content_type="application/json",
            content_encoding="utf-8",
            headers=headers,
            correlation_id=task_id,
            # The default exchange, which routes by queue name: on Redis kombu would otherwise
            # read the named exchange's bindings (a round trip) for every message.
            exchange="",
            routing_key=queue.name,
            delivery_mode=2,
            retry=True,
            retry_policy={"max_retries": 1, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1.0},
        )

    def _reset(self) -> None:
        self._producer = None
        with contextlib.suppress(Exception):
            self._connection.close()
        self._connection = self._connection.clone()

    def close(self) -> None:
        self._connection.release()
        if self.outbox is not None:
            self.outbox.client.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
