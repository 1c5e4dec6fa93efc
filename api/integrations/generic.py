"""Generic signed webhooks, described in YAML so a provider is connected without code.

The signature is an HMAC of the raw body (optionally with a timestamp) in a header::

    signature:
      header: X-Zendesk-Webhook-Signature
      algorithm: sha256                     # sha1, sha256, sha512
      encoding: base64                      # hex or base64
      prefix: ""                            # e.g. "sha256=" for GitHub's X-Hub-Signature-256
      signed_payload: "{timestamp}{body}"   # what is signed; default "{body}"
      timestamp_header: X-Zendesk-Webhook-Signature-Timestamp
      tolerance_s: 300                      # refuse timestamps further from now than this

A timestamp header holds Unix seconds or an ISO 8601 time. The event type and delivery id are
read from a header (``type_header``, ``delivery_header``) or from the payload by JMESPath
(``type``, ``delivery_id``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

import jmespath
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.integrations.base import Delivery, SignatureInvalid

_ALGORITHMS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}


class SignatureConfig(BaseModel):
    """How a provider signs its requests."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    header: str = Field(min_length=1)
    algorithm: Literal["sha1", "sha256", "sha512"] = "sha256"
    encoding: Literal["hex", "base64"] = "hex"
    prefix: str = ""
    signed_payload: str = "{body}"
    timestamp_header: str | None = None
    tolerance_s: int = Field(default=300, ge=1)

    @model_validator(mode="after")
    def _coherent(self) -> SignatureConfig:
        if "{body}" not in self.signed_payload:
            raise ValueError("signed_payload must contain {body}")
        if "{timestamp}" in self.signed_payload and not self.timestamp_header:
            raise ValueError("signed_payload uses {timestamp}: give timestamp_header")
        return self


def sign(config: SignatureConfig, secret: str, raw: bytes, timestamp: str = "") -> str:
    """The header value a provider configured as ``config`` sends for ``raw``."""
    before, _, after = config.signed_payload.partition("{body}")
    message = before.replace("{timestamp}", timestamp).encode() + raw + after.replace("{timestamp}", timestamp).encode()
    digest = hmac.new(secret.encode(), message, _ALGORITHMS[config.algorithm]).digest()
    encoded = digest.hex() if config.encoding == "hex" else base64.b64encode(digest).decode()
    return config.prefix + encoded


def _timestamp_seconds(value: str) -> float:
    value = value.strip()
    try:
        return float(value) / (1000 if len(value.split(".")[0]) >= 13 else 1)  # ms epochs too
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError as exc:
        raise SignatureInvalid("timestamp header is neither Unix time nor ISO 8601") from exc


class Generic:
    """A provider described by :class:`SignatureConfig` and where its type and id are."""

    def __init__(
        self, secret: str, signature: SignatureConfig, *, type_header: str | None = None,
        type_path: str | None = None, delivery_header: str | None = None, delivery_path: str | None = None,
    ) -> None:
        self._secret = secret
        self._signature = signature
        self._type_header = type_header.lower() if type_header else None
        self._type_path = jmespath.compile(type_path) if type_path else None
        self._delivery_header = delivery_header.lower() if delivery_header else None
        self._delivery_path = jmespath.compile(delivery_path) if delivery_path else None

    def verify(self, raw: bytes, headers: Mapping[str, str], now: float) -> None:
        config = self._signature
        given = headers.get(config.header.lower())
        if not given:
            raise SignatureInvalid(f"missing {config.header} header")
        timestamp = ""
        if config.timestamp_header:
            timestamp = headers.get(config.timestamp_header.lower(), "")
            if not timestamp:
                raise SignatureInvalid(f"missing {config.timestamp_header} header")
        expected = sign(config, self._secret, raw, timestamp)
        if not hmac.compare_digest(given.strip().encode(), expected.encode()):
            raise SignatureInvalid("signature does not match")
        # Checked after the signature, so an unsigned request learns nothing about our clock.
        if config.timestamp_header and abs(now - _timestamp_seconds(timestamp)) > config.tolerance_s:
            raise SignatureInvalid(f"timestamp outside the {config.tolerance_s} s tolerance")

    def delivery(self, payload: Any, headers: Mapping[str, str]) -> Delivery:
        external_type = self._pick(self._type_header, self._type_path, payload, headers)
        delivery_id = self._pick(self._delivery_header, self._delivery_path, payload, headers)
        return Delivery(external_type or "", delivery_id or None)

    @staticmethod
    def _pick(header: str | None, path: Any, payload: Any, headers: Mapping[str, str]) -> str | None:
        if header:
            return headers.get(header)
        if path is not None:
            value = path.search(payload)
            if isinstance(value, str | int) and not isinstance(value, bool):
                return str(value)
        return None
