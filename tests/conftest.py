"""Shared fixtures: real services for the run, a migrated database, a store and the catalogue.

Services come from :func:`declic.services.start_services` in test mode: the ``DECLIC_*``
URLs when set, else the Postgres and Redis on their default local ports (a fresh database,
dropped at the end), else embedded ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from declic.services import Services, claim_empty_db, start_services
from declic.settings import REPO_ROOT
from flows import Catalogue, load_catalogue
from reporting.db import Pool, connect_pool
from reporting.testing import RESET_REPORTING
from workers.migrate import migrate
from workers.rendering import Renderer
from workers.store import Store

# The fault harness's results table, gathered from test reports (also across pytest -n processes).
pytest_plugins = ["tests.faults.report"]

BRAND = {"name": "Maison Lumière", "url": "https://shop.example.com",
         "address": "12 rue des Lilas, 75011 Paris", "support_email": "support@shop.example.com"}


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    with start_services(tmp_path_factory.mktemp("services"), mode="test") as running:
        migrate(running.database_url)
        yield running


@pytest.fixture(scope="session")
def session_store(services: Services) -> Iterator[Store]:
    store = Store.connect(services.database_url, max_size=4, lease_s=120)
    yield store
    store.close()


@pytest.fixture
def store(session_store: Store) -> Store:
    """The store over an emptied database, so each test starts from nothing."""
    with session_store.pool.connection() as conn:
        conn.execute("TRUNCATE events, contacts, sends, suppressions, dead_letters CASCADE")
    return session_store


@pytest.fixture(scope="session")
def pool(services: Services) -> Iterator[Pool]:
    """A connection pool for the reporting side's own queries."""
    pool = connect_pool(services.database_url, max_size=2)
    yield pool
    pool.close()


@pytest.fixture
def db(pool: Pool, store: Store) -> Pool:
    """An empty reporting schema over emptied core tables (the ``store`` fixture)."""
    with pool.connection() as conn:
        conn.execute(RESET_REPORTING)
    return pool


@pytest.fixture
def own_broker(services: Services) -> Iterator[str]:
    """The run's Redis, on a database of its own that no worker of the run listens to."""
    import redis

    parts = urlsplit(services.redis_url)
    db = claim_empty_db(services.redis_url, skip=int(parts.path.strip("/") or 0))
    if db is None:
        pytest.fail("no empty Redis database for the test's broker")
    url = urlunsplit(parts._replace(path=f"/{db}"))
    yield url
    with redis.Redis.from_url(url) as client:
        client.flushdb()


@pytest.fixture(scope="session")
def catalogue() -> Catalogue:
    return load_catalogue(REPO_ROOT / "flows" / "catalogue")


@pytest.fixture(scope="session")
def renderer() -> Renderer:
    return Renderer(REPO_ROOT / "templates", BRAND)


@pytest.fixture
def templates_dir() -> Path:
    return REPO_ROOT / "templates"
