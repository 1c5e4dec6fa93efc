"""``declic bench api``: accepted events per second and latency, over loopback.

It starts services (embedded or local, as the tests do), a real ``uvicorn`` API process and,
as the baseline, a bare ASGI endpoint on uvicorn that reads the body and hands it to the same
:class:`~events.Publisher` — no key check, rate limit, validation or dedupe. The gap between
the baseline and ``POST /v1/events`` is what the API's guarantees cost per event; batch calls
show how much of that is per-request overhead. Each case runs ``repeats`` times and the
median of each figure is reported. No worker runs: the ``events`` queue is emptied between runs.

The load comes from ``clients`` processes of their own (httpx in one Python process tops out
below what a uvicorn process serves), started on one shared moment; events/s counts from the
first call sent to the last answer received, across them all.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import redis
from rich.table import Table

from api.serving import ApiProcess, free_port
from declic.settings import get_settings
from events import Publisher


def _event(run: str, n: int) -> dict[str, Any]:
    return {
        "id": f"bench-{run}-{n}", "type": "signup", "occurred_at": datetime.now(UTC).isoformat(),
        "contact": {"id": f"bench-{n % 1000}", "email": f"bench{n % 1000}@example.com", "locale": "en"},
        "data": {"source": "bench"},
    }


# -- the baseline: a bare ASGI app that publishes what it gets --------------------------------

def baseline_app() -> Callable[..., Awaitable[None]]:
    """``uvicorn --factory api.bench:baseline_app``: read, parse, publish, answer 202."""
    publisher = Publisher(get_settings().broker_url, retries=1, timeout_s=2.0)

    async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                  send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["path"] == "/openapi.json":
            status, answer = 200, b"{}"
        else:
            publisher.publish_json(json.loads(body))
            status, answer = 202, b'{"status":"accepted"}'
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": answer})

    return app


# -- measuring ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Result:
    case: str
    events_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    calls: int


@dataclass(frozen=True)
class BenchReport:
    results: list[Result]
    events: int
    concurrency: int
    repeats: int
    clients: int = 1

    def table(self) -> Table:
        table = Table("case", "accepted events/s", "p50 ms/call", "p95 ms/call", "p99 ms/call", "calls",
                      title=f"declic bench api — {self.events} events, {self.concurrency} connections from "
                            f"{self.clients} client processes, median of {self.repeats} runs")
        for r in self.results:
            table.add_row(r.case, f"{r.events_per_s:,.0f}", f"{r.p50_ms:.2f}", f"{r.p95_ms:.2f}",
                          f"{r.p99_ms:.2f}", str(r.calls))
        return table


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass(frozen=True)
class Slice:
    """What one load-generating process did: its first send, its last answer, each call's latency."""

    started: float
    ended: float
    latencies: list[float]


async def _drive(url: str, headers: dict[str, str], bodies: list[bytes], concurrency: int, start_at: float) -> Slice:
    latencies: list[float] = []
    queue = list(reversed(bodies))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=30) as client:
        async def worker() -> None:
            while queue:
                body = queue.pop()
                started = time.monotonic()
                response = await client.post(url, content=body)
                latencies.append(time.monotonic() - started)
                if response.status_code != 202:
                    raise RuntimeError(f"{url} answered {response.status_code}: {response.text[:300]}")

        await asyncio.sleep(max(0.0, start_at - time.monotonic()))  # CLOCK_MONOTONIC: one clock for all processes
        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Slice(started, time.monotonic(), latencies)


def _drive_in_process(url: str, headers: dict[str, str], bodies: list[bytes], concurrency: int,
                      start_at: float) -> Slice:
    return asyncio.run(_drive(url, headers, bodies, concurrency, start_at))


@dataclass(frozen=True)
class Load:
    """The load generators: a pool of ``clients`` processes sharing ``concurrency`` connections."""

    pool: ProcessPoolExecutor
    clients: int
    concurrency: int


