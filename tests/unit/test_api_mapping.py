"""The shipped integrations.yaml maps the stored Shopify and Stripe payloads to valid Déclic events."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from api.integrations.config import IntegrationsConfigError, IntegrationsFile, load_integrations_file
from api.integrations.mapping import EventMapping, applies, build_envelope
from api.integrations.routes import map_event
from declic.settings import REPO_ROOT
from events import Event, EventInvalid
from flows import load_catalogue

DATA = REPO_ROOT / "tests" / "data"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def config() -> IntegrationsFile:
    return load_integrations_file(REPO_ROOT / "api" / "integrations.yaml")


def payload(provider: str, name: str) -> Any:
    return json.loads((DATA / provider / f"{name}.json").read_text())


def mapped(config: IntegrationsFile, integration: str, external: str, body: Any, delivery: str = "d-1") -> Event:
    mapping = config.integrations[integration].events[external]
    assert applies(mapping, body)
    return map_event(mapping, body, integration=integration, external_type=external, delivery_id=delivery, now=NOW)


def test_every_mapped_type_is_consumed_by_a_flow_or_is_custom(config: IntegrationsFile) -> None:
    """Each mapping targets an event type a catalogue flow triggers on, or a documented custom type."""
    triggers = {flow.trigger.event for flow in load_catalogue(REPO_ROOT / "flows" / "catalogue")}
    custom = {"invoice_paid", "payment_failed"}
    for integration in config.integrations.values():
        for mapping in integration.events.values():
            assert mapping.type in triggers | custom, mapping.type


def test_shopify_order_created_becomes_order_confirmed(config: IntegrationsFile) -> None:
    """orders/create maps to order_confirmed with items, totals, address, locale and consent."""
    event = mapped(config, "shopify", "orders/create", payload("shopify", "orders_create"))
    assert event.type == "order_confirmed"
    assert event.id == "shopify:orders/create:5802133520518"
    assert event.contact.id == "claire.dubois@example.org" and event.contact.locale == "fr-FR"
    assert event.contact.opt_in is True and event.contact.attributes["first_name"] == "Claire"
    data = event.data
    assert data["order_id"] == "#10482" and data["currency"] == "EUR"
    assert [i["sku"] for i in data["items"]] == ["LIN-NAP-LIN-160", "47281904648326"]  # empty sku → variant id
    assert (data["subtotal"], data["shipping"], data["tax"], data["total"]) == ("108.90", "3.90", "18.80", "112.80")
    assert data["shipping_address"]["country"] == "FR" and data["shipping_address"]["postal_code"] == "69002"
    assert event.occurred_at == datetime.fromisoformat("2026-11-26T16:05:12+01:00")


def test_shopify_paid_fulfilled_and_new_customer(config: IntegrationsFile) -> None:
    """orders/paid → purchase, fulfillments/create → order_shipped, customers/create → signup."""
    paid = mapped(config, "shopify", "orders/paid", payload("shopify", "orders_paid"))
    assert paid.type == "purchase" and paid.data["payment_method"] == "shopify_payments"
    assert paid.id != mapped(config, "shopify", "orders/create", payload("shopify", "orders_create")).id
    shipped = mapped(config, "shopify", "fulfillments/create", payload("shopify", "fulfillments_create"))
    assert shipped.type == "order_shipped" and shipped.data["carrier"] == "Colissimo"
    assert shipped.data["tracking_url"].startswith("https://www.laposte.fr/")
    assert shipped.contact.id == "claire.dubois@example.org"
    signup = mapped(config, "shopify", "customers/create", payload("shopify", "customers_create"))
    assert signup.type == "signup" and signup.data == {"source": "shopify"}
    assert signup.contact.opt_in is False and signup.contact.attributes["shopify_customer_id"] == "7391550431366"


def test_stripe_checkout_becomes_a_purchase_in_major_units(config: IntegrationsFile) -> None:
    """checkout.session.completed maps cents to decimals, and Stripe's 'auto' locale is dropped, not fatal."""
    event = mapped(config, "stripe", "checkout.session.completed", payload("stripe", "checkout_session_completed"))
    assert event.type == "purchase"
    assert event.id == "stripe:checkout.session.completed:cs_test_a1Q2w3E4r5T6y7U8i9O0pLkJhGfDsA"
    assert event.contact.id == "cus_R8kLmN2pQ4sT6v" and event.contact.locale is None
    assert (event.data["total"], event.data["discount"], event.data["tax"], event.data["currency"]) == (
        "129.60", "14.40", "21.60", "EUR")
    assert event.data["items"][0]["unit_price"] == "144.00" and event.data["order_id"] == "MLM-10517"


