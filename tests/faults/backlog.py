"""A real bulk backlog, made cheaply: send rows written by SQL, their task messages pushed in bulk.

Ingesting 20,000 ``legal_update`` events one by one would spend minutes of CI on the ingest
path, which is not what the priority scenario measures. Instead the ledger rows are written in
one statement, and one genuine ``declic.send`` message is published by Celery itself (with the
workers' own configuration), read back from Redis and copied — new task id, delivery tag and
``send_id`` each — with one pipelined ``LPUSH``. What the workers find is indistinguishable from
20,000 sends enqueued by ingest: real rows, real messages on ``send.bulk``.
"""

from __future__ import annotations

import base64
import copy
import json
import uuid
from typing import Any

import psycopg
import redis
from celery import Celery

from declic.settings import Settings
from flows import Catalogue
from flows.planning import choose_variant
from workers.app import celery_config

BULK_FLOW = "legal_update"


def write_ledger(database_url: str, catalogue: Catalogue, count: int) -> list[str]:
    """``count`` pending ``legal_update`` sends (with their events and contacts); their ids."""
    flow = catalogue[BULK_FLOW]
    step = flow.all_steps[0]
    sample = {k: v for k, v in flow.sample.items() if k not in ("id", "contact")}
    ids = [str(uuid.uuid4()) for _ in range(count)]
    with psycopg.connect(database_url, autocommit=True) as conn, conn.transaction():
        conn.execute(
            "INSERT INTO contacts (id, email, locale, timezone, opt_in, profile_at)"
            " SELECT 'bulk-c' || n, 'bulk' || n || '@example.com', 'en', 'UTC', false, now()"
            " FROM generate_series(1, %s) n", (count,))
        conn.execute(
            "INSERT INTO events (id, type, occurred_at, contact_id, payload)"
            " SELECT 'bulk-e' || n, 'legal_update', now(), 'bulk-c' || n,"
            "        %s::jsonb || jsonb_build_object('id', 'bulk-e' || n, 'occurred_at', now(),"
            "          'contact', jsonb_build_object('id', 'bulk-c' || n, 'email', 'bulk' || n || '@example.com'))"
            " FROM generate_series(1, %s) n", (json.dumps(sample), count))
        conn.execute(
            "INSERT INTO sends (id, send_key, event_id, contact_id, flow, step, variant, category, queue, state,"
            " due_at) SELECT (%s::uuid[])[n], 'bulk-e' || n || ':' || %s || ':' || %s, 'bulk-e' || n,"
            " 'bulk-c' || n, %s, %s, %s, %s, 'send.bulk', 'pending', now() FROM generate_series(1, %s) n",
            (ids, flow.name, step.name, flow.name, step.name, choose_variant(flow, "bulk"),
             flow.category_for(step).value, count))
    return ids


def push_messages(broker_url: str, send_ids: list[str], queue: str = "send.bulk") -> None:
    """One ``declic.send`` message per send on ``queue``, as ``workers.tasks.enqueue`` makes them."""
    settings = Settings(broker_url=broker_url, redis_url=broker_url)
    producer = Celery("backlog", set_as_current=False)
    producer.conf.update(celery_config(settings))
    client = redis.Redis.from_url(broker_url)
    try:
        # Priority 0, so kombu keeps it in the list named after the queue.
        producer.send_task("declic.send", args=[send_ids[0]], queue=queue, routing_key=queue)
        key = queue
        raw = client.lpop(key)
        template: dict[str, Any] = json.loads(raw) if isinstance(raw, bytes | str) else {}
        assert template, f"no message on {queue} to copy"
        with client.pipeline(transaction=False) as pipe:
            for n, send_id in enumerate(send_ids):
                pipe.lpush(key, json.dumps(_copy(template, send_id)))
                if n % 2000 == 1999:
                    pipe.execute()
            pipe.execute()
    finally:
        client.close()
        producer.close()


def push_events(broker_url: str, catalogue: Catalogue, count: int) -> None:
    """``count`` ``legal_update`` events on the ``events`` queue, as the SDK publishes them."""
    from datetime import UTC, datetime

    from events import Publisher

    sample = catalogue[BULK_FLOW].sample
    now = datetime.now(UTC).isoformat()
    client = redis.Redis.from_url(broker_url)
    try:
        with Publisher(broker_url) as publisher:
            publisher.publish({**sample, "id": "bulk-e0", "occurred_at": now})
        raw = client.lpop("events")
        template: dict[str, Any] = json.loads(raw) if isinstance(raw, bytes | str) else {}
        assert template, "no message on events to copy"
        with client.pipeline(transaction=False) as pipe:
            for n in range(count):
                event = {**sample, "id": f"bulk-e{n}", "occurred_at": now,
                         "contact": {**sample["contact"], "id": f"bulk-c{n}", "email": f"bulk{n}@example.com"}}
                pipe.lpush("events", json.dumps(_copy(template, event)))
                if n % 2000 == 1999:
                    pipe.execute()
            pipe.execute()
    finally:
        client.close()


def _copy(template: dict[str, Any], send_id: Any) -> dict[str, Any]:
    message = copy.deepcopy(template)
    task_id = str(uuid.uuid4())
    body = json.loads(base64.b64decode(message["body"]))
    body[0] = [send_id]
    message["body"] = base64.b64encode(json.dumps(body).encode()).decode()
    message["headers"].update(id=task_id, root_id=task_id, argsrepr=repr((send_id,)))
    message["properties"].update(correlation_id=task_id, delivery_tag=str(uuid.uuid4()))
    return message