def _drive_all(load: Load, url: str, headers: dict[str, str], bodies: list[bytes],
               events_per_body: int) -> tuple[float, list[float]]:
    """Split the calls and the connections among the load's processes; events/s over them all."""
    start_at = time.monotonic() + 0.5  # time for every process to open its client first
    futures = [load.pool.submit(_drive_in_process, url, headers, bodies[i::load.clients],
                                max(1, load.concurrency // load.clients), start_at) for i in range(load.clients)]
    slices = [future.result() for future in futures]
    elapsed = max(s.ended for s in slices) - min(s.started for s in slices)
    return len(bodies) * events_per_body / elapsed, [x for s in slices for x in s.latencies]


def _bodies(kind: str, events: int, batch_size: int) -> tuple[list[bytes], int]:
    run = uuid.uuid4().hex[:8]
    if kind == "batch":
        return [json.dumps({"events": [_event(run, i + j) for j in range(batch_size)]}).encode()
                for i in range(0, events, batch_size)], batch_size
    return [json.dumps(_event(run, i)).encode() for i in range(events)], 1


def _measure(case: str, url: str, headers: dict[str, str], kind: str, events: int, batch_size: int,
             load: Load, repeats: int, broker: redis.Redis) -> Result:
    runs: list[tuple[float, list[float]]] = []
    for _ in range(repeats):
        bodies, per_body = _bodies(kind, events, batch_size)
        runs.append(_drive_all(load, url, headers, bodies, per_body))
        broker.delete("events")  # no worker: keep the broker's memory flat between runs
    return Result(
        case=case,
        events_per_s=statistics.median(r[0] for r in runs),
        p50_ms=statistics.median(_percentile(r[1], 0.50) for r in runs) * 1000,
        p95_ms=statistics.median(_percentile(r[1], 0.95) for r in runs) * 1000,
        p99_ms=statistics.median(_percentile(r[1], 0.99) for r in runs) * 1000,
        calls=len(runs[0][1]),
    )


def run_api_bench(*, events: int = 2000, batch_size: int = 100, concurrency: int = 16, repeats: int = 3,
                  processes: int = 1, clients: int = 2, workdir: Path | None = None) -> BenchReport:
    """Start services, the API and the baseline; measure each case; stop everything."""
    from api.keys import KeyStore, open_pool
    from declic.services import start_services
    from workers.migrate import migrate

    base = workdir or Path(tempfile.mkdtemp(prefix="declic-bench-api-"))
    with start_services(base / "services", mode="test") as services:
        migrate(services.database_url)
        pool = open_pool(services.database_url, max_size=1)
        key, _ = KeyStore(pool).create("bench", ["events:write"], rate_per_minute=1_000_000_000)
        pool.close()
        env = {**services.env(), "DECLIC_LOG_LEVEL": "WARNING", "DECLIC_LOG_FORMAT": "json"}
        port = free_port()
        baseline_argv = [sys.executable, "-m", "uvicorn", "--factory", "api.bench:baseline_app",
                         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
                         "--no-access-log", "--workers", str(processes)]
        auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        plain = {"Content-Type": "application/json"}
        broker = redis.Redis.from_url(services.broker_url)
        results: list[Result] = []
        # spawn: a fresh interpreter per client, nothing inherited from this process's threads.
        with ProcessPoolExecutor(clients, mp_context=multiprocessing.get_context("spawn")) as generators:
            load = Load(generators, clients, concurrency)
            try:
                with ApiProcess(env, base / "baseline.log", port=port, argv=baseline_argv, name="baseline") as bare:
                    _measure("warm-up", bare.url + "/", plain, "single", min(events, 200), batch_size, load, 1,
                             broker)
                    results.append(_measure("baseline: bare ASGI + publish", bare.url + "/", plain, "single",
                                            events, batch_size, load, repeats, broker))
                with ApiProcess(env, base / "api.log", workers=processes) as api:
                    _measure("warm-up", api.url + "/v1/events", auth, "single", min(events, 200), batch_size,
                             load, 1, broker)
                    results.append(_measure("POST /v1/events", api.url + "/v1/events", auth, "single", events,
                                            batch_size, load, repeats, broker))
                    results.append(_measure(f"POST /v1/events/batch ({batch_size}/call)",
                                            api.url + "/v1/events/batch", auth, "batch", events, batch_size, load,
                                            repeats, broker))
            finally:
                broker.close()
    return BenchReport(results, events, concurrency, repeats, clients)


if __name__ == "__main__":  # pragma: no cover - `declic bench api` is the way in
    from rich.console import Console

    Console().print(run_api_bench().table())
