"""The outbox on a real Redis: what is remembered, forgotten, and found overdue."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from declic.services import Services
from events.outbox import Outbox
from events.publisher import Publisher, PublishError
from workers.dispatcher import OutboxSweep
from workers.store import Store


@pytest.fixture
def outbox(services: Services) -> Iterator[Outbox]:
    # Queue names of the test's own, so the run's workers and other tests never interfere.
    tag = uuid.uuid4().hex[:8]
    box = Outbox.connect(services.redis_url, (f"t{tag}.critical", f"t{tag}.events"))
    yield box
    box.client.delete(*(f"declic:outbox:{q}" for q in box.queues), *box.queues)
    box.client.close()


def envelope(event_id: str) -> dict[str, Any]:
    return {"id": event_id, "type": "signup", "occurred_at": "2026-11-27T10:00:00+00:00",
            "contact": {"id": "c-1", "email": "ada@example.com"}, "data": {}}


def test_recorded_until_done_and_done_raises_the_watermark(outbox: Outbox) -> None:
    queue = outbox.queues[1]
    assert outbox.record("ev-1", queue, envelope("ev-1")) is True
    assert outbox.record("ev-1", queue, envelope("ev-1")) is False  # a retry keeps the first stamp
    assert outbox.pending() == 1
    accepted = outbox.client.zscore(f"declic:outbox:{queue}", "ev-1")

    outbox.done("ev-1")

    assert outbox.pending() == 0
    assert outbox.client.hget("declic:outbox:bodies", "ev-1") is None
    assert float(outbox.client.hget("declic:outbox:watermarks", queue) or 0) == accepted
    outbox.done("never-recorded")  # harmless


def test_a_batch_is_forgotten_in_one_round_trip(outbox: Outbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """``done_many`` forgets every event of an ingested batch, across both queues, raising each
    queue's watermark to its newest, in one pipeline; an id never recorded is harmless."""
    critical, events = outbox.queues
    ids = [f"ev-{n}" for n in range(5)]
    outbox.record_many(events, [(i, envelope(i)) for i in ids[:4]])
    outbox.record(ids[4], critical, envelope(ids[4]))
    newest = {q: max(s for _, s in outbox.client.zrange(f"declic:outbox:{q}", 0, -1, withscores=True))
              for q in (critical, events)}
    round_trips: list[int] = []
    execute = type(outbox.client.pipeline()).execute

    def counted(pipe: Any, *args: Any, **kwargs: Any) -> Any:
        round_trips.append(len(pipe.command_stack))
        return execute(pipe, *args, **kwargs)

    monkeypatch.setattr(type(outbox.client.pipeline()), "execute", counted)
    outbox.done_many([*ids, "never-recorded"])

    assert round_trips == [6]
    assert outbox.pending() == 0
    assert not any(outbox.client.hget("declic:outbox:bodies", i) for i in ids)
    for queue, score in newest.items():
        assert float(outbox.client.hget("declic:outbox:watermarks", queue) or 0) == score


def test_overdue_when_its_queue_is_empty(outbox: Outbox) -> None:
    queue = outbox.queues[0]
    outbox.record("ev-lost", queue, envelope("ev-lost"))
    assert outbox.overdue(grace_s=60) == []  # too recent to tell
    time.sleep(0.05)

    found = outbox.overdue(grace_s=0.01)

    assert [(o.event_id, o.queue, o.envelope["id"]) for o in found] == [("ev-lost", queue, "ev-lost")]


def test_behind_a_backlog_only_once_newer_events_went_through(outbox: Outbox) -> None:
    queue = outbox.queues[1]
    outbox.client.rpush(queue, "a message still waiting")  # the queue is not empty
    outbox.record("ev-old", queue, envelope("ev-old"))
    time.sleep(0.05)

    # Perhaps still in the backlog: no newer event was ingested yet.
    assert outbox.overdue(grace_s=0.01) == []

    time.sleep(0.05)
    outbox.record("ev-new", queue, envelope("ev-new"))
    outbox.done("ev-new")  # ingested, although accepted later: the old one was lost
    assert [o.event_id for o in outbox.overdue(grace_s=0.01)] == ["ev-old"]


