"""Redis (the broker and the rate governor) and Postgres (the ledger) restarted in the middle of a run."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from flows import Catalogue
from tests.faults.harness import Result, Run, assert_promises, seeded_events, settle
from tests.faults.infra import RestartablePostgres, RestartableRedis
from tests.faults.report import Results
from workers.app import INGEST_QUEUES, SEND_QUEUES

pytestmark = pytest.mark.faults
EVENTS = 600


def _restart_mid_run(run: Run, catalogue: Catalogue, name: str, restart: Callable[[], float]) -> Result:
    run.worker("ingest", list(INGEST_QUEUES))
    run.worker("send", list(SEND_QUEUES))
    run.dispatcher()
    run.wait_ready()
    run.supervise()
    events = seeded_events(catalogue, EVENTS, name)
    # About 75 events/s, so the restart lands while events are still being published.
    publishing = threading.Thread(target=run.publish, args=(events,),
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
