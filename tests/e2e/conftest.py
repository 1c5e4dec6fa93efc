"""End-to-end fixtures: real `celery worker` processes on the run's real services."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from declic.processes import ManagedProcess, WorkerProcess
from declic.services import Services
from events import Publisher
from workers.app import QUEUES
from workers.store import Store


@pytest.fixture(scope="session")
def worker_env(services: Services) -> dict[str, str]:
    # One day of follow-up delay lasts one second here; lost messages are looked for after 3 s.
    return {**services.env(), "DECLIC_LOG_FORMAT": "json", "DECLIC_SES_TIMEOUT_S": "5",
            "DECLIC_DELAY_SCALE": str(1 / 86400), "DECLIC_LOST_AFTER_S": "3",
            # moto publishes no SES Send notifications: an ambiguous send waits briefly, then goes.
            "DECLIC_SES_AMBIGUOUS_WAIT_S": "3"}


@pytest.fixture(scope="session")
def worker(worker_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """One worker on every queue, as `declic worker` runs by default."""
    log = tmp_path_factory.mktemp("workers") / "w1.log"
    process = WorkerProcess(
        worker_env, list(QUEUES),
        concurrency=4, pool="threads", name="e2e", log_path=log,
    )
    with process:
        process.wait_ready(60)
        yield process


@pytest.fixture(scope="session")
def publisher(services: Services) -> Iterator[Publisher]:
    with Publisher(services.broker_url) as pub:
        yield pub


def fresh(event: dict[str, Any]) -> dict[str, Any]:
    """The event with a new id and occurred just now, so freshness limits pass."""
    from datetime import UTC, datetime

    return {**event, "id": f"e2e-{uuid.uuid4()}", "occurred_at": datetime.now(UTC).isoformat()}


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def final_sends(
    store: Store, event_id: str, flow: str, count: int = 1, timeout: float = 30.0
) -> list[dict[str, Any]]:
    """Wait until the event has `count` sends of `flow`, all in a final state, and return them."""
    def done() -> list[dict[str, Any]] | None:
        rows = [r for r in store.sends_for_event(event_id) if r["flow"] == flow]
        final = [r for r in rows if r["state"] in ("sent", "skipped", "failed")]
        return rows if len(rows) == count and len(final) == count else None

    result: list[dict[str, Any]] = wait_for(done, timeout=timeout, what=f"sends of {event_id}")
    return result


@pytest.fixture
def log_path(worker: WorkerProcess) -> Path:
    return worker.log_path


def dispatcher_process(env: dict[str, str], log_path: Path) -> ManagedProcess:
    import sys

    return ManagedProcess([sys.executable, "-m", "declic", "dispatcher", "--interval", "0.2"], env, log_path,
                          ready_line="dispatcher_started", name="dispatcher")