def test_a_publication_that_failed_is_forgotten(own_broker: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with Publisher(own_broker, retries=0) as publisher:
        assert publisher.outbox is not None

        def refuse(*_: Any) -> None:
            raise ConnectionError("broker gone")

        monkeypatch.setattr(publisher, "_send", refuse)
        event_id = f"ev-{uuid.uuid4()}"
        with pytest.raises(PublishError):
            publisher.publish(envelope(event_id))
        assert publisher.outbox.client.hget("declic:outbox:bodies", event_id) is None


def test_the_sdk_records_before_publishing_on_redis_only(own_broker: str) -> None:
    event_id = f"ev-{uuid.uuid4()}"
    with Publisher(own_broker) as publisher:
        assert publisher.outbox is not None
        publisher.publish(envelope(event_id))  # on a broker no worker listens to
        body = publisher.outbox.client.hget("declic:outbox:bodies", event_id)
        assert body is not None and json.loads(body)["id"] == event_id
        assert publisher.outbox.client.zscore("declic:outbox:events", event_id) is not None
    assert Publisher("amqp://guest:guest@127.0.0.1:5672//", outbox=None).outbox is None


def test_the_sdk_reuses_one_redis_client_and_lands_on_the_queue_list(
    own_broker: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Fifty publications build at most two redis-py clients in all (the shared one, and the
    one kombu's channel keeps for declarations), where kombu alone builds two per message; each
    is a Celery ingest message on the ``events`` list the workers read."""
    import redis

    from events import redis_transport

    built: list[object] = []
    create = redis_transport.Channel._create_client  # type: ignore[attr-defined]

    def counted(channel: object, *args: Any, **kwargs: Any) -> Any:
        built.append(channel)
        return create(channel, *args, **kwargs)

    monkeypatch.setattr(redis_transport.Channel, "_create_client", counted)
    ids = [f"ev-{uuid.uuid4()}" for _ in range(50)]
    with Publisher(own_broker) as publisher:
        for event_id in ids:
            publisher.publish(envelope(event_id))
    assert len(built) <= 2
    with redis.Redis.from_url(own_broker) as client:
        messages = [json.loads(m) for m in client.lrange("events", 0, -1)]
    assert len(messages) == 50
    assert {m["headers"]["task"] for m in messages} == {"declic.ingest"}
    assert {m["properties"]["delivery_info"]["routing_key"] for m in messages} == {"events"}


def test_the_sweep_republishes_the_lost_and_forgets_the_ingested(outbox: Outbox, store: Store) -> None:
    queue = outbox.queues[1]
    for event_id in ("ev-ingested", "ev-lost"):
        outbox.record(event_id, queue, envelope(event_id))
    store.dead_letter_event("ev-ingested", "invalid_event: test", envelope("ev-ingested"))
    time.sleep(0.05)
    republished: list[str] = []

    class Recorder:
        def republish(self, item: Any) -> None:
            republished.append(item.event_id)
            outbox.retried(item.event_id, item.queue)

    sweep = OutboxSweep(outbox, store, Recorder(), grace_s=0.01)  # type: ignore[arg-type]

    assert sweep() == 1
    assert republished == ["ev-lost"]
    assert outbox.pending() == 1  # the lost one, its clock started over
    assert outbox.overdue(grace_s=5) == []


def test_publish_many_travels_in_chunks_and_stops_at_the_first_refusal(
    own_broker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from events import publisher as module

    tag = uuid.uuid4().hex[:6]
    reset = {**envelope(f"{tag}-r"), "type": "password_reset"}
    envelopes = [envelope(f"{tag}-{i}") for i in range(30)] + [reset] + [envelope(f"{tag}-x{i}") for i in range(3)]
    sent: list[list[str]] = []
    with Publisher(own_broker, retries=0) as publisher:
        assert publisher.outbox is not None

        def send(one: dict[str, Any], _queue: Any) -> None:
            sent.append([one["id"]])

        def send_batch(many: list[dict[str, Any]], _queue: Any) -> None:
            if many[0]["id"] == f"{tag}-x0":
                raise ConnectionError("broker gone")
            sent.append([e["id"] for e in many])

        monkeypatch.setattr(publisher, "_send", send)
        monkeypatch.setattr(publisher, "_send_batch", send_batch)
        taken, error = publisher.publish_many(envelopes)

        # 25 + 5 ordinary events, the reset alone (critical), then the last chunk refused.
        assert [len(c) for c in sent] == [module.BATCH_CHUNK, 5, 1] and sent[2] == [f"{tag}-r"]
        assert taken == 31 and isinstance(error, PublishError)
        bodies = publisher.outbox.client
        assert bodies.hget("declic:outbox:bodies", f"{tag}-x0") is None  # refused: not to be replayed
        assert bodies.hget("declic:outbox:bodies", f"{tag}-29") is not None  # taken: watched until ingested
        for e in envelopes[:31]:
            publisher.outbox.done(e["id"])


def test_integers_beyond_64_bits_are_published_not_refused(own_broker: str) -> None:
    """JSON allows them and producers send them; orjson refuses them, so they take the slow path."""
    from events.encoding import json_bytes

    big = 2**70
    assert json.loads(json_bytes({"n": big})) == {"n": big}
    event = {**envelope(f"ev-{uuid.uuid4()}"), "data": {"order_ref": big}}
    with Publisher(own_broker, retries=0) as publisher:
        assert publisher.outbox is not None
        taken, error = publisher.publish_many([event, {**event, "id": f"ev-{uuid.uuid4()}"}])
        assert (taken, error) == (2, None)
        publisher.publish(event)  # one at a time too
        publisher.outbox.done(event["id"])
