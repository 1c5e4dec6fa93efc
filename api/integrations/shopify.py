"""Shopify webhooks: ``X-Shopify-Hmac-Sha256`` is the base64 HMAC-SHA256 of the raw body.

Documented at https://shopify.dev/docs/apps/build/webhooks/subscribe/https#step-5-verify-the-webhook
(the key is the app's client secret). The event kind is the ``X-Shopify-Topic`` header — never
the body, which a topic does not describe — and retries of one delivery keep the same
``X-Shopify-Webhook-Id``, which is what duplicates are dropped by.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from api.integrations.base import Delivery, SignatureInvalid

SIGNATURE_HEADER = "x-shopify-hmac-sha256"
TOPIC_HEADER = "x-shopify-topic"
WEBHOOK_ID_HEADER = "x-shopify-webhook-id"


def shopify_signature(raw: bytes, secret: str) -> str:
    """The header value Shopify sends for ``raw`` (base64 of the HMAC-SHA256 digest)."""
    return base64.b64encode(hmac.new(secret.encode(), raw, hashlib.sha256).digest()).decode()


class Shopify:
    """Verifies Shopify's signature with the app secret."""

    def __init__(self, secret: str) -> None:
        self._secret = secret

    def verify(self, raw: bytes, headers: Mapping[str, str], now: float) -> None:
        given = headers.get(SIGNATURE_HEADER)
        if not given:
            raise SignatureInvalid(f"missing {SIGNATURE_HEADER} header")
        # compare_digest: the time taken says nothing about how many characters matched.
        if not hmac.compare_digest(given.strip().encode(), shopify_signature(raw, self._secret).encode()):
            raise SignatureInvalid("signature does not match")

    def delivery(self, payload: Any, headers: Mapping[str, str]) -> Delivery:
        return Delivery(headers.get(TOPIC_HEADER, "").strip(), headers.get(WEBHOOK_ID_HEADER) or None)
