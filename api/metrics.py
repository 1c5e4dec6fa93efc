"""Prometheus metrics: what the API counted itself, and what it reads at scrape time.

Counted here (per process; Prometheus sums the processes): events accepted, duplicate and
refused by reason and source; webhooks per integration, external type and outcome; request
latency per route. Read at scrape time (cached a few seconds, so many scrapers cost one
query): queue depths from the Redis broker, and, from Postgres, sends by flow and state and
the event→SES-accepted latency per flow — the workers write those facts, the API reports them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import psycopg
import psycopg_pool
import redis
import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from events.outbox import Outbox, broker_lists
from events.publisher import OUTBOX_QUEUES

log = structlog.get_logger(__name__)

QUEUES = ("events.critical", "events", "send.critical", "send.transactional", "send.bulk")
SEND_LATENCY_BUCKETS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)


class ApiMetrics:
    """The API's own counters, in a registry of their own (one per app, so tests can make many)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.accepted = Counter("declic_events_accepted", "Events put on the broker.", ["source"],
                                registry=self.registry)
        self.duplicates = Counter("declic_events_duplicate", "Events whose id was already accepted.",
                                  ["source"], registry=self.registry)
        self.refused = Counter("declic_events_refused", "Requests or items refused, by reason.",
                               ["source", "reason"], registry=self.registry)
        self.webhooks = Counter("declic_integration_webhooks", "Webhook deliveries by outcome.",
                                ["integration", "external_type", "outcome"], registry=self.registry)
        self.latency = Histogram("declic_http_request_duration_seconds", "API request latency.",
                                 ["method", "route", "status"], registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))


class _Cached:
    """The last value of a slow read, refreshed at most every ``ttl_s`` seconds."""

    def __init__(self, read: Callable[[], list[Metric]], ttl_s: float) -> None:
        self._read = read
        self._ttl_s = ttl_s
        self._lock = threading.Lock()
        self._at = -1e9
        self._value: list[Metric] = []

    def get(self) -> list[Metric]:
        with self._lock:
            if time.monotonic() - self._at > self._ttl_s:
                self._value = self._read()
                self._at = time.monotonic()
            return self._value


def queue_depths(client: redis.Redis) -> dict[str, int]:
    """Messages waiting per queue in the Redis broker (every priority level summed)."""
    pipe = client.pipeline(transaction=False)
    for queue in QUEUES:
        for key in broker_lists(queue):
            pipe.llen(key)
    counts = [int(n) for n in pipe.execute()]
    step = len(broker_lists(""))
    return {q: sum(counts[i * step:(i + 1) * step]) for i, q in enumerate(QUEUES)}


def _latency_sql() -> str:
    buckets = ", ".join(f"count(*) FILTER (WHERE lat <= {b}) AS le_{i}" for i, b in enumerate(SEND_LATENCY_BUCKETS))
    return (
        f"SELECT flow, count(*) AS n, coalesce(sum(lat), 0) AS total, {buckets} FROM ("
        " SELECT s.flow, extract(epoch FROM s.sent_at - e.received_at)::float8 AS lat"
        " FROM sends s JOIN events e ON e.id = s.event_id WHERE s.state = 'sent' AND s.sent_at IS NOT NULL"
        ") t GROUP BY flow ORDER BY flow"
    )


class PipelineCollector(Collector):
    """Queue depths, sends by flow and state, event→SES latency per flow, read at scrape time."""

    def __init__(self, broker: redis.Redis | None, pool: psycopg_pool.ConnectionPool[Any] | None,
                 *, ttl_s: float = 5.0) -> None:
        self._broker = broker
        self._pool = pool
        self._cache = _Cached(self._read, ttl_s)

    def describe(self) -> list[Metric]:
        # Without this, registering would collect — querying Postgres while the app starts.
        return []

    def collect(self) -> Iterator[Metric]:
        yield from self._cache.get()

    def _read(self) -> list[Metric]:
        metrics: list[Metric] = []
        if self._broker is not None:
            depth = GaugeMetricFamily("declic_queue_depth", "Messages waiting in a broker queue.", labels=["queue"])
            try:
                for queue, count in queue_depths(self._broker).items():
                    depth.add_metric([queue], count)
                metrics.append(depth)
                outbox = GaugeMetricFamily(
                    "declic_outbox_pending", "Events accepted and not yet ingested (the outbox).", labels=["queue"]
                )
                for queue, count in Outbox(self._broker, OUTBOX_QUEUES).pending_by_queue().items():
                    outbox.add_metric([queue], count)
                metrics.append(outbox)
            except redis.RedisError as exc:
                log.warning("metrics_read_failed", source="broker", reason=str(exc))
        if self._pool is not None:
            try:
                metrics.extend(self._read_database(self._pool))
            except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
                log.warning("metrics_read_failed", source="database", reason=str(exc))
        return metrics

    @staticmethod
    def _read_database(pool: psycopg_pool.ConnectionPool[Any]) -> Iterable[Metric]:
        sends = GaugeMetricFamily("declic_sends", "Sends recorded, by flow and state.", labels=["flow", "state"])
        latency = HistogramMetricFamily(
            "declic_send_latency_seconds", "From the event's arrival to SES accepting the email.", labels=["flow"]
        )
        with pool.connection() as conn:
            for row in conn.execute("SELECT flow, state, count(*) AS n FROM sends GROUP BY flow, state"):
                sends.add_metric([row["flow"], row["state"]], row["n"])
            for row in conn.execute(_latency_sql()):
                buckets = [(str(b), float(row[f"le_{i}"])) for i, b in enumerate(SEND_LATENCY_BUCKETS)]
                buckets.append(("+Inf", float(row["n"])))
                latency.add_metric([row["flow"]], buckets, float(row["total"]))
        return [sends, latency]
