"""Fixtures of the fault harness: servers of the run's own, the SES stand-in, the results table.

Redis and Postgres here are never the machine's shared ones (other sessions use them): they
are started for this run, on addresses that survive a restart (:mod:`tests.faults.infra`).

The broker is the run's Redis unless a test asks for RabbitMQ with
``@pytest.mark.parametrize("broker_kind", BROKERS, indirect=True)``: then it is a fresh vhost
on the machine's RabbitMQ (:class:`tests.faults.infra.RabbitVhost`), deleted afterwards, and
Redis stays the rate governor's and the dedupe keys' store.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from declic.standin import Faults, StandIn, StandInClient
from flows import Catalogue
from tests.faults.harness import Run, pipeline
from tests.faults.infra import RABBITMQ_URL, RabbitVhost, RestartablePostgres, RestartableRedis
from tests.faults.notifier import SendNotifier
from tests.faults.report import Results
from workers.migrate import migrate


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "faults: the fault harness (real workers, services of the run's own)")
    config.addinivalue_line("markers", "xdist_group(name): run in one pytest -n process (pytest-xdist)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # One test process runs the scenarios one after the other (pytest -n: --dist loadgroup):
    # each restarts the harness's own servers, which the others share.
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.xdist_group("faults"))


@pytest.fixture
def results(request: pytest.FixtureRequest) -> Results:
    return Results(request.node)


@pytest.fixture(scope="session")
def fault_dir() -> Iterator[Path]:
    """Data of the run's servers, outside pytest's numbered temporary directories.

    Those are pruned by any other pytest run on the machine, which must not happen to a
    live Postgres data directory.
    """
    path = Path(tempfile.mkdtemp(prefix="declic-faults-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def fault_redis(fault_dir: Path) -> Iterator[RestartableRedis]:
    server = RestartableRedis(fault_dir / "redis").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fault_postgres(fault_dir: Path) -> Iterator[RestartablePostgres]:
    server = RestartablePostgres(fault_dir / "pgdata").start()
    migrate(server.url)
    yield server
    server.close()


@pytest.fixture
def clean(fault_redis: RestartableRedis, fault_postgres: RestartablePostgres) -> None:
    """Empty broker and tables, so each scenario counts only its own work."""
    with fault_redis.client() as client:
        client.flushall()
    import psycopg

    with psycopg.connect(fault_postgres.url, autocommit=True) as conn:
        conn.execute("TRUNCATE events, contacts, sends, suppressions, dead_letters CASCADE")
        conn.execute("TRUNCATE reporting.email_events, reporting.sns_messages")


@pytest.fixture
def broker_kind(request: pytest.FixtureRequest) -> str:
    """``redis`` (the run's own) unless the test is parametrized with ``rabbitmq``."""
    kind: str = getattr(request, "param", "redis")
    assert kind in ("redis", "rabbitmq"), kind
    return kind


@pytest.fixture(scope="session")
def rabbit_vhosts() -> Iterator[list[RabbitVhost]]:
    """Vhosts being deleted in the background while later scenarios run; all gone by the session's end."""
    deleting: list[RabbitVhost] = []
    yield deleting
    for vhost in deleting:
        vhost.wait_deleted()


@pytest.fixture
def rabbit(broker_kind: str, rabbit_vhosts: list[RabbitVhost]) -> Iterator[RabbitVhost | None]:
    """A fresh vhost on the machine's RabbitMQ for a RabbitMQ scenario, deleted at the end; else None."""
    if broker_kind != "rabbitmq":
        yield None
        return
    vhost = RabbitVhost.create(RABBITMQ_URL)
    try:
        yield vhost
    finally:
        vhost.delete()
        rabbit_vhosts.append(vhost)


@pytest.fixture
def broker_url(fault_redis: RestartableRedis, rabbit: RabbitVhost | None) -> str:
    return rabbit.url if rabbit is not None else fault_redis.url


@pytest.fixture
def standin() -> Iterator[StandIn]:
    """The SES stand-in for one scenario, with a little latency; the scenario sets its faults."""
    with StandIn(Faults(latency_ms=15, seed=6, hang_s=30)) as server:
        yield server


@pytest.fixture
def standin_client(standin: StandIn) -> StandInClient:
    assert standin.client is not None
    return standin.client


@pytest.fixture
def notifier(standin_client: StandInClient, fault_postgres: RestartablePostgres, clean: None) -> Iterator[SendNotifier]:
    """SES's Send notifications, stored as the reporting consumer would (see the module)."""
    running = SendNotifier(standin_client, fault_postgres.url, delay_s=0.5).start()
    yield running
    running.stop()


@pytest.fixture
def fault_env(fault_redis: RestartableRedis, fault_postgres: RestartablePostgres, broker_url: str,
              standin: StandIn, clean: None) -> dict[str, str]:
    """What every process of a scenario gets: the run's servers, and the stand-in as SES."""
    return {
        "DECLIC_DATABASE_URL": fault_postgres.url,
        "DECLIC_BROKER_URL": broker_url,
        "DECLIC_REDIS_URL": fault_redis.url,
        "DECLIC_SECRET_KEY": secrets.token_urlsafe(32),
        "DECLIC_SES_MAX_RATE": "5000",
        "DECLIC_SES_TIMEOUT_S": "2",
        # Longer than an SES call (2 s) plus the rate wait, so a live claim is never taken over.
        "DECLIC_SEND_LEASE_S": "8",
        "DECLIC_BROKER_VISIBILITY_TIMEOUT_S": "10",
        # A send nobody took for 6 s is enqueued again (swept every 3 s): a lost message, or a
        # claim a killed worker held once its lease is over, is found within 9 s.
        "DECLIC_LOST_AFTER_S": "6",
        "DECLIC_OUTBOX_GRACE_S": "3",  # an event lost on the broker is published again after 3 s
        # A day of follow-up delay lasts a quarter of a second: the day-2 and day-7 steps fall
        # due 0.5 s and 1.75 s after their event, still while the scenario's fault is going on,
        # and the run does not wait 7 s after its last event for them.
        "DECLIC_DELAY_SCALE": str(1 / (4 * 86400)),
        # Six times the notifier's delay (0.5 s): SES's Send notification of a message it
        # accepted is stored long before a worker looks for it.
        "DECLIC_SES_AMBIGUOUS_WAIT_S": "3",
        "DECLIC_LOG_FORMAT": "json",
        "AWS_ENDPOINT_URL": standin.url,  # nothing reaches real AWS
        "AWS_ENDPOINT_URL_SESV2": standin.url,
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }


@pytest.fixture
def run(fault_env: dict[str, str], fault_postgres: RestartablePostgres, broker_url: str, rabbit: RabbitVhost | None,
        standin_client: StandInClient, notifier: SendNotifier, catalogue: Catalogue, tmp_path: Path) -> Iterator[Run]:
    """A scenario's pipeline: start its processes with ``run.worker(...)``; all stopped at the end."""
    with pipeline(fault_env, tmp_path, fault_postgres.url, broker_url, standin_client, catalogue,
                  rabbit=rabbit) as running:
        yield running
