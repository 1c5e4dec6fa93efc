"""The door of every keyed endpoint: authenticate, check the scope, take a rate-limit token.

The rate-limit headers are kept on ``request.state`` so every answer carries them, the
successful ones and the refusals alike.
"""

from __future__ import annotations

import redis
import structlog
from fastapi import Request

from api.errors import RateLimited
from api.keys import ApiKey
from api.state import ApiState

log = structlog.get_logger(__name__)


def state_of(request: Request) -> ApiState:
    state: ApiState = request.app.state.api
    return state


async def authorize(request: Request, scope: str) -> ApiKey:
    """The caller's key, allowed ``scope`` and within its rate; raises 401, 403, 429 or 503."""
    state = state_of(request)
    key = await state.authenticator.authenticate(request.headers.get("authorization"), scope)
    structlog.contextvars.bind_contextvars(api_key=key.prefix)
    rate = key.rate_per_minute or state.settings.api_rate_per_minute
    try:
        decision = await state.limiter.hit(f"key:{key.id}", rate)
    except redis.RedisError as exc:
        # Fail open: refusing every caller because the limiter is down would turn a Redis
        # blip into an outage; accepting still needs Redis and answers 503 on its own.
        log.warning("rate_limit_unavailable", reason=str(exc))
        return key
    request.state.ratelimit_headers = decision.headers()
    if not decision.allowed:
        raise RateLimited(f"over {rate} requests a minute for this key; retry in {decision.retry_after_s} s")
    return key


def ratelimit_headers(request: Request) -> dict[str, str]:
    headers: dict[str, str] = getattr(request.state, "ratelimit_headers", None) or {}
    return headers
