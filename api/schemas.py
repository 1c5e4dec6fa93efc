"""Request and answer shapes, for the OpenAPI description (``/openapi.json``, ``/docs``).

Bodies are read and validated by hand (size limit, content type, per-field errors from
:func:`events.parse_event`), so these models document the contract rather than parse it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from api.batch import MAX_BATCH
from events import Contact, Event


class FieldError(BaseModel):
    field: str = Field(description="Dotted path of the bad field, e.g. data.items.0.quantity")
    message: str


class ErrorAnswer(BaseModel):
    error: str = Field(description="Machine code: invalid, body_too_large, unauthorized, rate_limited, ...")
    message: str
    errors: list[FieldError] = Field(default_factory=list)


class EventAnswer(BaseModel):
    id: str
    status: Literal["accepted", "duplicate"]
    duplicate: bool


class TriggerItem(BaseModel):
    id: str | None = Field(default=None, max_length=255, description="Event id; default batch_id:contact.id")
    contact: Contact
    data: dict[str, Any] = Field(default_factory=dict)
    occurred_at: str | None = None


class EventsBatch(BaseModel):
    events: list[Event] = Field(min_length=1, max_length=MAX_BATCH)


class TriggerBatch(BaseModel):
    type: str
    items: list[TriggerItem] = Field(min_length=1, max_length=MAX_BATCH)
    data: dict[str, Any] = Field(default_factory=dict, description="Shared by every item, under its own data")
    occurred_at: str | None = None
    batch_id: str | None = Field(default=None, max_length=128)


class ItemAnswer(BaseModel):
    index: int
    id: str | None
    status: Literal["accepted", "duplicate", "invalid", "unavailable"]
    errors: list[FieldError] = Field(default_factory=list)


class BatchAnswer(BaseModel):
    accepted: int
    duplicates: int
    invalid: int
    unavailable: int
    results: list[ItemAnswer]


class WebhookAnswer(BaseModel):
    status: Literal["accepted", "duplicate", "ignored", "invalid"]
    reason: str | None = None
    event_id: str | None = None
    type: str | None = None
    errors: list[FieldError] = Field(default_factory=list)


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the error codes an endpoint may answer."""
    return {code: {"model": ErrorAnswer} for code in codes}
