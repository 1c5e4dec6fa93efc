"""Accepting validated events: claim each id, publish what was claimed, give back the rest.

This is the one path every way in (single event, batch, webhook) goes through, so the
promises hold everywhere: an id seen before is a duplicate and is not published again; an
event is "accepted" only once the broker took it; when the broker fails, the claims of what
was not published are released, so nothing is half-accepted and a retry goes through.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis
import structlog

from api.dedupe import DELIVERY_NS, EVENT_NS, Dedupe
from api.errors import Unavailable
from api.publishing import SharedPublisher
from events import Event

log = structlog.get_logger(__name__)


class Outcome(StrEnum):
    """What became of one event."""

    ACCEPTED = "accepted"  # on the broker; a worker will process it
    DUPLICATE = "duplicate"  # this id was accepted before; nothing done
    UNAVAILABLE = "unavailable"  # the broker did not take it; safe to send again


@dataclass(frozen=True)
class Accepted:
    outcomes: list[Outcome]
    broker_error: str | None = None


class Acceptor:
    """Dedupe claims in Redis in front of the shared publisher."""

    def __init__(self, dedupe: Dedupe, publisher: SharedPublisher) -> None:
        self._dedupe = dedupe
        self._publisher = publisher

    async def accept(self, events: Sequence[Event], *, delivery: str | None = None) -> Accepted:
        """Accept events in order. ``delivery`` (a webhook delivery id) is claimed as well.

        Raises :class:`Unavailable` when Redis cannot be reached (nothing was accepted).
        """
        try:
            if delivery is not None and not (await self._dedupe.claim(DELIVERY_NS, [delivery]))[0]:
                return Accepted([Outcome.DUPLICATE] * len(events))
            claimed = await self._dedupe.claim(EVENT_NS, [e.id for e in events])
        except redis.RedisError as exc:
            raise Unavailable("Redis (dedupe) is unreachable; nothing was accepted, send again shortly") from exc
        fresh = [e for e, first in zip(events, claimed, strict=True) if first]
        envelopes: list[dict[str, Any]] = [e.to_json() for e in fresh]
        published, error = await self._publisher.publish_all(envelopes)
        if error is not None:
            unpublished = [e.id for e in fresh[published:]]
            await self._give_back(unpublished, delivery if published == 0 else None)
            log.warning("publish_failed", published=published, unpublished=len(unpublished), reason=str(error))
        outcomes: list[Outcome] = []
        taken = {e.id for e in fresh[:published]}
        for event, first in zip(events, claimed, strict=True):
            # A repeat within one call lost its claim to the first copy: a duplicate too.
            if not first:
                outcomes.append(Outcome.DUPLICATE)
            else:
                outcomes.append(Outcome.ACCEPTED if event.id in taken else Outcome.UNAVAILABLE)
        return Accepted(outcomes, None if error is None else str(error))

    async def _give_back(self, event_ids: list[str], delivery: str | None) -> None:
        try:
            await self._dedupe.release(EVENT_NS, event_ids)
            if delivery is not None:
                await self._dedupe.release(DELIVERY_NS, [delivery])
        except redis.RedisError as exc:
            # The claims expire with their TTL; until then a retry is answered "duplicate".
            log.error("dedupe_release_failed", count=len(event_ids), reason=str(exc))
