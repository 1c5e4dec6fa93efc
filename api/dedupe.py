"""First-seen claims in Redis: ``SET key 1 NX EX ttl`` per event id or webhook delivery id.

A claim is taken before publishing and given back (deleted) if publishing then fails, so a
client's retry is accepted instead of being answered "duplicate" for something never queued.
Ingest deduplicates by event id in Postgres forever; this is the fast first line that lets
the API answer ``"duplicate": true`` without touching the broker.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis

EVENT_NS = "declic:api:seen:event:"
DELIVERY_NS = "declic:api:seen:delivery:"


class Dedupe:
    """Claims and releases ids under a namespace, many per round trip."""

    def __init__(self, client: aioredis.Redis, ttl_s: int) -> None:
        self._client = client
        self._ttl_s = ttl_s

    async def claim(self, namespace: str, ids: Sequence[str]) -> list[bool]:
        """For each id, True when this call claimed it first (repeats in ``ids`` lose)."""
        if not ids:
            return []
        pipe = self._client.pipeline(transaction=False)
        for id_ in ids:
            pipe.set(namespace + id_, b"1", nx=True, ex=self._ttl_s)
        return [bool(r) for r in await pipe.execute()]

    async def release(self, namespace: str, ids: Sequence[str]) -> None:
        """Forget claims whose work did not happen, so a retry is accepted."""
        if ids:
            await self._client.delete(*(namespace + i for i in ids))
