"""Per-key rate limits: a token bucket in Redis, shared by every API process.

The bucket holds up to ``rate`` tokens (one minute's worth, so a client may burst that much)
and refills at ``rate / 60`` tokens a second; each request takes one, a batch too. The whole
read-refill-take runs as one Lua script, atomically, on the Redis server's own clock
(``TIME``), so processes on hosts whose clocks disagree still share one consistent bucket.

Answers carry the IETF draft headers (draft-ietf-httpapi-ratelimit-headers):
``RateLimit-Limit``, ``RateLimit-Remaining``, ``RateLimit-Reset`` (seconds until the bucket is
full again) and ``RateLimit-Policy``; a refusal adds ``Retry-After`` (RFC 9110 §10.2.3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import redis.asyncio as aioredis

# KEYS[1] bucket; ARGV[1] capacity (= requests per minute). Returns allowed, remaining,
# ms until one token, ms until full. Redis ≥ 5 replicates script effects, so TIME is allowed.
_BUCKET_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local capacity = tonumber(ARGV[1])
local per_ms = capacity / 60000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or capacity
local ts = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - ts) * per_ms)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], 120000)
local retry_ms = 0
if allowed == 0 then retry_ms = math.ceil((1 - tokens) / per_ms) end
return {allowed, math.floor(tokens), retry_ms, math.ceil((capacity - tokens) / per_ms)}
"""

KEY_PREFIX = "declic:api:rate:"


@dataclass(frozen=True)
class Decision:
    """One request's verdict and what to tell the client about the bucket."""

    allowed: bool
    limit: int
    remaining: int
    retry_after_s: int
    reset_s: int

    def headers(self) -> dict[str, str]:
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_s),
            "RateLimit-Policy": f"{self.limit};w=60",
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after_s)
        return headers


def decision_from_reply(reply: list[int], limit: int) -> Decision:
    """Turn the script's reply into a :class:`Decision` (seconds rounded up, never 0 on refusal)."""
    allowed, remaining, retry_ms, reset_ms = (int(v) for v in reply)
    return Decision(
        allowed=bool(allowed),
        limit=limit,
        remaining=max(0, remaining),
        retry_after_s=max(1, math.ceil(retry_ms / 1000)) if not allowed else 0,
        reset_s=max(0, math.ceil(reset_ms / 1000)),
    )


class RateLimiter:
    """Takes one token from a key's bucket per request."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._script = client.register_script(_BUCKET_SCRIPT)

    async def hit(self, bucket: str, rate_per_minute: int) -> Decision:
        """Take a token for ``bucket``; raises ``redis.RedisError`` when Redis is unreachable."""
        reply = await self._script(keys=[KEY_PREFIX + bucket], args=[rate_per_minute])
        return decision_from_reply(list(reply), rate_per_minute)
