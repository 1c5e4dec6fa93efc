"""Everything one API process holds for its lifetime: clients, the publisher, the config.

Built once at start-up (:func:`open_state`) and closed at shutdown, so requests reuse one
Redis pool, one broker connection and one Postgres pool. Nothing connects at import time.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import redis
import redis.asyncio as aioredis

from api.accepting import Acceptor
from api.auth import Authenticator
from api.dedupe import Dedupe
from api.integrations.config import Integration, build_integrations
from api.keys import KeyStore, Pool, open_pool
from api.metrics import ApiMetrics, PipelineCollector
from api.publishing import SharedPublisher
from api.ratelimit import RateLimiter
from declic.settings import Settings
from events import Publisher
from workers.store import Store

# A request must answer quickly even when a dependency hangs: every client has a timeout.
_REDIS_TIMEOUT_S = 2.0


@dataclass
class ApiState:
    settings: Settings
    redis_async: aioredis.Redis
    broker_redis: redis.Redis | None
    pool: Pool
    keys: KeyStore
    store: Store
    authenticator: Authenticator
    limiter: RateLimiter
    acceptor: Acceptor
    publisher: SharedPublisher
    integrations: dict[str, Integration]
    metrics: ApiMetrics

    async def close(self) -> None:
        self.publisher.close()
        with contextlib.suppress(Exception):
            self.pool.close()
        await self.redis_async.aclose()
        if self.broker_redis is not None:
            self.broker_redis.close()


def open_state(settings: Settings) -> ApiState:
    """Build the process's clients; reading the integrations file may raise a config error."""
    integrations = build_integrations(settings)
    client = aioredis.Redis.from_url(
        settings.effective_redis_url, socket_timeout=_REDIS_TIMEOUT_S, socket_connect_timeout=_REDIS_TIMEOUT_S
    )
    broker_redis = None
    if settings.broker_url.startswith(("redis://", "rediss://", "redis+socket://")):
        broker_redis = redis.Redis.from_url(
            settings.broker_url, socket_timeout=_REDIS_TIMEOUT_S, socket_connect_timeout=_REDIS_TIMEOUT_S
        )
    pool = open_pool(settings.database_url, max_size=8)
    keys = KeyStore(pool)
    # A short retry budget: a caller waiting on a dead broker should get its 503 in seconds.
    publisher = SharedPublisher(Publisher(settings.broker_url, retries=1, timeout_s=2.0,
                                          critical_types=frozenset(settings.critical_event_types)))
    metrics = ApiMetrics()
    metrics.registry.register(PipelineCollector(broker_redis, pool))
    return ApiState(
        settings=settings,
        redis_async=client,
        broker_redis=broker_redis,
        pool=pool,
        keys=keys,
        store=Store(pool),  # same row factory (dict_row); its transactions work in autocommit too
        authenticator=Authenticator(keys.find, cache_s=settings.api_key_cache_s),
        limiter=RateLimiter(client),
        acceptor=Acceptor(Dedupe(client, settings.api_dedupe_ttl_s), publisher),
        publisher=publisher,
        integrations=integrations,
        metrics=metrics,
    )
