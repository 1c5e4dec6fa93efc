"""Mapping an external event to a Déclic envelope with JMESPath (pure; https://jmespath.org).

A mapping is YAML: every value is a JMESPath expression evaluated against the provider's
payload (a literal is quoted: ``'stripe'``, or ``\\`1\\```), and ``data`` may nest objects::

    type: purchase                          # the Déclic event type (a plain name, not an expression)
    when: "data.object.payment_status == 'paid'"   # optional: otherwise acknowledged and ignored
    id: data.object.id                      # optional: default the provider's delivery id
    occurred_at: iso_time(created)          # optional: default the time of receipt
    contact: {id: data.object.customer, email: data.object.customer_details.email, locale: ...}
    data: {order_id: data.object.client_reference_id, total: money(data.object.amount_total, data.object.currency)}

The event id becomes ``<integration>:<external type>:<id>``, so ids of different sources and
of different topics about one object (an order created, then paid) never collide.
Null results are left out, so optional fields simply vanish. Functions beyond JMESPath's own:
``money(minor, currency)`` (Stripe's integer minor units → ``"129.60"``, zero-decimal
currencies kept whole), ``upper``, ``lower``, ``iso_time(epoch)``, ``date(epoch or ISO)``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

import jmespath
from jmespath import functions
from jmespath.exceptions import JMESPathError
from jmespath.parser import ParsedResult
from pydantic import BaseModel, ConfigDict, Field, field_validator

from events.envelope import EVENT_TYPE_PATTERN

# https://docs.stripe.com/currencies#zero-decimal and #three-decimal
_ZERO_DECIMAL = frozenset(
    ["BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"]
)
_THREE_DECIMAL = frozenset(["BHD", "JOD", "KWD", "OMR", "TND"])


class MappingError(ValueError):
    """An expression failed on this payload (a type error inside JMESPath, for instance)."""


class _Functions(functions.Functions):
    @functions.signature({"types": ["number", "string", "null"]}, {"types": ["string", "null"]})
    def _func_money(self, amount: int | str | None, currency: str | None) -> str | None:
        if amount is None or currency is None:
            return None
        code = currency.upper()
        places = 0 if code in _ZERO_DECIMAL else 3 if code in _THREE_DECIMAL else 2
        value = Decimal(str(amount)).scaleb(-places)
        return f"{value:.{places}f}"

    @functions.signature({"types": ["string", "null"]})
    def _func_upper(self, value: str | None) -> str | None:
        return None if value is None else value.upper()

    @functions.signature({"types": ["string", "null"]})
    def _func_lower(self, value: str | None) -> str | None:
        return None if value is None else value.lower()

    @functions.signature({"types": ["number", "null"]})
    def _func_iso_time(self, epoch: float | None) -> str | None:
        return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat()

    @functions.signature({"types": ["number", "string", "null"]})
    def _func_date(self, value: float | str | None) -> str | None:
        if value is None:
            return None
        if isinstance(value, int | float):
            return datetime.fromtimestamp(value, UTC).date().isoformat()
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).date().isoformat()
        except ValueError:
            return date.fromisoformat(value[:10]).isoformat()


_OPTIONS = jmespath.Options(custom_functions=_Functions())

Expr = str


@lru_cache(maxsize=4096)
def compile_expression(expression: str) -> ParsedResult:
    """Compile once at start-up; a bad expression fails the configuration check."""
    try:
        return jmespath.compile(expression)
    except JMESPathError as exc:
        raise ValueError(f"invalid JMESPath {expression!r}: {exc}") from exc


class ContactMapping(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Expr
    email: Expr
    locale: Expr | None = None
    timezone: Expr | None = None
    opt_in: Expr | None = None
    attributes: dict[str, Expr] = Field(default_factory=dict)

    @field_validator("id", "email", "locale", "timezone", "opt_in")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            compile_expression(value)
        return value

    @field_validator("attributes")
    @classmethod
    def _attributes_compile(cls, value: dict[str, str]) -> dict[str, str]:
        for expression in value.values():
            compile_expression(expression)
        return value


class EventMapping(BaseModel):
    """How one external event type becomes a Déclic event."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str = Field(pattern=EVENT_TYPE_PATTERN, description="The Déclic event type")
    when: Expr | None = None
    id: Expr | None = None
    occurred_at: Expr | None = None
    contact: ContactMapping
    data: dict[str, Any] | Expr = Field(default_factory=dict)

    @field_validator("when", "id", "occurred_at")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            compile_expression(value)
        return value

    @field_validator("data")
    @classmethod
    def _expressions_only(cls, value: dict[str, Any] | str) -> dict[str, Any] | str:
        _check_tree(value, "data")
        return value


def _check_tree(value: Any, path: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _check_tree(item, f"{path}.{key}")
    elif isinstance(value, str):
        compile_expression(value)
    else:
        raise ValueError(f"{path}: a mapping value is a JMESPath expression (quote literals: 'text')")


def _search(expression: str, payload: Any) -> Any:
    try:
        return compile_expression(expression).search(payload, options=_OPTIONS)
    except JMESPathError as exc:
        raise MappingError(f"{expression!r}: {exc}") from exc


def _evaluate_tree(value: Any, payload: Any) -> Any:
    if isinstance(value, dict):
        out = {k: _evaluate_tree(v, payload) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not None}
    return _search(value, payload)


def _as_id(value: Any) -> Any:
    # Providers use numeric ids (Shopify); Déclic ids are strings.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def applies(mapping: EventMapping, payload: Any) -> bool:
    """Whether the ``when`` condition (if any) holds for this payload (JMESPath truthiness)."""
    if mapping.when is None:
        return True
    return _search(mapping.when, payload) not in (None, False, "", [], {}, 0)


def build_envelope(
    mapping: EventMapping, payload: Any, *, integration: str, external_type: str, delivery_id: str | None,
    now: datetime,
) -> dict[str, Any]:
    """The envelope this payload maps to (to be checked by ``parse_event``)."""
    raw_id = _as_id(_search(mapping.id, payload)) if mapping.id else delivery_id
    contact_map = mapping.contact
    contact = {
        "id": _as_id(_search(contact_map.id, payload)),
        "email": _search(contact_map.email, payload),
        "locale": _search(contact_map.locale, payload) if contact_map.locale else None,
        "timezone": _search(contact_map.timezone, payload) if contact_map.timezone else None,
        "opt_in": _search(contact_map.opt_in, payload) if contact_map.opt_in else None,
        "attributes": _evaluate_tree(dict(contact_map.attributes), payload),
    }
    occurred = _search(mapping.occurred_at, payload) if mapping.occurred_at else None
    return {
        "id": None if raw_id in (None, "") else f"{integration}:{external_type}:{raw_id}",
        "type": mapping.type,
        "occurred_at": occurred or now.isoformat(),
        "contact": {k: v for k, v in contact.items() if v is not None},
        "data": _evaluate_tree(mapping.data, payload),
    }


def drop_fields(envelope: dict[str, Any], fields: set[str]) -> dict[str, Any]:
    """The envelope without the optional contact fields named (``contact.locale``, ...)."""
    contact = {k: v for k, v in envelope["contact"].items() if f"contact.{k}" not in fields}
    return {**envelope, "contact": contact}
