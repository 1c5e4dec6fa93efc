"""``POST /v1/integrations/{name}``: a provider's webhook, verified, mapped and accepted.

Order matters: the signature is checked on the raw bytes before anything is parsed, and a bad
one is answered 401 and logged with the reason only (never the body). An authentic delivery
is then acknowledged whatever becomes of it — 202 accepted, 200 duplicate, 202 ignored (no
mapping, or its ``when`` is false), 202 invalid (the mapping produced an event that fails
validation: it is dead-lettered with the field errors) — because a provider answered with an
error retries for days and may then switch the webhook off. Only a Déclic outage (broker,
Redis or Postgres down) answers 503, so the provider retries later.

``GET /v1/integrations`` and ``POST /v1/integrations/{name}/preview`` (scope
``integrations``) list what is configured and show what a payload would map to.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import psycopg
import psycopg_pool
import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from api.accepting import Outcome
from api.body import is_json_media_type, parse_json, read_body, read_json
from api.errors import NotFound, Unauthorized, Unavailable, Unprocessable, UnsupportedMedia
from api.guard import authorize, ratelimit_headers, state_of
from api.integrations.base import SignatureInvalid
from api.integrations.config import Integration
from api.integrations.mapping import EventMapping, MappingError, applies, build_envelope, drop_fields
from api.schemas import WebhookAnswer, error_responses
from api.state import ApiState
from events import Event, EventInvalid, parse_event

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/v1/integrations", tags=["integrations"])

# Contact fields a mapping fills on a best-effort basis: a provider's odd locale ("auto")
# should cost the email its localisation, not the email itself.
_OPTIONAL_FIELDS = {"contact.locale", "contact.timezone"}


def map_event(
    mapping: EventMapping, payload: Any, *, integration: str, external_type: str,
    delivery_id: str | None, now: datetime,
) -> Event:
    """The Déclic event for an authentic payload; raises EventInvalid with field errors."""
    try:
        envelope = build_envelope(mapping, payload, integration=integration, external_type=external_type,
                                  delivery_id=delivery_id, now=now)
    except MappingError as exc:
        raise EventInvalid([{"field": "(mapping)", "message": str(exc)}]) from exc
    try:
        return parse_event(envelope)
    except EventInvalid as exc:
        bad = {e["field"] for e in exc.errors}
        if not bad <= _OPTIONAL_FIELDS:
            raise
        return parse_event(drop_fields(envelope, bad))


def _integration(state: ApiState, name: str) -> Integration:
    found = state.integrations.get(name)
    if found is None:
        raise NotFound(f"no integration {name!r}; configured: {', '.join(sorted(state.integrations)) or 'none'}")
    return found


def _answer(state: ApiState, name: str, external_type: str, answer: WebhookAnswer, status: int,
            headers: dict[str, str] | None = None) -> JSONResponse:
    outcome = answer.status if answer.reason is None else f"{answer.status}:{answer.reason}"
    # Unknown external types are bounded by what providers send; keep the label anyway short.
    state.metrics.webhooks.labels(name, external_type[:64] or "(none)", outcome).inc()
    log.info("webhook_handled", integration=name, external_type=external_type, outcome=outcome,
             event_id=answer.event_id)
    return JSONResponse(answer.model_dump(), status_code=status, headers=headers)


@router.post(
    "/{name}",
    summary="Receive a provider's signed webhook",
    response_model=WebhookAnswer,
    status_code=202,
    responses={200: {"model": WebhookAnswer, "description": "Duplicate delivery"},
               **error_responses(400, 401, 404, 413, 415, 503)},
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}},
)
async def receive_webhook(name: str, request: Request) -> JSONResponse:
    """Verify the signature, map the provider's event to a Déclic event, accept it."""
    request.state.source = f"integration:{name}"
    state = state_of(request)
    integration = _integration(state, name)
    if integration.provider is None:
        raise NotFound(f"integration {name!r} is not enabled (its secret is not configured)")
    if not is_json_media_type(request.headers.get("content-type")):
        raise UnsupportedMedia("webhooks are accepted as JSON")
    raw = await read_body(request)
    try:
        integration.provider.verify(raw, request.headers, time.time())
    except SignatureInvalid as exc:
        state.metrics.webhooks.labels(name, "(unverified)", "bad_signature").inc()
        log.warning("webhook_signature_refused", integration=name, reason=str(exc), size=len(raw))
        raise Unauthorized(f"signature refused: {exc}") from exc
    payload = parse_json(raw)
    delivery = integration.provider.delivery(payload, request.headers)
    external = delivery.external_type
    mapping = integration.config.events.get(external)
    if mapping is None:
        return _answer(state, name, external, WebhookAnswer(status="ignored", reason="unmapped"), 202)
    now = datetime.now(UTC)
    try:
        if not applies(mapping, payload):
            return _answer(state, name, external, WebhookAnswer(status="ignored", reason="condition"), 202)
        event = map_event(mapping, payload, integration=name, external_type=external,
                          delivery_id=delivery.delivery_id, now=now)
    except (EventInvalid, MappingError) as exc:
        errors = exc.errors if isinstance(exc, EventInvalid) else [{"field": "(mapping)", "message": str(exc)}]
        await _dead_letter(state, name, external, delivery.delivery_id, errors, payload)
        return _answer(state, name, external,
                       WebhookAnswer(status="invalid", reason="mapping", type=mapping.type, errors=errors), 202)
    key = f"{name}:{delivery.delivery_id}" if delivery.delivery_id else None
    result = await state.acceptor.accept([event], delivery=key)
    [outcome] = result.outcomes
    if outcome is Outcome.UNAVAILABLE:
        raise Unavailable("the broker did not take the event; retry the delivery")
    answer = WebhookAnswer(status=outcome.value, event_id=event.id, type=event.type)
    (state.metrics.accepted if outcome is Outcome.ACCEPTED else state.metrics.duplicates).labels(
        f"integration:{name}").inc()
    return _answer(state, name, external, answer, 202 if outcome is Outcome.ACCEPTED else 200)


