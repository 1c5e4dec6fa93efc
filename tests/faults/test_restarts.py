"""Redis (the broker and the rate governor) and Postgres (the ledger) restarted in the middle of a run,
and RabbitMQ's connections cut (the shared server itself is never restarted)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from flows import Catalogue
from tests.faults.harness import Result, Run, assert_promises, assert_promises_on_broker, seeded_events, settle
from tests.faults.infra import RabbitVhost, RestartablePostgres, RestartableRedis
from tests.faults.report import Results
from workers.app import INGEST_QUEUES, SEND_QUEUES

pytestmark = pytest.mark.faults
EVENTS = 600


def _restart_mid_run(run: Run, catalogue: Catalogue, name: str, restart: Callable[[], float],
                     events: int = EVENTS) -> Result:
    run.worker("ingest", list(INGEST_QUEUES))
    run.worker("send", list(SEND_QUEUES))
    run.dispatcher()
    run.wait_ready()
    run.supervise()
    stream = seeded_events(catalogue, events, name)
    # About 75 events/s, so the restart lands while events are still being published.
    publishing = threading.Thread(target=run.publish, args=(stream,),
                                  kwargs={"pace": lambda i: time.sleep(0.0133)}, daemon=True)
    publishing.start()
    time.sleep(3.0)
    held = run.sending_now()
    fault_at = time.time()
    down_s = restart()
    publishing.join()
    result = settle(run, Result(name), timeout=60)
    result.recover_s = run.flowing_again(fault_at + down_s)
    if result.recover_s is not None:
        result.recover_s = round(result.recover_s + down_s, 1)
    result.notes.update(down_s=round(down_s, 1), claims_held=len(held), publish_errors=run.publish_errors,
                        processes_restarted=dict(run.restarts))
    return result


def test_redis_restarted_mid_run(run: Run, catalogue: Catalogue, fault_redis: RestartableRedis,
                                 results: Results) -> None:
    """Restarting Redis (append-only file on) while events flow loses nothing and sends nothing twice."""
    result = _restart_mid_run(run, catalogue, "Redis restart", lambda: fault_redis.restart(down_s=2.0))
    results.add(result)
    assert_promises(result)


def test_postgres_restarted_mid_run(run: Run, catalogue: Catalogue, fault_postgres: RestartablePostgres,
                                    results: Results) -> None:
    """Restarting Postgres (fast shutdown) while events flow loses nothing and sends nothing twice."""
    result = _restart_mid_run(run, catalogue, "Postgres restart", lambda: fault_postgres.restart(down_s=2.0))
    results.add(result)
    assert_promises(result)


@pytest.mark.parametrize("broker_kind", ["rabbitmq"], indirect=True)
def test_rabbitmq_connections_closed_mid_run(run: Run, catalogue: Catalogue, rabbit: RabbitVhost | None,
                                             results: Results) -> None:
    """Closing every connection to the vhost while events flow loses nothing, sends nothing twice, ends no process.

    What workers, the dispatcher and the publisher see when RabbitMQ restarts or a node
    fails over, without restarting the machine's shared server: ``rabbitmqctl
    close_all_connections`` limited to the scenario's vhost. Unacknowledged messages go back
    to their queues; everyone reconnects.
    """
    assert rabbit is not None

    def close_connections() -> float:
        started = time.monotonic()
        rabbit.close_connections("declic fault harness: connections closed mid-run")
        return time.monotonic() - started

    result = _restart_mid_run(run, catalogue, "RabbitMQ connections closed", close_connections, events=300)
    result.notes["close_call_s"] = result.notes.pop("down_s")
    results.add(result)
    assert run.restarts == {}, f"a process exited when its connection was closed: {dict(run.restarts)}"
    assert_promises_on_broker(result)
