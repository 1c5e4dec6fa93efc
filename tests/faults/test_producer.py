"""The broker unreachable when a producer publishes: a clear refusal, nothing half-accepted."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.keys import KeyStore, open_pool
from api.serving import ApiProcess
from declic.standin import StandInClient
from events import Publisher, PublishError
from flows import Catalogue
from tests.faults.harness import Result, assert_promises, pipeline, seeded_events, settle
from tests.faults.infra import RestartablePostgres, RestartableRedis
from tests.faults.notifier import SendNotifier
from tests.faults.report import Results
from workers.app import INGEST_QUEUES, SEND_QUEUES

pytestmark = pytest.mark.faults


@pytest.fixture
def broker(fault_dir: Path) -> Iterator[RestartableRedis]:
    """A broker of its own, apart from the Redis the API dedupes in, so only the broker goes away."""
    server = RestartableRedis(fault_dir / f"broker-{uuid.uuid4().hex[:6]}").start()
    yield server
    server.stop()


def _post(api: ApiProcess, key: str, event: dict[str, Any]) -> httpx.Response:
    return httpx.post(api.url + "/v1/events", json=event, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def test_broker_down_at_publish(
    fault_env: dict[str, str], broker: RestartableRedis, fault_postgres: RestartablePostgres,
    standin_client: StandInClient, notifier: SendNotifier, catalogue: Catalogue, tmp_path: Path, results: Results,
) -> None:
    """Broker down: the API answers 503, the SDK raises PublishError, and the same events later go through once."""
    env = {**fault_env, "DECLIC_BROKER_URL": broker.url, "DECLIC_API_KEY_CACHE_S": "0"}
    pool = open_pool(fault_postgres.url, max_size=1)
    key, _ = KeyStore(pool).create("faults", ["events:write"], 100_000)
    pool.close()
    events = seeded_events(catalogue, 60, "producer")
    before, during, sdk_event = events[:40], events[40:50], events[50]
    with pipeline(env, tmp_path, fault_postgres.url, broker.url, standin_client, catalogue) as run, \
            ApiProcess(env, tmp_path / "api.log") as api:
        run.worker("ingest", list(INGEST_QUEUES))
        run.worker("send", list(SEND_QUEUES))
        run.dispatcher()
        run.wait_ready()
        run.supervise()
        for event in before:
            assert _post(api, key, event).status_code == 202
            run.published[event["id"]] = event
        broker.stop()
        refused = [_post(api, key, event) for event in during]
        batch = httpx.post(api.url + "/v1/events/batch", json={"events": during},
                           headers={"Authorization": f"Bearer {key}"}, timeout=60)
        started = time.monotonic()
        with Publisher(broker.url, retries=1) as sdk, pytest.raises(PublishError):
            sdk.publish(sdk_event)
        sdk_s = time.monotonic() - started
        with run.db() as conn:
            half = conn.execute("SELECT count(*) AS n FROM events WHERE id = ANY(%s)",
                                ([e["id"] for e in during],)).fetchone()
        broker.start()
        again = [_post(api, key, event) for event in during]
        run.published.update({e["id"]: e for e in during})
        run.publish([sdk_event])
        result = settle(run, Result("broker down at publish"), timeout=60)
    result.notes.update(api_503=sum(r.status_code == 503 for r in refused), batch_status=batch.status_code,
                        sdk_raised_after_s=round(sdk_s, 1), processes_restarted=dict(run.restarts))
    results.add(result)
    assert [r.status_code for r in refused] == [503] * len(during)
    assert all("broker" in r.json()["message"] for r in refused)
    assert batch.status_code == 503 and batch.json()["unavailable"] == len(during)
    assert half is not None and half["n"] == 0
    # Nothing half-accepted: the refused ids were given back, so the retry is accepted, not "duplicate".
    assert [r.status_code for r in again] == [202] * len(during)
    assert_promises(result)
