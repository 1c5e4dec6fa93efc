"""The event envelope: the one shape an event has over HTTP, the SDK and the broker.

``parse_event`` is the only door in: it checks the envelope, then the ``data`` of built-in
types against their models (:mod:`events.types`), and raises :class:`EventInvalid` whose
``errors`` name each bad field by its dotted path (``data.items.0.quantity``).
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
)
from pydantic.networks import validate_email

from events.encoding import json_bytes
from events.types import BUILTIN_DATA_MODELS

MAX_EVENT_BYTES = 1_000_000
"""Largest accepted event, as serialised JSON (1 MB)."""

EVENT_TYPE_PATTERN = r"^[a-z][a-z0-9_.:-]{0,63}$"

MAX_NESTING = 64
"""Deepest nesting of objects and arrays accepted; deeper documents are refused, not parsed."""


class EventInvalid(ValueError):
    """An event that will never be processed as it stands; ``errors`` say which fields."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))


_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PLAIN_ADDRESS = re.compile(rf"({_ATOM}(?:\.{_ATOM})*)@((?:{_LABEL}\.)+[A-Za-z]{{2,63}})")
# email_validator refuses these top-level names (RFC 6761 special-use domains).
_SPECIAL_USE = frozenset({"arpa", "invalid", "local", "localhost", "onion", "test"})


def plain_address(value: str) -> str | None:
    """The normalised form of a plain ASCII address, or None to let email_validator decide.

    email_validator costs ~1 ms an address (IDNA tables); nearly every address is plain ASCII,
    and for those a strict pattern gives the same answer (tested against it) in microseconds.
    """
    match = _PLAIN_ADDRESS.fullmatch(value)
    if match is None or len(value) > 254 or len(match[1]) > 64:
        return None
    domain = match[2].lower()
    if "--" in domain or domain.rsplit(".", 1)[-1] in _SPECIAL_USE:
        return None  # IDNA rules apply to such labels: the full check decides
    return f"{match[1]}@{domain}"


def _email_address(value: str) -> str:
    return plain_address(value) or validate_email(value)[1]


EmailAddress = Annotated[str, AfterValidator(_email_address), WithJsonSchema({"type": "string", "format": "email"})]


class Contact(BaseModel):
    """Who the event is about; upserted into the contact store on ingest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=255)
    email: EmailAddress
    locale: str | None = Field(default=None, max_length=35)
    timezone: str | None = Field(default=None, max_length=64)
    # Marketing consent as the producer knows it now; None leaves the stored value alone.
    opt_in: bool | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)

    @field_validator("email")
    @classmethod
    def _no_line_breaks(cls, value: str) -> str:
        # EmailStr already refuses CR/LF; this keeps the promise explicit for header safety.
        if "\r" in value or "\n" in value:
            raise ValueError("an address cannot contain line breaks")
        return value

    @field_validator("locale")
    @classmethod
    def _known_locale(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            Locale.parse(value.replace("-", "_"))
        except (ValueError, UnknownLocaleError) as exc:
            raise ValueError(f"unknown locale {value!r}; use a tag such as 'en' or 'fr-CA'") from exc
        return value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as 'Europe/Paris'") from exc
        return value


class Event(BaseModel):
    """An event as producers publish it. ``data`` is what templates see."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=255, description="The producer's idempotency key.")
    type: str = Field(pattern=EVENT_TYPE_PATTERN)
    occurred_at: AwareDatetime
    contact: Contact
    data: dict[str, Any] = Field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A plain JSON-ready dict, as it travels on the broker."""
        return self.model_dump(mode="json")


def _field_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(event)"


def _errors(exc: ValidationError, prefix: tuple[str, ...] = ()) -> list[dict[str, str]]:
    return [
        {"field": _field_path(prefix + tuple(err["loc"])), "message": err["msg"]}
        for err in exc.errors(include_url=False)
    ]


def _shape_is_sound(value: Any) -> bool:
    """The cheap first look: no nesting deeper than allowed and no NUL, paths not kept."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return False
        elif isinstance(item, dict):
            if depth >= MAX_NESTING or any("\x00" in str(key) for key in item):
                return False
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            if depth >= MAX_NESTING:
                return False
            stack.extend((child, depth + 1) for child in item)
    return True


def _shape_problem(value: Any) -> dict[str, str] | None:
    """Too deep, or a NUL character (Postgres cannot store it): found without recursion."""
    if _shape_is_sound(value):
        return None
    stack: list[tuple[Any, tuple[str, ...]]] = [(value, ())]
    while stack:
        item, path = stack.pop()
        if len(path) > MAX_NESTING:
            return {"field": "(event)", "message": f"nested deeper than {MAX_NESTING} levels"}
        if isinstance(item, str):
            if "\x00" in item:
                return {"field": ".".join(path) or "(event)", "message": "contains a NUL character"}
        elif isinstance(item, dict):
            for key, child in item.items():
                if "\x00" in str(key):
                    return {"field": ".".join(path) or "(event)", "message": "a key contains a NUL character"}
                stack.append((child, (*path, str(key))))
        elif isinstance(item, list):
            stack.extend((child, (*path, str(index))) for index, child in enumerate(item))
    return None


def parse_event(raw: dict[str, Any] | str | bytes) -> Event:
    """Validate an envelope and, for built-in types, its data; raise :class:`EventInvalid`."""
    if isinstance(raw, str | bytes):
        if len(raw) > MAX_EVENT_BYTES:
            raise EventInvalid([{"field": "(event)", "message": "larger than 1 MB"}])
        try:
            raw = json.loads(raw)
        except RecursionError as exc:  # json's decoder stops safely at Python's recursion limit
            raise EventInvalid([{"field": "(event)", "message": f"nested deeper than {MAX_NESTING} levels"}]) from exc
        except (ValueError, UnicodeDecodeError) as exc:
            raise EventInvalid([{"field": "(event)", "message": f"not valid JSON: {exc}"}]) from exc
    if not isinstance(raw, dict):
        raise EventInvalid([{"field": "(event)", "message": "an event is a JSON object"}])
    problem = _shape_problem(raw)
    if problem is not None:
        raise EventInvalid([problem])
    try:
        event = Event.model_validate(raw)
    except ValidationError as exc:
        raise EventInvalid(_errors(exc)) from exc
    model = BUILTIN_DATA_MODELS.get(event.type)
    if model is not None:
        try:
            data = model.model_validate(event.data).model_dump(mode="json", exclude_none=True)
        except ValidationError as exc:
            raise EventInvalid(_errors(exc, ("data",))) from exc
        event = event.model_copy(update={"data": data})
    size = len(json_bytes(event.to_json()))  # UTF-8 bytes, as stored and as sent
    if size > MAX_EVENT_BYTES:
        raise EventInvalid([{"field": "(event)", "message": f"{size} bytes, larger than 1 MB"}])
    return event


def event_age_seconds(event: Event, now: datetime) -> float:
    """How long ago the event happened, for freshness limits."""
    return (now - event.occurred_at).total_seconds()
