"""Who is calling: ``Authorization: Bearer <key>`` → an active :class:`ApiKey` with a scope.

401 when the header is missing, malformed, or names no active key; 403 when the key lacks
the scope. Found keys (and misses) are cached per process for ``api_key_cache_s`` seconds so
a request costs no database round trip; a revocation therefore takes effect within that time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg
import psycopg_pool
from starlette.concurrency import run_in_threadpool

from api.errors import Forbidden, Unauthorized, Unavailable
from api.keys import ApiKey, hash_key

_CACHE_MAX = 10_000


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer …`` header; 401 otherwise."""
    if not authorization:
        raise Unauthorized("send your API key as 'Authorization: Bearer <key>'")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("the Authorization header must be 'Bearer <key>'")
    return token


class Authenticator:
    """Resolves tokens to keys through ``find`` (a database lookup), with a small TTL cache."""

    def __init__(self, find: Callable[[str], ApiKey | None], *, cache_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._find = find
        self._cache_s = cache_s
        self._clock = clock
        self._cache: dict[str, tuple[float, ApiKey | None]] = {}
        self._lock = threading.Lock()

    def _cached(self, digest: str) -> tuple[bool, ApiKey | None]:
        with self._lock:
            hit = self._cache.get(digest)
        if hit is not None and hit[0] > self._clock():
            return True, hit[1]
        return False, None

    def _remember(self, digest: str, key: ApiKey | None) -> None:
        with self._lock:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()  # crude but bounded: an attacker's random keys cannot grow it
            self._cache[digest] = (self._clock() + self._cache_s, key)

    async def authenticate(self, authorization: str | None, scope: str) -> ApiKey:
        """The caller's key, checked for ``scope``; raises 401, 403 or 503 (database down)."""
        token = bearer_token(authorization)
        digest = hash_key(token)
        found, key = self._cached(digest)
        if not found:
            try:
                key = await run_in_threadpool(self._find, token)
            except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
                raise Unavailable("the key store (Postgres) is unreachable; try again shortly") from exc
            if self._cache_s > 0:
                self._remember(digest, key)
        if key is None:
            raise Unauthorized("unknown or revoked API key")
        if not key.allows(scope):
            raise Forbidden(f"this key lacks the {scope!r} scope", errors=[{"field": "scope", "message": scope}])
        return key
