"""A message the Redis broker lost still becomes its email: the outbox publishes it again.

kombu's Redis transport pops a message before recording it as unacknowledged, so a worker
killed in between loses it. Here the loss is made deterministic: the events are published with
no worker running and one message is taken off its list, as that worker would have; then a
worker and the dispatcher start, and both events must end as sent emails.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from declic.processes import WorkerProcess
from declic.services import Services
from events import Publisher
from flows import Catalogue
from flows.schedules import daytime_zone
from tests.e2e.conftest import dispatcher_process, final_sends, fresh, wait_for
from workers.app import QUEUES
from workers.store import Store

pytestmark = pytest.mark.e2e


def test_an_event_whose_message_was_lost_is_published_again_and_sent(
    own_broker: str, worker_env: dict[str, str], services: Services, store: Store, catalogue: Catalogue,
    tmp_path: Path,
) -> None:
    contact = {"timezone": daytime_zone()}
    reset = fresh(catalogue["password_reset"].sample)
    order = fresh(catalogue["order_confirmation"].sample)
    for event in (reset, order):
        event["contact"] = {**event["contact"], **contact}
    with Publisher(own_broker) as publisher:
        publisher.publish(reset)
        publisher.publish(order)
    with redis.Redis.from_url(own_broker) as client:
        assert client.rpop("events.critical") is not None  # the reset's message: gone, as BRPOP leaves it

    env = {**worker_env, "DECLIC_BROKER_URL": own_broker, "DECLIC_REDIS_URL": own_broker,
           "DECLIC_OUTBOX_GRACE_S": "1"}
    worker = WorkerProcess(env, list(QUEUES), concurrency=2, pool="threads", name="outbox",
                           log_path=tmp_path / "worker.log")
    dispatcher = dispatcher_process(env, tmp_path / "dispatcher.log")
    with worker, dispatcher:
        worker.wait_ready(60)
        dispatcher.wait_ready(60)
        [order_send] = final_sends(store, order["id"], "order_confirmation", timeout=60)
        [reset_send] = final_sends(store, reset["id"], "password_reset", timeout=60)

    assert order_send["state"] == "sent", order_send["reason"]
    assert reset_send["state"] == "sent", reset_send["reason"]
    lines = [json.loads(line) for line in (tmp_path / "dispatcher.log").read_text().splitlines()
             if line.startswith("{")]
    assert [line["count"] for line in lines if line["event"] == "events_republished"] == [1]
    with redis.Redis.from_url(own_broker, decode_responses=True) as client:
        wait_for(lambda: client.zcard("declic:outbox:events.critical") == 0, what="the outbox to empty")
        assert client.zcard("declic:outbox:events") == 0
        assert client.hlen("declic:outbox:bodies") == 0
