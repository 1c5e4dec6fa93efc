"""One SES sending rate for every worker: a token bucket in Redis, counted in recipients.

SES limits the account, not the process, so the bucket lives in Redis and is refilled by a
Lua script reading Redis's own clock (``TIME``): workers on any host, with any clock skew,
share one rate. The rate starts at the account's ``MaxSendRate`` (SES ``GetAccount``, or
``DECLIC_SES_MAX_RATE``); a throttling answer halves it, and it climbs back linearly to the
maximum over ``recover_s`` seconds — additive increase, multiplicative decrease, as TCP does.
Non-critical sends may not take the last ``reserve`` fraction of the bucket, so a password
reset finds tokens even while a bulk backlog drains at full speed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis

# KEYS[1] the bucket hash. ARGV: recipients, critical (0/1), max_rate, reserve, burst_s, recover_s.
# Returns the milliseconds to wait before asking again (0: granted), the current rate and Redis's time.
_ACQUIRE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1e6
local n = tonumber(ARGV[1])
local critical = tonumber(ARGV[2]) == 1
local max_rate = tonumber(ARGV[3])
local reserve = tonumber(ARGV[4])
local burst_s = tonumber(ARGV[5])
local recover_s = tonumber(ARGV[6])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts', 'rate')
local rate = tonumber(state[3]) or max_rate
local ts = tonumber(state[2]) or now
local elapsed = math.max(0, now - ts)
rate = math.min(max_rate, rate + max_rate * elapsed / recover_s)
local capacity = math.max(n, rate * burst_s)
local tokens = tonumber(state[1]) or capacity
tokens = math.min(capacity, tokens + elapsed * rate)
local floor = 0
if not critical then floor = capacity * reserve end
local wait = 0
if tokens - n >= floor then
  tokens = tokens - n
else
  wait = math.ceil((n + floor - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now, 'rate', rate)
redis.call('PEXPIRE', KEYS[1], 3600000)
return {wait, tostring(rate), tostring(now)}
"""

# Halve the rate at most once a second, however many workers saw the same throttling burst.
_THROTTLED = """
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', 1000) then
  local rate = tonumber(redis.call('HGET', KEYS[1], 'rate')) or tonumber(ARGV[1])
  rate = math.max(tonumber(ARGV[2]), rate / 2)
  redis.call('HSET', KEYS[1], 'rate', rate)
  return tostring(rate)
end
return false
"""


class RateWaitTooLong(Exception):
    """No token within the wait limit: the send goes back to the queue rather than hold a worker."""


@dataclass(frozen=True)
class GovernorConfig:
    max_rate: float  # recipients per second for the whole account
    reserve: float = 0.2  # fraction of the bucket only critical sends may use
    burst_s: float = 0.25  # bucket size in seconds of rate: a small burst, not a second's worth
    recover_s: float = 30.0  # from half rate back to full, linearly
    min_rate: float = 1.0
    max_wait_s: float = 30.0


class Governor:
    """Shared SES rate; ``acquire`` blocks (sleeping, not spinning) until the send may go."""

    def __init__(self, client: redis.Redis, config: GovernorConfig, key: str = "declic:ses:rate") -> None:
        self.client = client
        self.config = config
        self.key = key
        self._acquire: Any = client.register_script(_ACQUIRE)
        self._throttled: Any = client.register_script(_THROTTLED)
        self.last_grant_at = 0.0  # Redis's clock when the last acquire was granted

    def acquire(self, recipients: int = 1, *, critical: bool = False) -> float:
        """Take tokens for ``recipients``; return the seconds waited. Raises RateWaitTooLong."""
        started = time.monotonic()
        c = self.config
        while True:
            wait_ms, _rate, server_now = self._acquire(
                keys=[self.key],
                args=[recipients, int(critical), c.max_rate, c.reserve, c.burst_s, c.recover_s],
            )
            if int(wait_ms) == 0:
                self.last_grant_at = float(server_now)
                return time.monotonic() - started
            waited = time.monotonic() - started
            if waited + int(wait_ms) / 1000 > c.max_wait_s:
                raise RateWaitTooLong(f"no SES sending capacity within {c.max_wait_s:.0f} s")
            time.sleep(int(wait_ms) / 1000)

    def throttled(self) -> float | None:
        """SES said slow down: halve the shared rate (once per second at most); the new rate."""
        result = self._throttled(keys=[self.key, self.key + ":cut"], args=[self.config.max_rate, self.config.min_rate])
        return float(result) if result else None

    def current_rate(self) -> float:
        value = self.client.hget(self.key, "rate")
        return float(value) if value else self.config.max_rate


def account_max_rate(sesv2_client: Any) -> float | None:
    """The account's MaxSendRate from SES ``GetAccount``, or None where it is not available."""
    try:
        quota = sesv2_client.get_account().get("SendQuota", {})
    except Exception:  # any failure means "not available": the setting decides
        return None
    rate = quota.get("MaxSendRate")
    return float(rate) if rate else None
