"""``GET /healthz`` (broker and database reachable) and ``GET /metrics`` (Prometheus)."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import psycopg_pool
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from kombu import Connection
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from api.guard import state_of
from api.state import ApiState

router = APIRouter(tags=["operations"])
_TIMEOUT_S = 2.0


def _check_broker(state: ApiState) -> str | None:
    if state.broker_redis is not None:
        try:
            state.broker_redis.ping()
        except Exception as exc:
            return str(exc) or type(exc).__name__
        return None
    # Not Redis (RabbitMQ): a fresh connection proves the broker answers.
    try:
        with Connection(state.settings.broker_url, connect_timeout=_TIMEOUT_S) as conn:
            conn.ensure_connection(max_retries=1, timeout=int(_TIMEOUT_S))
    except Exception as exc:
        return str(exc) or type(exc).__name__
    return None


def _check_database(state: ApiState) -> str | None:
    try:
        with state.pool.connection(timeout=_TIMEOUT_S) as conn:
            conn.execute("SELECT 1")
    except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
        return str(exc).strip() or type(exc).__name__
    return None


def _checks(state: ApiState) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, check in (("broker", _check_broker), ("database", _check_database)):
        started = time.perf_counter()
        problem = check(state)
        results[name] = {"ok": problem is None, "ms": round((time.perf_counter() - started) * 1000, 1)}
        if problem:
            # The reason, not the URL: connection strings may carry passwords.
            results[name]["error"] = problem.split("\n")[0][:200]
    return results


@router.get("/healthz", summary="Broker and database reachable: 200, else 503")
async def healthz(request: Request) -> JSONResponse:
    """200 when the broker and Postgres answer; 503 naming the one that does not."""
    checks = await run_in_threadpool(_checks, state_of(request))
    ok = all(c["ok"] for c in checks.values())
    return JSONResponse({"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Counters of this process, plus queue depths and send figures read at scrape time."""
    body = await run_in_threadpool(generate_latest, state_of(request).metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
