"""kombu's Redis transport, with one fix so a Celery worker survives a Redis restart.

With kombu 5.7.0 and Celery 5.7.0 a worker can exit when Redis restarts
(``Unrecoverable error: AttributeError("'NoneType' object has no attribute 'hostname'")``).
On the lost connection Celery's consumer (``celery/worker/consumer/consumer.py``,
``on_connection_error_after_connected``) first calls ``connection.collect()``, then
``connection.close()``:

1. ``collect()`` closes the channels. The consuming channel's ``close()``
   (``kombu/transport/redis.py``, ``Channel.close``) first reads the reply of the BRPOP the
   event loop left outstanding; with Redis gone that raises ``ConnectionError`` before the
   channel is marked closed, and ``maybe_close_channel`` swallows it. The transport's
   ``close_connection`` (``kombu/transport/virtual/base.py``) then closes the other channels
   in a loop that stops at the first error — the remote-control channel's auto-delete queue
   cannot be deleted — so the consuming channel stays open.
2. ``collect()`` ends with ``_do_close_transport()`` (``kombu/connection.py``), which sets
   ``transport.client = None``.
3. ``close()`` closes that channel again. Its QoS now restores the unacknowledged messages
   (``restore_unacked_once``), which needs a new connection pool, whose parameters
   (``Channel._connparams``) read ``self.connection.client.hostname`` — ``None.hostname``.
   ``ignore_errors`` lets only connection and channel errors through, so the
   ``AttributeError`` ends the consumer and the worker.

It happens only when the channel holds delivered, unacknowledged messages at that moment,
which is why a restart ends a worker now and then rather than always (the same ``hostname``
error on a collected transport was celery/kombu#582, on kombu 3).

The fix: a channel whose kombu connection was collected raises a connection error instead,
which Celery handles as the lost connection it is, and the worker reconnects. The messages it
could not restore stay in Redis's ``unacked`` hash, where every worker's periodic sweep
restores them after ``visibility_timeout`` — as for a worker that was killed. Selected by
``broker_transport`` in :mod:`workers.app` for ``redis://`` brokers. It builds on the SDK's
transport (:mod:`events.redis_transport`: one redis-py client per connection pool).
"""

from __future__ import annotations

from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError

from events import redis_transport


class Channel(redis_transport.Channel):
    """The SDK's Redis channel (one client per pool); a collected connection is a connection
    error, not an AttributeError."""

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection.client is None:
            raise RedisConnectionError("the broker connection was closed after it was lost; reconnecting")
        params: dict[str, Any] = super()._connparams(asynchronous=asynchronous)  # type: ignore[misc]  # private to kombu, not in its stubs
        return params


class Transport(redis_transport.Transport):
    """kombu's Redis transport with :class:`Channel`."""

    Channel = Channel
