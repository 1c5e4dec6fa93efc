"""``POST /v1/events`` and ``POST /v1/events/batch``: validate, dedupe, publish, answer.

Accepting never waits for a worker: an answer means the event is on the broker (202), was
seen before (200, ``"duplicate": true``), or was refused with the reason.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.accepting import Outcome
from api.batch import expand_batch
from api.body import read_json
from api.errors import Unavailable, Unprocessable
from api.guard import authorize, ratelimit_headers, state_of
from api.schemas import BatchAnswer, EventAnswer, error_responses
from events import EventInvalid, parse_event

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/v1/events", tags=["events"])

_BODY = {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Event"}}}}
_BATCH_BODY = {"required": True, "content": {"application/json": {"schema": {"oneOf": [
    {"$ref": "#/components/schemas/EventsBatch"}, {"$ref": "#/components/schemas/TriggerBatch"},
]}}}}


@router.post(
    "",
    status_code=202,
    summary="Accept one event",
    response_model=EventAnswer,
    responses={200: {"model": EventAnswer, "description": "Seen before: nothing done"},
               **error_responses(400, 401, 403, 413, 415, 422, 429, 503)},
    openapi_extra={"requestBody": _BODY},
)
async def post_event(request: Request) -> JSONResponse:
    """Validate one envelope and put it on the broker; 202 with its id, 200 if a duplicate."""
    request.state.source = "api"
    await authorize(request, "events:write")
    _, body = await read_json(request)
    try:
        event = parse_event(body)
    except EventInvalid as exc:
        raise Unprocessable("the event is invalid", errors=exc.errors) from exc
    state = state_of(request)
    result = await state.acceptor.accept([event])
    [outcome] = result.outcomes
    if outcome is Outcome.UNAVAILABLE:
        raise Unavailable("the broker did not take the event; nothing was accepted, send it again")
    duplicate = outcome is Outcome.DUPLICATE
    (state.metrics.duplicates if duplicate else state.metrics.accepted).labels("api").inc()
    log.info("event_accepted" if not duplicate else "event_duplicate", event_id=event.id, type=event.type)
    answer = EventAnswer(id=event.id, status=outcome.value, duplicate=duplicate)
    return JSONResponse(answer.model_dump(), status_code=200 if duplicate else 202, headers=ratelimit_headers(request))


@router.post(
    "/batch",
    summary="Accept up to 1,000 events, or one event type for up to 1,000 contacts",
    response_model=BatchAnswer,
    responses={202: {"model": BatchAnswer, "description": "At least one accepted"},
               **error_responses(400, 401, 403, 413, 415, 422, 429, 503)},
    openapi_extra={"requestBody": _BATCH_BODY},
)
async def post_batch(request: Request) -> JSONResponse:
    """Validate each item on its own and accept the valid ones; the answer lists every item."""
    request.state.source = "batch"
    await authorize(request, "events:write")
    _, body = await read_json(request)
    items = expand_batch(body, datetime.now(UTC))
    valid = [item for item in items if item.event is not None]
    state = state_of(request)
    result = await state.acceptor.accept([item.event for item in valid if item.event is not None])
    outcomes: dict[int, Outcome] = {item.index: o for item, o in zip(valid, result.outcomes, strict=True)}
    results: list[dict[str, Any]] = []
    for item in items:
        if item.event is None:
            results.append({"index": item.index, "id": None, "status": "invalid", "errors": item.errors})
        else:
            results.append({"index": item.index, "id": item.event.id, "status": outcomes[item.index].value,
                            "errors": []})
    counts = {s: sum(1 for r in results if r["status"] == s) for s in ("accepted", "duplicate", "invalid",
                                                                        "unavailable")}
    metrics = state.metrics
    metrics.accepted.labels("batch").inc(counts["accepted"])
    metrics.duplicates.labels("batch").inc(counts["duplicate"])
    if counts["invalid"]:
        metrics.refused.labels("batch", "invalid").inc(counts["invalid"])
    log.info("batch_accepted", items=len(items), **counts)
    answer = BatchAnswer.model_validate({
        "accepted": counts["accepted"], "duplicates": counts["duplicate"], "invalid": counts["invalid"],
        "unavailable": counts["unavailable"], "results": results,
    })
    # 503 when the broker failed part-way: the answer still says which items were accepted,
    # and sending the whole batch again is safe (those come back as duplicates).
    status = 503 if counts["unavailable"] else 202 if counts["accepted"] else 200
    return JSONResponse(answer.model_dump(), status_code=status, headers=ratelimit_headers(request))
