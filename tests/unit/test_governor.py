"""The shared SES rate: one token bucket in Redis for every worker process."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator

import pytest
import redis

from declic.services import Services
from workers.governor import Governor, GovernorConfig, RateWaitTooLong, account_max_rate


@pytest.fixture
def client(services: Services) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(services.redis_url)
    client.delete("test:rate", "test:rate:cut")
    yield client
    client.delete("test:rate", "test:rate:cut")


def _grab(url: str, count: int, rate: float, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    governor = Governor(redis.Redis.from_url(url), GovernorConfig(max_rate=rate, reserve=0.0), key="test:rate")
    stamps = []
    for _ in range(count):
        governor.acquire(1)
        stamps.append(governor.last_grant_at)  # Redis's clock: what every process shares
    out.put(stamps)


def test_four_processes_share_one_rate(services: Services, client: redis.Redis) -> None:
    """Four processes sending as fast as they can never exceed the rate plus a small burst in any second."""
    rate = 40.0
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    procs = [context.Process(target=_grab, args=(services.redis_url, 30, rate, queue)) for _ in range(4)]
    for p in procs:
        p.start()
    stamps = sorted(t for _ in procs for t in queue.get(timeout=60))
    for p in procs:
        p.join(10)
    burst = rate * GovernorConfig(max_rate=rate).burst_s
    worst = max(sum(1 for t in stamps if start <= t < start + 1.0) for start in stamps)
    assert worst <= rate + burst + 1, f"{worst} sends in one second at a rate of {rate}"
    elapsed = stamps[-1] - stamps[0]
    assert elapsed >= (120 - burst) / rate * 0.9, "the 120 sends were spread at the shared rate"


def test_throttling_halves_then_recovers(client: redis.Redis) -> None:
    """A throttle halves the rate once per second, and the rate climbs back over time."""
    governor = Governor(client, GovernorConfig(max_rate=100, recover_s=1.0), key="test:rate")
    governor.acquire(1)
    assert governor.throttled() == 50.0
    assert governor.throttled() is None  # a second report within the same second changes nothing
    time.sleep(0.6)
    governor.acquire(1)
    assert 90 <= governor.current_rate() <= 100


def test_critical_sends_use_the_reserve(client: redis.Redis) -> None:
    """When bulk sends have drained the bucket to its reserve, a critical send still goes at once."""
    governor = Governor(client, GovernorConfig(max_rate=10, reserve=0.5, burst_s=1.0, max_wait_s=0.05),
                        key="test:rate")
    granted = 0
    with pytest.raises(RateWaitTooLong):
        for _ in range(20):
            governor.acquire(1)
            granted += 1
    assert granted == 5  # half the bucket is reserved
    assert governor.acquire(1, critical=True) < 0.01


def test_account_rate_comes_from_get_account() -> None:
    """MaxSendRate is read from GetAccount, and a failure means 'use the setting'."""

    class Account:
        def get_account(self) -> dict[str, object]:
            return {"SendQuota": {"MaxSendRate": 14.0}}

    class NoAccount:
        def get_account(self) -> dict[str, object]:
            raise RuntimeError("not implemented")

    assert account_max_rate(Account()) == 14.0
    assert account_max_rate(NoAccount()) is None
