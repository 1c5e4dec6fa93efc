"""Webhook signature schemes, checked against vectors computed with openssl from the providers' documents."""

from __future__ import annotations

import pytest

from api.integrations.base import SignatureInvalid
from api.integrations.generic import Generic, SignatureConfig, sign
from api.integrations.shopify import Shopify, shopify_signature
from api.integrations.stripe import Stripe, parse_signature_header, stripe_signature

# printf '{"id":1}' | openssl dgst -sha256 -hmac shpss_test_secret -binary | base64
SHOPIFY_VECTOR = ("shpss_test_secret", b'{"id":1}', "K2XDCjoIIQnsCAW9wJNjHt4VwaiFCMoHAkXVA+JPSq0=")
# printf '1700000000.{"id":"evt_1"}' | openssl dgst -sha256 -hmac whsec_test_secret
STRIPE_VECTOR = ("whsec_test_secret", 1700000000, b'{"id":"evt_1"}',
                 "248a374f50f943a28b0f6ab50faf9a7e7e29b710fa26df9fb1618b9bf8ea9c9a")
# printf '1700000000{"event":"ticket.solved"}' | openssl dgst -sha256 -hmac zd_secret -binary | base64
ZENDESK_VECTOR = ("zd_secret", "1700000000", b'{"event":"ticket.solved"}',
                  "UVAEd4bk/AYczQ/jin06XkklFiDmNCOdgP0yrCau+zU=")


def test_shopify_signature_matches_the_documented_vector() -> None:
    """Shopify's header is base64 HMAC-SHA256 of the raw body, as openssl computes it."""
    secret, body, expected = SHOPIFY_VECTOR
    assert shopify_signature(body, secret) == expected
    Shopify(secret).verify(body, {"x-shopify-hmac-sha256": expected}, 0)


@pytest.mark.parametrize("headers", [{}, {"x-shopify-hmac-sha256": "AAAA"},
                                     {"x-shopify-hmac-sha256": SHOPIFY_VECTOR[2].lower()}])
def test_shopify_refuses_missing_or_wrong_signatures(headers: dict[str, str]) -> None:
    """A missing, wrong or case-mangled Shopify signature is refused."""
    with pytest.raises(SignatureInvalid):
        Shopify(SHOPIFY_VECTOR[0]).verify(SHOPIFY_VECTOR[1], headers, 0)


def test_shopify_refuses_a_tampered_body() -> None:
    """One changed byte of the body breaks Shopify's signature."""
    secret, body, expected = SHOPIFY_VECTOR
    with pytest.raises(SignatureInvalid):
        Shopify(secret).verify(body.replace(b"1", b"2"), {"x-shopify-hmac-sha256": expected}, 0)


def test_stripe_signature_matches_the_documented_vector() -> None:
    """Stripe's v1 is hex HMAC-SHA256 of "{t}.{body}", as openssl computes it."""
    secret, t, body, expected = STRIPE_VECTOR
    assert stripe_signature(body, secret, t) == expected
    Stripe(secret).verify(body, {"stripe-signature": f"t={t},v1={expected}"}, t + 10)


def test_stripe_accepts_any_matching_v1_and_ignores_v0() -> None:
    """During a secret roll several v1 values arrive; any one matching is enough."""
    secret, t, body, expected = STRIPE_VECTOR
    header = f"t={t},v1={'0' * 64},v0=deadbeef,v1={expected}"
    Stripe(secret).verify(body, {"stripe-signature": header}, t)


@pytest.mark.parametrize(("header", "now", "reason"), [
    ("", 1700000000, "missing"),
    ("v1=abc", 1700000000, "timestamp"),
    ("t=1700000000", 1700000000, "no v1"),
    (f"t=1700000000,v1={'0' * 64}", 1700000000, "no v1 signature matches"),
    (f"t=1700000000,v1={STRIPE_VECTOR[3]}", 1700000301, "tolerance"),
    (f"t=1700000000,v1={STRIPE_VECTOR[3]}", 1699999699, "tolerance"),
])
def test_stripe_refusals_name_their_reason(header: str, now: int, reason: str) -> None:
    """Stripe signatures without t, without v1, not matching or older than 300 s are refused with the reason."""
    headers = {"stripe-signature": header} if header else {}
    with pytest.raises(SignatureInvalid, match=reason):
        Stripe(STRIPE_VECTOR[0]).verify(STRIPE_VECTOR[2], headers, now)


def test_stripe_header_parsing_keeps_every_v1() -> None:
    """The Stripe-Signature header parser returns the timestamp and all v1 values in order."""
    assert parse_signature_header("t=5, v1=a ,v1=b,v0=c") == (5, ["a", "b"])


def test_generic_zendesk_style_signature_matches_its_vector() -> None:
    """A generic base64 HMAC over timestamp+body (Zendesk's scheme) verifies against the openssl vector."""
    secret, ts, body, expected = ZENDESK_VECTOR
    config = SignatureConfig(
        header="X-Zendesk-Webhook-Signature", encoding="base64", signed_payload="{timestamp}{body}",
        timestamp_header="X-Zendesk-Webhook-Signature-Timestamp",
    )
    assert sign(config, secret, body, ts) == expected
    headers = {"x-zendesk-webhook-signature": expected, "x-zendesk-webhook-signature-timestamp": ts}
    Generic(secret, config, type_path="event").verify(body, headers, 1700000100)
    with pytest.raises(SignatureInvalid, match="tolerance"):
        Generic(secret, config, type_path="event").verify(body, headers, 1700001000)


def test_generic_github_style_prefixed_hex_signature() -> None:
    """A generic hex signature with a 'sha256=' prefix (GitHub's scheme) verifies, and a wrong one does not."""
    config = SignatureConfig(header="X-Hub-Signature-256", prefix="sha256=")
    body = b'{"action":"opened"}'
    good = {"x-hub-signature-256": sign(config, "s3cret", body)}
    assert good["x-hub-signature-256"].startswith("sha256=") and len(good["x-hub-signature-256"]) == 71
    provider = Generic("s3cret", config, type_header="X-GitHub-Event", delivery_header="X-GitHub-Delivery")
    provider.verify(body, good, 0)
    with pytest.raises(SignatureInvalid):
        provider.verify(body, {"x-hub-signature-256": "sha256=" + "0" * 64}, 0)
    delivery = provider.delivery({}, {"x-github-event": "issues", "x-github-delivery": "d-1"})
    assert (delivery.external_type, delivery.delivery_id) == ("issues", "d-1")


def test_generic_signature_config_must_be_coherent() -> None:
    """A signed payload without {body}, or using {timestamp} without its header, is a configuration error."""
    with pytest.raises(ValueError, match="body"):
        SignatureConfig(header="X", signed_payload="{timestamp}")
    with pytest.raises(ValueError, match="timestamp_header"):
        SignatureConfig(header="X", signed_payload="{timestamp}.{body}")
