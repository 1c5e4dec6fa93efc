"""Stripe webhooks: ``Stripe-Signature: t=<unix time>,v1=<hex>[,v1=<hex>…]``.

Each ``v1`` is the hex HMAC-SHA256 of ``"{t}.{raw body}"`` with the endpoint's signing
secret; several appear while a secret is being rolled, and any one may match. A timestamp
more than the tolerance (300 s, Stripe's default) away from now is refused, so a captured
request cannot be replayed later. Documented at
https://docs.stripe.com/webhooks#verify-manually. The event id (``evt_…``) is what Stripe
retries under, so duplicates are dropped by it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from api.integrations.base import Delivery, SignatureInvalid

SIGNATURE_HEADER = "stripe-signature"
DEFAULT_TOLERANCE_S = 300


def stripe_signature(raw: bytes, secret: str, timestamp: int) -> str:
    """The ``v1`` value Stripe computes for ``raw`` signed at ``timestamp``."""
    signed = f"{timestamp}.".encode() + raw
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def parse_signature_header(value: str) -> tuple[int, list[str]]:
    """The timestamp and every ``v1`` signature; other schemes (``v0``) are ignored."""
    timestamp: int | None = None
    signatures: list[str] = []
    for part in value.split(","):
        key, _, item = part.strip().partition("=")
        if key == "t" and item.isdigit():
            timestamp = int(item)
        elif key == "v1" and item:
            signatures.append(item)
    if timestamp is None:
        raise SignatureInvalid("no timestamp (t=) in Stripe-Signature")
    if not signatures:
        raise SignatureInvalid("no v1 signature in Stripe-Signature")
    return timestamp, signatures


class Stripe:
    """Verifies Stripe's signature with the endpoint secret, within the tolerance."""

    def __init__(self, secret: str, tolerance_s: int = DEFAULT_TOLERANCE_S) -> None:
        self._secret = secret
        self._tolerance_s = tolerance_s

    def verify(self, raw: bytes, headers: Mapping[str, str], now: float) -> None:
        header = headers.get(SIGNATURE_HEADER)
        if not header:
            raise SignatureInvalid(f"missing {SIGNATURE_HEADER} header")
        timestamp, signatures = parse_signature_header(header)
        expected = stripe_signature(raw, self._secret, timestamp).encode()
        # Check every candidate, in constant time each, without stopping at the first match.
        matched = [hmac.compare_digest(s.encode(), expected) for s in signatures]
        if not any(matched):
            raise SignatureInvalid("no v1 signature matches")
        if abs(now - timestamp) > self._tolerance_s:
            raise SignatureInvalid(f"timestamp outside the {self._tolerance_s} s tolerance")

    def delivery(self, payload: Any, headers: Mapping[str, str]) -> Delivery:
        if not isinstance(payload, dict):
            return Delivery("", None)
        event_type = payload.get("type")
        event_id = payload.get("id")
        return Delivery(
            event_type if isinstance(event_type, str) else "",
            event_id if isinstance(event_id, str) and event_id else None,
        )
