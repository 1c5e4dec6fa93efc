"""``integrations.yaml``: which integrations exist, how each signs, and its event mappings.

Loaded and checked once at start-up (a bad expression or an unknown key stops the API with
the path of the mistake). Secrets are never in the file: Shopify's and Stripe's come from
``DECLIC_SHOPIFY_SECRET`` and ``DECLIC_STRIPE_SECRET``, a generic integration's from
``DECLIC_INTEGRATION_SECRETS`` (JSON, by name). An integration without a secret is disabled.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from api.integrations.base import Provider
from api.integrations.generic import Generic, SignatureConfig
from api.integrations.mapping import EventMapping
from api.integrations.shopify import Shopify
from api.integrations.stripe import DEFAULT_TOLERANCE_S, Stripe
from declic.settings import Settings


class IntegrationsConfigError(ValueError):
    """The integrations file cannot be used; the message names the file and the field."""


class IntegrationConfig(BaseModel):
    """One integration: its kind, signature (generic only) and mappings by external type."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["shopify", "stripe", "generic"]
    description: str | None = None
    signature: SignatureConfig | None = None
    tolerance_s: int = Field(default=DEFAULT_TOLERANCE_S, ge=1)
    type_header: str | None = None
    type: str | None = None
    delivery_header: str | None = None
    delivery_id: str | None = None
    events: dict[str, EventMapping] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _generic_needs_more(self) -> IntegrationConfig:
        if self.kind == "generic":
            if self.signature is None:
                raise ValueError("a generic integration needs a 'signature'")
            if not (self.type_header or self.type):
                raise ValueError("a generic integration needs 'type_header' or 'type' (JMESPath)")
        elif self.signature or self.type_header or self.type or self.delivery_header or self.delivery_id:
            raise ValueError(f"{self.kind} signs and names its events itself; remove signature/type/delivery")
        return self


class IntegrationsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    integrations: dict[str, IntegrationConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _names(self) -> IntegrationsFile:
        for name in self.integrations:
            if not name.replace("_", "").replace("-", "").isalnum() or not name.islower():
                raise ValueError(f"integration name {name!r}: use lower-case letters, digits, - and _")
        return self


@dataclass(frozen=True)
class Integration:
    """A configured integration; ``provider`` is None when its secret is not set (disabled)."""

    name: str
    config: IntegrationConfig
    provider: Provider | None


def load_integrations_file(path: Path) -> IntegrationsFile:
    """Parse and check the file; raises :class:`IntegrationsConfigError` naming the problem."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise IntegrationsConfigError(f"{path}: {exc}") from exc
    try:
        return IntegrationsFile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise IntegrationsConfigError(f"{path}: {problems}") from exc


def _provider(name: str, config: IntegrationConfig, settings: Settings) -> Provider | None:
    if config.kind == "shopify":
        return Shopify(settings.shopify_secret) if settings.shopify_secret else None
    if config.kind == "stripe":
        return Stripe(settings.stripe_secret, config.tolerance_s) if settings.stripe_secret else None
    secret = settings.integration_secrets.get(name)
    if not secret:
        return None
    assert config.signature is not None
    return Generic(secret, config.signature, type_header=config.type_header, type_path=config.type,
                   delivery_header=config.delivery_header, delivery_path=config.delivery_id)


def build_integrations(settings: Settings) -> dict[str, Integration]:
    """Every integration of ``settings.integrations_file`` with its provider (or disabled)."""
    parsed = load_integrations_file(settings.integrations_file)
    return {
        name: Integration(name, config, _provider(name, config, settings))
        for name, config in parsed.integrations.items()
    }
