"""The outbox: every event accepted onto a Redis broker is remembered until a worker ingested it.

kombu's Redis transport takes a message off its list (``BRPOP``) before it records it as
unacknowledged; a worker killed in between loses the message for good (measured: 0–4 events per
handful of ``SIGKILL``s). The outbox closes that window on our side of kombu:

- the producer records the envelope (:meth:`Outbox.record`) before it publishes it, stamped with
  Redis's own clock, per queue;
- the ingest task forgets it (:meth:`Outbox.done`) once the event is in Postgres, raising the
  queue's *watermark* to the newest acceptance time ingested;
- the dispatcher's sweep (:func:`overdue`) offers again every envelope that cannot still be on
  its way: accepted more than ``grace_s`` ago, and either older than the queue's watermark by
  ``grace_s`` (a queue is consumed roughly in order, so newer events went through without it) or
  its queue is empty. A copy that reaches a worker while the original was merely slow is
  harmless: ingest dedupes by event id in Postgres.

Used only with a Redis broker; RabbitMQ holds a delivered message until it is acknowledged.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from events.encoding import json_bytes

PREFIX = "declic:outbox"
_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")


def applies_to(broker_url: str) -> bool:
    """Whether a broker needs the outbox: Redis does, RabbitMQ keeps a message until acknowledged."""
    return broker_url.startswith(("redis://", "rediss://"))


def broker_lists(queue: str) -> tuple[str, ...]:
    """The Redis lists kombu keeps a queue's messages in, one per priority level."""
    return tuple(queue + suffix for suffix in _PRIORITY_SUFFIXES)

# KEYS: the queue's set, the bodies. ARGV: pairs of event id and body. Returns 1/0 per pair.
_RECORD_MANY = """
local now = redis.call('TIME')
local at = now[1] + now[2] / 1e6
local added = {}
for i = 1, #ARGV, 2 do
  local new = redis.call('ZADD', KEYS[1], 'NX', at, ARGV[i])
  if new == 1 then redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
  added[#added + 1] = new
end
return added
"""

# KEYS: the bodies, the watermarks, then each queue's set. ARGV: event id, then queue names.
_DONE = """
for i = 3, #KEYS do
  local at = redis.call('ZSCORE', KEYS[i], ARGV[1])
  if at then
    redis.call('ZREM', KEYS[i], ARGV[1])
    local mark = tonumber(redis.call('HGET', KEYS[2], ARGV[i - 1]) or '0')
    if tonumber(at) > mark then redis.call('HSET', KEYS[2], ARGV[i - 1], at) end
  end
end
return redis.call('HDEL', KEYS[1], ARGV[1])
"""


@dataclass(frozen=True)
class Overdue:
    """An envelope accepted but not ingested in time, and the queue it was published on."""

    event_id: str
    queue: str
    envelope: dict[str, Any]


class Outbox:
    """The outbox's keys on one Redis (the broker's); safe to share between threads."""

    def __init__(self, client: redis.Redis, queues: Sequence[str]) -> None:
        """``client`` decodes responses (``decode_responses=True``)."""
        self.client = client
        self.queues = tuple(queues)
        self._record_many = client.register_script(_RECORD_MANY)
        self._done = client.register_script(_DONE)
        self._bodies = f"{PREFIX}:bodies"
        self._marks = f"{PREFIX}:watermarks"

    @classmethod
    def connect(cls, url: str, queues: Sequence[str], *, timeout_s: float = 5.0) -> Outbox:
        client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, decode_responses=True
        )
        return cls(client, queues)

    def _set(self, queue: str) -> str:
        return f"{PREFIX}:{queue}"

    def record(self, event_id: str, queue: str, envelope: dict[str, Any]) -> bool:
        """Remember an envelope about to be published; False if it already was (a retry)."""
        return self.record_many(queue, [(event_id, envelope)])[0]

    def record_many(self, queue: str, items: Sequence[tuple[str, dict[str, Any]]]) -> list[bool]:
        """:meth:`record` for many (event id, envelope) of one queue, in one call."""
        args: list[str | bytes] = []
        for event_id, envelope in items:
            args += [event_id, json_bytes(envelope)]
        added = self._record_many(keys=[self._set(queue), self._bodies], args=args)
        return [bool(flag) for flag in added]

    def forget(self, event_id: str, queue: str) -> None:
        """Drop an envelope whose publication failed: it was not accepted."""
        pipe = self.client.pipeline()
        pipe.zrem(self._set(queue), event_id)
        pipe.hdel(self._bodies, event_id)
        pipe.execute()

    def done(self, event_id: str) -> None:
        """The event is in Postgres (ingested, a duplicate, or dead-lettered): stop watching it."""
        self.done_many([event_id])

    def done_many(self, event_ids: Sequence[str]) -> None:
        """:meth:`done` for many events, in one round trip (an ingested batch)."""
        keys = [self._bodies, self._marks, *(self._set(q) for q in self.queues)]
        if len(event_ids) == 1:
            self._done(keys=keys, args=[event_ids[0], *self.queues])
            return
        pipe = self.client.pipeline(transaction=False)
        for event_id in event_ids:
            self._done(keys=keys, args=[event_id, *self.queues], client=pipe)
        pipe.execute()

    def retried(self, event_id: str, queue: str) -> None:
        """An overdue envelope was published again: its clock starts over."""
        now_s, now_us = self.client.time()
        self.client.zadd(self._set(queue), {event_id: now_s + now_us / 1e6}, xx=True)

    def queue_length(self, queue: str) -> int:
        pipe = self.client.pipeline()
        for key in broker_lists(queue):
            pipe.llen(key)
        return sum(int(n) for n in pipe.execute())

    def pending_by_queue(self) -> dict[str, int]:
        """Envelopes accepted and not yet ingested, per queue."""
        pipe = self.client.pipeline()
        for queue in self.queues:
            pipe.zcard(self._set(queue))
        return {queue: int(n) for queue, n in zip(self.queues, pipe.execute(), strict=True)}

    def pending(self) -> int:
        """Envelopes accepted and not yet ingested, over every queue."""
        return sum(self.pending_by_queue().values())

    def overdue(self, grace_s: float, limit: int = 500) -> list[Overdue]:
        """Envelopes that cannot still be on their way to a worker (see the module's note)."""
        now_s, now_us = self.client.time()
        now = now_s + now_us / 1e6
        found: list[Overdue] = []
        for queue in self.queues:
            cutoff = now - grace_s
            if self.queue_length(queue) > 0:
                mark = float(self.client.hget(self._marks, queue) or 0.0)
                cutoff = min(cutoff, mark - grace_s)
            ids = [str(i) for i in self.client.zrangebyscore(self._set(queue), "-inf", cutoff, 0, limit)]
            bodies = self.client.hmget(self._bodies, ids) if ids else []
            for event_id, body in zip(ids, bodies, strict=True):
                if body is None:  # ingested between the two reads
                    self.client.zrem(self._set(queue), event_id)
                    continue
                found.append(Overdue(event_id, queue, json.loads(body)))
        return found