async def _dead_letter(state: ApiState, name: str, external: str, delivery_id: str | None,
                       errors: list[dict[str, str]], payload: Any) -> None:
    """Keep what could not be mapped, with the field errors, for `declic dlq list`."""
    reason = f"integration {name} {external}: " + "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    ref = f"{name}:{delivery_id}" if delivery_id else None
    try:
        await run_in_threadpool(state.store.dead_letter_event, ref, reason,
                                {"integration": name, "external_type": external, "payload": payload})
    except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
        raise Unavailable("the database is unreachable; retry the delivery") from exc


@router.get("", summary="List the configured integrations and their mappings", responses=error_responses(401, 403))
async def list_integrations(request: Request) -> JSONResponse:
    """Each integration: kind, whether enabled (secret set), and external → Déclic event types."""
    await authorize(request, "integrations")
    state = state_of(request)
    body = {
        name: {
            "kind": i.config.kind,
            "description": i.config.description,
            "enabled": i.provider is not None,
            "url": f"{state.settings.public_url.rstrip('/')}/v1/integrations/{name}",
            "events": {external: m.type for external, m in i.config.events.items()},
        }
        for name, i in sorted(state.integrations.items())
    }
    return JSONResponse(body, headers=ratelimit_headers(request))


@router.post(
    "/{name}/preview",
    summary="Show the Déclic event a provider payload maps to, without sending anything",
    responses=error_responses(400, 401, 403, 404, 413, 415, 422),
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": ["type", "payload"],
        "properties": {"type": {"type": "string"}, "payload": {}, "delivery_id": {"type": "string"}},
    }}}}},
)
async def preview(name: str, request: Request) -> JSONResponse:
    """Map ``{"type": external type, "payload": {...}}`` and return the envelope or the field errors."""
    await authorize(request, "integrations")
    integration = _integration(state_of(request), name)
    _, body = await read_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("type"), str) or "payload" not in body:
        raise Unprocessable("give {'type': external type, 'payload': {...}}",
                            errors=[{"field": "type", "message": "required"}])
    mapping = integration.config.events.get(body["type"])
    headers = ratelimit_headers(request)
    if mapping is None:
        return JSONResponse({"status": "ignored", "reason": "unmapped"}, headers=headers)
    try:
        if not applies(mapping, body["payload"]):
            return JSONResponse({"status": "ignored", "reason": "condition"}, headers=headers)
        delivery_id = body.get("delivery_id") if isinstance(body.get("delivery_id"), str) else "preview"
        event = map_event(mapping, body["payload"], integration=name, external_type=body["type"],
                          delivery_id=delivery_id, now=datetime.now(UTC))
    except (EventInvalid, MappingError) as exc:
        errors = exc.errors if isinstance(exc, EventInvalid) else [{"field": "(mapping)", "message": str(exc)}]
        return JSONResponse({"status": "invalid", "errors": errors}, headers=headers)
    return JSONResponse({"status": "mapped", "event": event.to_json()}, headers=headers)
