"""The event envelope and the data of built-in types."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events import MAX_EVENT_BYTES, EventInvalid, parse_event
from events.envelope import plain_address


def purchase(**data: Any) -> dict[str, Any]:
    base = {
        "order_id": "A-1042",
        "items": [{"sku": "CANDLE-01", "name": "Bougie Figuier", "quantity": 2, "unit_price": "24.00"}],
        "currency": "EUR",
        "subtotal": "48.00",
        "total": "53.90",
    }
    return {
        "id": "evt-1",
        "type": "purchase",
        "occurred_at": "2026-11-27T09:00:00+01:00",
        "contact": {"id": "c-1", "email": "jeanne@example.org", "locale": "fr-CA"},
        "data": {**base, **data},
    }


def fields(exc: pytest.ExceptionInfo[EventInvalid]) -> list[str]:
    return [e["field"] for e in exc.value.errors]


def test_valid_purchase_keeps_amounts_exact() -> None:
    """A valid purchase parses and its money stays a decimal string, never a float."""
    event = parse_event(purchase())
    assert event.data["total"] == "53.90"
    assert event.to_json()["occurred_at"].endswith("+01:00")


def test_builtin_data_errors_name_the_field() -> None:
    """A purchase item with quantity 0 is refused, naming data.items.0.quantity."""
    raw = purchase(items=[{"sku": "X", "name": "Y", "quantity": 0, "unit_price": "1"}], subtotal=None)
    with pytest.raises(EventInvalid) as exc:
        parse_event(raw)
    assert "data.items.0.quantity" in fields(exc)


def test_subtotal_must_match_items() -> None:
    """A subtotal that is not the sum of the items is refused."""
    with pytest.raises(EventInvalid) as exc:
        parse_event(purchase(subtotal="47.00"))
    assert any("differs" in e["message"] for e in exc.value.errors)


def test_custom_type_accepts_any_data() -> None:
    """A type Déclic does not know is a custom event with free-form data."""
    raw = {**purchase(), "type": "wishlist_item_back_in_stock", "data": {"anything": [1, {"x": None}]}}
    assert parse_event(raw).data == {"anything": [1, {"x": None}]}


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"occurred_at": "2026-11-27T09:00:00"}, "occurred_at"),
        ({"type": "Bad Type!"}, "type"),
        ({"id": ""}, "id"),
        ({"id": "x" * 256}, "id"),
        ({"contact": {"id": "c", "email": "not-an-address"}}, "contact.email"),
        ({"contact": {"id": "c", "email": "a@example.org", "timezone": "Mars/Olympus"}}, "contact.timezone"),
        ({"contact": {"id": "c", "email": "a@example.org", "locale": "zz-QQ-1"}}, "contact.locale"),
        ({"unexpected": 1}, "unexpected"),
    ],
)
def test_envelope_errors_name_the_field(patch: dict[str, Any], field: str) -> None:
    """Each envelope mistake is reported against its own field."""
    with pytest.raises(EventInvalid) as exc:
        parse_event({**purchase(), **patch})
    assert field in fields(exc)


def test_header_injection_in_address_is_refused() -> None:
    """An address carrying CR/LF cannot get into the contact."""
    raw = purchase()
    raw["contact"]["email"] = "a@example.org\r\nBcc: victim@example.org"
    with pytest.raises(EventInvalid) as exc:
        parse_event(raw)
    assert "contact.email" in fields(exc)


def test_oversized_event_is_refused() -> None:
    """An event larger than 1 MB is refused whole, as text or as a dict."""
    raw = {**purchase(), "type": "custom_big", "data": {"blob": "x" * MAX_EVENT_BYTES}}
    with pytest.raises(EventInvalid, match="larger than 1 MB"):
        parse_event(raw)
    with pytest.raises(EventInvalid, match="larger than 1 MB"):
        parse_event(json.dumps(raw))


def test_invalid_json_and_non_objects_are_refused() -> None:
    """Bytes that are not JSON, or JSON that is not an object, get a clear error."""
    with pytest.raises(EventInvalid, match="not valid JSON"):
        parse_event(b"\xff\xfe{")
    with pytest.raises(EventInvalid, match="JSON object"):
        parse_event("[1, 2]")


def test_invoice_attachment_needs_one_source() -> None:
    """An invoice PDF must be inline base64 or an S3 object, not neither."""
    raw = {
        **purchase(),
        "type": "invoice_issued",
        "data": {"invoice_number": "F-1", "issued_on": "2026-11-27", "currency": "EUR", "total": "10",
                 "pdf": {"filename": "f.pdf"}},
    }
    with pytest.raises(EventInvalid) as exc:
        parse_event(raw)
    assert "data.pdf" in fields(exc)


_ADDRESS_TEXT = st.text(alphabet="abcXYZ09.-_+@!#'`~|é", min_size=1, max_size=40)


@settings(max_examples=600, deadline=None)
@given(st.one_of(st.emails(), _ADDRESS_TEXT, st.builds(lambda a, b: f"{a}@{b}", _ADDRESS_TEXT, _ADDRESS_TEXT)))
def test_the_fast_address_check_agrees_with_email_validator(value: str) -> None:
    """Whatever the fast path accepts, email_validator accepts too, normalised the same way."""
    import email_validator

    fast = plain_address(value)
    if fast is None:
        return
    assert email_validator.validate_email(value, check_deliverability=False).normalized == fast


@pytest.mark.parametrize("address", ["a@b.test", "x@xn--bcher-kva.com", "a@ex--ample.com", "dé@example.com",
                                     "A@Example.COM", "a..b@example.com", "a@localhost", "a@example.com."])
def test_addresses_the_fast_path_leaves_to_email_validator(address: str) -> None:
    import email_validator

    fast = plain_address(address)
    try:
        expected: str | None = email_validator.validate_email(address, check_deliverability=False).normalized
    except email_validator.EmailNotValidError:
        expected = None
    assert fast is None or fast == expected
    assert plain_address("A@Example.COM") == "A@example.com"
