"""What every provider gives the webhook route: a signature check and the delivery's identity."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol


class SignatureInvalid(Exception):
    """The body was not signed with our secret (or too long ago); answered 401, body unlogged.

    The message is a short reason safe to log and to return: never the body, never a digest.
    """


@dataclass(frozen=True)
class Delivery:
    """Who sent what: the provider's own event type and the id it retries under."""

    external_type: str
    delivery_id: str | None


class Provider(Protocol):
    """A signature scheme plus where the event type and delivery id live."""

    def verify(self, raw: bytes, headers: Mapping[str, str], now: float) -> None:
        """Return if ``raw`` is authentic; raise :class:`SignatureInvalid` with a reason if not."""

    def delivery(self, payload: Any, headers: Mapping[str, str]) -> Delivery:
        """The external event type and delivery id of an authentic payload."""
