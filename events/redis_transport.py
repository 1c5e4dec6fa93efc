"""kombu's Redis transport with one client per connection pool instead of one per command.

kombu's Redis channel builds a new ``redis.Redis`` around its pool for every message it puts,
every exchange it looks up, every message it marks unacknowledged and every ack. redis-py's
constructor fills a table of several hundred response callbacks each time: about half of a
producer's CPU per published event, and a tenth of a worker's messaging CPU. One client per
pool does the same work — a client is a thread-safe wrapper of its pool — and a new pool
(after a reconnect) gets a new client.

Used by the SDK's :class:`events.publisher.Publisher` and, with a fix of its own, by the
workers (:mod:`workers.redis_transport`), for ``redis://`` brokers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from kombu.transport import redis as kombu_redis

TRANSPORT = "events.redis_transport:Transport"


class Channel(kombu_redis.Channel):
    """kombu's Redis channel, reusing one client per connection pool."""

    _shared: tuple[Any, redis.Redis] | None = None

    @contextmanager
    def conn_or_acquire(self, client: redis.Redis | None = None) -> Iterator[redis.Redis]:
        if client is not None:
            yield client
            return
        pool = self.pool
        shared = self._shared
        if shared is None or shared[0] is not pool:
            shared = (pool, self._create_client())  # type: ignore[attr-defined]  # private to kombu
            self._shared = shared
        yield shared[1]


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with :class:`Channel`."""

    Channel = Channel
