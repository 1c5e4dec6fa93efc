"""One SES rate for all workers: four worker processes against a stand-in that enforces it."""

from __future__ import annotations

import time

import pytest

from declic.standin import StandInClient
from flows import Catalogue
from tests.faults.harness import Result, Run, assert_promises, seeded_events, settle
from tests.faults.report import Results
from workers.app import QUEUES
from workers.governor import GovernorConfig

pytestmark = pytest.mark.faults

RATE = 60


def test_four_workers_share_the_account_rate(
    run: Run, catalogue: Catalogue, standin_client: StandInClient, results: Results
) -> None:
    """Four workers sending flat out never exceed the account's rate (plus a small burst) in any second."""
    run.env["DECLIC_SES_MAX_RATE"] = str(RATE)
    # SES's own limit, a little above ours: a throttle would mean the governor let too much through.
    standin_client.configure(max_rate=RATE * 1.5)
    for n in range(4):
        run.worker(f"w{n}", list(QUEUES), concurrency=16)
    run.dispatcher()
    run.wait_ready()
    # A few events first, so every worker thread has its SES connection before the measure:
    # on a busy machine, first calls' set-up delays tokens taken in one second into the next.
    run.publish(seeded_events(catalogue, 16, "rate-warm"))
    run.wait_final(60)
    measured_from = int(time.time()) + 1
    run.publish(seeded_events(catalogue, 250, "rate"))
    result = settle(run, Result(f"4 workers, shared rate {RATE}/s"), timeout=90)
    stats = standin_client.stats()
    per_second = {int(k): v for k, v in stats["per_second"].items() if int(k) >= measured_from}
    busy = sorted(per_second)[1:-1]  # whole seconds only: the first and last are partial
    burst = RATE * GovernorConfig(max_rate=RATE).burst_s
    result.notes.update(max_per_second=max(per_second.values()), throttled=stats["throttled"],
                        seconds=len(per_second))
    results.add(result)
    assert_promises(result)
    assert busy, "the run lasted several seconds"
    assert stats["throttled"] == 0, stats
    assert max(per_second[s] for s in busy) <= RATE + burst + 1, per_second
