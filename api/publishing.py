"""One :class:`~events.Publisher` per process, safe to share between requests.

kombu producers are not thread-safe and FastAPI runs blocking work in a thread pool, so
publishes go through one lock; a publish is one Redis ``LPUSH`` (or one confirmed AMQP
publish), so the lock is held for well under a millisecond. A batch takes the lock once and
travels as few broker messages (:meth:`~events.Publisher.publish_many`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from starlette.concurrency import run_in_threadpool

from events import Publisher, PublishError


class SharedPublisher:
    """Publishes envelopes already validated; reports how many of a batch were taken."""

    def __init__(self, publisher: Publisher) -> None:
        self._publisher = publisher
        self._lock = threading.Lock()

    def _publish_all(self, envelopes: Sequence[dict[str, Any]]) -> tuple[int, PublishError | None]:
        with self._lock:
            return self._publisher.publish_many(envelopes)

    async def publish_all(self, envelopes: Sequence[dict[str, Any]]) -> tuple[int, PublishError | None]:
        """Publish in order; stop at the first failure. Returns (published, error or None)."""
        return await run_in_threadpool(self._publish_all, envelopes)

    def close(self) -> None:
        self._publisher.close()
