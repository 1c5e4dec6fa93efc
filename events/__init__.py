"""Events: the envelope every producer sends, its validation, and the producer SDK."""

from events.envelope import MAX_EVENT_BYTES, Contact, Event, EventInvalid, parse_event
from events.publisher import Publisher, PublishError

__all__ = [
    "MAX_EVENT_BYTES",
    "Contact",
    "Event",
    "EventInvalid",
    "PublishError",
    "Publisher",
    "parse_event",
]
