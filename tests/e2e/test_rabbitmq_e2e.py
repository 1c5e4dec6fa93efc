"""The pipeline on RabbitMQ (quorum queues, publisher confirms), as a multi-host deployment runs it."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import kombu
import pytest

from declic.processes import WorkerProcess
from declic.services import Services
from events import Publisher
from flows import Catalogue
from tests.e2e.conftest import final_sends, fresh
from tests.e2e.test_pipeline_e2e import requests_for
from workers.app import QUEUES
from workers.store import Store

pytestmark = pytest.mark.e2e
RABBIT = os.environ.get("DECLIC_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672")


def _ctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def rabbit_url() -> Iterator[str]:
    """A vhost of its own on the local RabbitMQ, deleted afterwards, so parallel runs never mix."""
    try:
        with kombu.Connection(RABBIT + "//", connect_timeout=3) as probe:
            probe.ensure_connection(max_retries=1)
    except Exception as exc:
        pytest.skip(f"no RabbitMQ at {RABBIT} ({exc}); set DECLIC_TEST_RABBITMQ_URL to run these")
    if shutil.which("rabbitmqctl") is None:
        pytest.fail("rabbitmqctl is needed to create a test vhost (it ships with rabbitmq-server)")
    vhost = f"declic_test_{secrets.token_hex(4)}"
    _ctl("add_vhost", vhost)
    _ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    yield f"{RABBIT}/{vhost}"
    _ctl("delete_vhost", vhost)


@pytest.fixture(scope="module")
def rabbit_worker(
    rabbit_url: str, worker_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    env = {**worker_env, "DECLIC_BROKER_URL": rabbit_url, "DECLIC_SEND_LEASE_S": "8"}
    process = WorkerProcess(env, list(QUEUES), concurrency=4,
                            name="rabbit", log_path=tmp_path_factory.mktemp("rabbit") / "worker.log")
    process.start()
    try:
        process.wait_ready(60)
        yield process
    finally:
        # The module's results are taken: a retry it holds until its ETA (a copy of a send the
        # killed worker had claimed) is not waited for, as a warm shutdown would.
        process.stop(2)


def test_order_to_email_over_rabbitmq(
    rabbit_url: str, rabbit_worker: WorkerProcess, services: Services, store: Store, catalogue: Catalogue
) -> None:
    """An order published to RabbitMQ with confirms becomes one email, and a duplicate sends nothing more."""
    event = fresh(catalogue["order_confirmation"].sample)
    with Publisher(rabbit_url) as publisher:
        publisher.publish(event)
        publisher.publish(event)
    [send] = final_sends(store, event["id"], "order_confirmation")
    assert send["state"] == "sent"
    assert len(requests_for(services, str(send["id"]))) == 1


def test_killed_worker_loses_nothing_on_rabbitmq(
    rabbit_url: str, rabbit_worker: WorkerProcess, worker_env: dict[str, str], services: Services,
    store: Store, catalogue: Catalogue, tmp_path: Path,
) -> None:
    """Killing a worker with SIGKILL mid-run: RabbitMQ redelivers its messages and every email goes out.

    Sends the victim had claimed are taken over when their lease (8 s here) ends. One whose
    SES call had already succeeded is then sent twice: the documented window, bounded by the
    victim's concurrency, and counted here.
    """
    env = {**worker_env, "DECLIC_BROKER_URL": rabbit_url, "DECLIC_SEND_LEASE_S": "8"}
    victim = WorkerProcess(env, ["events.critical", "events", "send.transactional"], concurrency=4, name="victim",
                           log_path=tmp_path / "victim.log")
    victim.start()
    victim.wait_ready(60)
    events = [fresh(catalogue["shipping_confirmation"].sample) for _ in range(60)]
    with Publisher(rabbit_url) as publisher:
        for event in events:
            publisher.publish(event)
    time.sleep(0.3)
    victim.kill()
    sends = [final_sends(store, e["id"], "shipping_confirmation", timeout=60)[0] for e in events]
    assert {s["state"] for s in sends} == {"sent"}, "nothing lost"
    counts = [len(requests_for(services, str(s["id"]))) for s in sends]
    assert min(counts) == 1
    duplicated = sum(c - 1 for c in counts)
    print(f"rabbitmq kill: {len(events)} events, {sum(counts)} emails, 0 lost, {duplicated} duplicated")
    assert duplicated <= 4, "at most the victim's in-flight SES calls can repeat"