def test_stripe_invoices_and_customers(config: IntegrationsFile) -> None:
    """invoice.paid → invoice_paid with the PDF link, payment_failed keeps the retry time, customer.created → signup."""
    paid = mapped(config, "stripe", "invoice.paid", payload("stripe", "invoice_paid"))
    assert paid.type == "invoice_paid" and paid.data["pdf_url"].startswith("https://pay.stripe.com/")
    assert paid.data["total"] == "24.00" and paid.data["invoice_number"] == "8F3C2A71-0007"
    failed = mapped(config, "stripe", "invoice.payment_failed", payload("stripe", "invoice_payment_failed"))
    assert failed.type == "payment_failed" and failed.data["attempt_count"] == 2
    assert failed.data["next_payment_attempt"].startswith("2026-")
    customer = mapped(config, "stripe", "customer.created", payload("stripe", "customer_created"))
    assert customer.type == "signup" and customer.contact.locale == "en-IE"


def test_unpaid_checkout_is_not_a_purchase(config: IntegrationsFile) -> None:
    """A checkout completed with a delayed payment method is ignored until async_payment_succeeded."""
    body = payload("stripe", "checkout_session_completed")
    body["data"]["object"]["payment_status"] = "unpaid"
    assert not applies(config.integrations["stripe"].events["checkout.session.completed"], body)
    body["data"]["object"]["payment_status"] = "paid"
    assert applies(config.integrations["stripe"].events["checkout.session.async_payment_succeeded"], body)


def test_zero_decimal_currencies_are_not_divided() -> None:
    """money() keeps yen whole and divides dinars by 1000, per Stripe's currency list."""
    mapping = EventMapping.model_validate({
        "type": "custom", "contact": {"id": "'c'", "email": "'a@example.com'"},
        "data": {"jpy": "money(`1500`, 'jpy')", "kwd": "money(`1500`, 'KWD')", "eur": "money(`1500`, 'eur')"},
    })
    envelope = build_envelope(mapping, {}, integration="x", external_type="t", delivery_id="1", now=NOW)
    assert envelope["data"] == {"jpy": "1500", "kwd": "1.500", "eur": "15.00"}


def test_a_mapping_that_yields_an_invalid_event_names_the_field(config: IntegrationsFile) -> None:
    """A Shopify order without line items fails validation naming data.items."""
    body = payload("shopify", "orders_create")
    body["line_items"] = []
    with pytest.raises(EventInvalid) as caught:
        mapped(config, "shopify", "orders/create", body)
    assert any(e["field"].startswith("data.items") for e in caught.value.errors)


def test_bad_configuration_is_refused_with_its_path(tmp_path: Path) -> None:
    """An invalid JMESPath or a generic integration without a signature stops loading, naming where."""
    (tmp_path / "a.yaml").write_text(
        "integrations:\n  acme:\n    kind: stripe\n    events:\n      x:\n        type: t\n"
        "        contact: {id: 'a[', email: b}\n")
    with pytest.raises(IntegrationsConfigError, match=r"acme\.events\.x\.contact\.id"):
        load_integrations_file(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("integrations:\n  acme:\n    kind: generic\n    type: event\n")
    with pytest.raises(IntegrationsConfigError, match="signature"):
        load_integrations_file(tmp_path / "b.yaml")
