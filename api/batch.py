"""Batch bodies turned into envelopes, item by item (pure).

Two shapes are accepted by ``POST /v1/events/batch``:

- ``{"events": [<envelope>, ...]}`` — up to 1,000 complete envelopes;
- ``{"type": T, "items": [{"contact": {...}, "data": {...}, "id": ...}, ...]}`` — one event
  type for up to 1,000 contacts, each with its own data (Emarsys's "batch trigger"). Shared
  ``data`` at the top is merged under each item's own; ``occurred_at`` defaults to now; an
  item's ``id`` may be left out when a ``batch_id`` is given (it becomes ``batch_id:contact``).

Each item is validated on its own, so one bad item does not sink the other 999.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from api.errors import Unprocessable
from events import Event, EventInvalid, parse_event

MAX_BATCH = 1000


@dataclass(frozen=True)
class Item:
    """One position of a batch: a valid event, or the errors that make it invalid."""

    index: int
    event: Event | None
    errors: list[dict[str, str]]


def _problem(field: str, message: str) -> Unprocessable:
    return Unprocessable(message, errors=[{"field": field, "message": message}])


def _list_of(body: dict[str, Any], name: str) -> list[Any]:
    value = body.get(name)
    if not isinstance(value, list):
        raise _problem(name, f"'{name}' must be a list")
    if not value:
        raise _problem(name, f"'{name}' is empty")
    if len(value) > MAX_BATCH:
        raise _problem(name, f"{len(value)} items; a batch holds at most {MAX_BATCH}")
    return value


def expand_batch(body: Any, now: datetime) -> list[Item]:
    """Every item of a batch, validated; raises :class:`Unprocessable` for the batch's own shape."""
    if not isinstance(body, dict):
        raise _problem("(batch)", "a batch is a JSON object with 'events' or with 'type' and 'items'")
    if "events" in body:
        extra = sorted(set(body) - {"events"})
        if extra:
            raise _problem(extra[0], "unexpected beside 'events'")
        return [_validate(i, raw) for i, raw in enumerate(_list_of(body, "events"))]
    if "items" in body or "type" in body:
        return _expand_trigger(body, now)
    raise _problem("(batch)", "give either 'events' or 'type' and 'items'")


def _expand_trigger(body: dict[str, Any], now: datetime) -> list[Item]:
    allowed = {"type", "items", "data", "occurred_at", "batch_id"}
    extra = sorted(set(body) - allowed)
    if extra:
        raise _problem(extra[0], "unexpected field in a batch trigger")
    items = _list_of(body, "items")
    if not isinstance(body.get("type"), str):
        raise _problem("type", "give the event type all items share")
    shared = body.get("data", {})
    if not isinstance(shared, dict):
        raise _problem("data", "shared data must be an object")
    batch_id = body.get("batch_id")
    if batch_id is not None and not (isinstance(batch_id, str) and 0 < len(batch_id) <= 128):
        raise _problem("batch_id", "a batch id is a string of 1 to 128 characters")
    occurred_at = body.get("occurred_at", now.isoformat())
    out: list[Item] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            out.append(Item(index, None, [{"field": "(item)", "message": "an item is a JSON object"}]))
            continue
        unexpected = sorted(set(item) - {"id", "contact", "data", "occurred_at"})
        if unexpected:
            out.append(Item(index, None, [{"field": unexpected[0], "message": "unexpected field in an item"}]))
            continue
        contact = item.get("contact")
        event_id = item.get("id")
        if event_id is None and batch_id is not None and isinstance(contact, dict):
            event_id = f"{batch_id}:{contact.get('id')}"
        data = item.get("data", {})
        envelope = {
            "id": event_id,
            "type": body["type"],
            "occurred_at": item.get("occurred_at", occurred_at),
            "contact": contact,
            "data": {**shared, **data} if isinstance(data, dict) else data,
        }
        out.append(_validate(index, envelope))
    return out


def _validate(index: int, raw: Any) -> Item:
    try:
        return Item(index, parse_event(raw), [])
    except EventInvalid as exc:
        return Item(index, None, exc.errors)
