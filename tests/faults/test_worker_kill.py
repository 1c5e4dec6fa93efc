"""A worker killed with SIGKILL again and again while events flow, on Redis and on RabbitMQ."""

from __future__ import annotations

import random
import threading
import time

import pytest

from flows import Catalogue
from tests.faults.harness import BROKERS, Result, Run, assert_promises, paced, seeded_events, settle
from tests.faults.report import Results
from workers.app import INGEST_QUEUES, QUEUES, SEND_QUEUES

pytestmark = pytest.mark.faults


def _kill_repeatedly(run: Run, catalogue: Catalogue, name: str, victim_queues: list[str], events: int,
                     timeout: float) -> Result:
    run.worker("ingest", list(INGEST_QUEUES))
    run.worker("steady", list(SEND_QUEUES))
    victim = run.worker("victim", victim_queues)
    run.dispatcher()
    run.wait_ready()
    stream = seeded_events(catalogue, events, "kill")
    # Paced so the run lasts long enough for several kills on two cores (about 75 events/s).
    publishing = threading.Thread(target=run.publish, args=(stream,),
                                  kwargs={"pace": paced(75)}, daemon=True)
    publishing.start()
    rng = random.Random(6)  # a repeatable schedule of kills
    kills: list[tuple[float, list[str]]] = []
    while publishing.is_alive() or (run.unfinished() > 0 and len(kills) < 3):
        time.sleep(rng.uniform(1.0, 2.0))
        held = run.sending_now()
        victim.kill()
        kills.append((time.time(), held))
        victim = run.worker("victim", victim_queues)
        victim.wait_ready(90)
    publishing.join()
    result = settle(run, Result(name), timeout=timeout)
    recoveries = [(run.finished_at(held) or time.time()) - at for at, held in kills if held]
    result.recover_s = round(max(recoveries, default=0.0), 1)
    result.notes.update(kills=len(kills), claims_held_at_kills=sum(len(h) for _, h in kills))
    return result


def test_send_worker_killed_repeatedly(run: Run, catalogue: Catalogue, results: Results) -> None:
    """SIGKILLing a send worker every 1–2 s while 900 events flow loses nothing and sends nothing twice."""
    result = _kill_repeatedly(run, catalogue, "send worker SIGKILL", list(SEND_QUEUES), 900, timeout=120)
    results.add(result)
    assert_promises(result)


@pytest.mark.parametrize("broker_kind", BROKERS, indirect=True)
def test_ingesting_worker_killed_repeatedly(run: Run, catalogue: Catalogue, results: Results, broker_kind: str) -> None:
    """SIGKILLing a worker on every queue (it ingests and sends inline) every 1–2 s loses no event.

    On RabbitMQ nothing at all may be lost: a dead consumer's unacknowledged messages go back
    to their queue, with no window like Redis's between taking a message and recording it.
    """
    events = 600 if broker_kind == "redis" else 400
    result = _kill_repeatedly(run, catalogue, "all-queues worker SIGKILL", list(QUEUES), events, timeout=45)
    results.add(result)
    assert_promises(result)
