"""The FastAPI application: routers, error rendering, request metrics and the OpenAPI text.

``create_app(settings)`` builds an app whose clients open at start-up and close at shutdown;
``uvicorn`` serves it (``declic api``). One structured log line per request, with the route,
status and duration — never the body, the key or an address.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic.json_schema import models_json_schema
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import ApiError, api_error_handler
from api.events import router as events_router
from api.health import router as health_router
from api.integrations.routes import router as integrations_router
from api.interactions import router as interactions_router
from api.schemas import EventsBatch, TriggerBatch
from api.state import open_state
from declic.logs import configure as configure_logging
from declic.settings import Settings, get_settings
from events import Event
from reporting.sns_http import router as ses_sns_router

log = structlog.get_logger(__name__)


class RequestMetrics:
    """Pure ASGI middleware (cheaper than BaseHTTPMiddleware): latency histogram + one log line."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=uuid.uuid4().hex[:12])

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or "(unmatched)"
            app: Any = scope.get("app")
            api_state = getattr(getattr(app, "state", None), "api", None)
            if api_state is not None:
                api_state.metrics.latency.labels(scope["method"], route, str(status)).observe(elapsed)
            if route not in ("/metrics", "/healthz"):
                log.info("request_handled", method=scope["method"], route=route, status=status,
                         ms=round(elapsed * 1000, 2))


async def _counted_error(request: Request, exc: Exception) -> JSONResponse:
    """Render an ApiError and count it as a refusal of its source, by reason."""
    assert isinstance(exc, ApiError)
    api_state = getattr(request.app.state, "api", None)
    if api_state is not None:
        source = getattr(request.state, "source", "other")
        api_state.metrics.refused.labels(source, exc.code).inc()
    if exc.status >= 500:
        log.warning("request_refused", reason=exc.code, message=exc.message)
    return await api_error_handler(request, exc)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # The type only: a message could quote the payload.
    log.error("request_failed", error=type(exc).__name__, exc_info=exc)
    return JSONResponse({"error": "internal", "message": "an unexpected error; it was logged", "errors": []},
                        status_code=500)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's description plus the envelope models the hand-read bodies refer to."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    _, extra = models_json_schema(
        [(Event, "validation"), (EventsBatch, "validation"), (TriggerBatch, "validation")],
        ref_template="#/components/schemas/{model}",
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(extra.get("$defs", {}))
    security = {"bearer": {"type": "http", "scheme": "bearer", "description": "An API key from `declic keys create`"}}
    schema["components"]["securitySchemes"] = security
    for path, operations in schema["paths"].items():
        keyed = path.startswith("/v1/events") or path == "/v1/integrations" or path.endswith("/preview")
        for operation in operations.values():
            if keyed:
                operation["security"] = [{"bearer": []}]
    app.openapi_schema = schema
    return schema


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API for ``settings`` (default: from the environment)."""
    chosen = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.api = open_state(chosen)
        log.info("api_started", integrations=sorted(app.state.api.integrations))
        try:
            yield
        finally:
            await app.state.api.close()

    app = FastAPI(
        title="Déclic API",
        version="1",
        description="Events in, the right email out: accept events, receive provider webhooks.",
        lifespan=lifespan,
    )
    app.include_router(events_router)
    app.include_router(integrations_router)
    app.include_router(health_router)
    app.include_router(interactions_router)
    app.include_router(ses_sns_router)
    app.add_exception_handler(ApiError, _counted_error)
    app.add_exception_handler(Exception, _unexpected)
    app.add_middleware(RequestMetrics)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def app_from_environment() -> FastAPI:
    """``uvicorn --factory api.app:app_from_environment``: settings and logging from the environment."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)
