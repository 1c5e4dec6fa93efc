"""The SES notification normaliser on the documented samples, and its pure neighbours."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from reporting.machine import APPLE_MPP, GOOGLE_PROXY, SCANNER, machine_reason
from reporting.parse import EventType, Unparseable, normalise, parse_body, unwrap
from reporting.stats import normal_cdf, two_proportion_z

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "ses"

# file → (event type, recipients, bounce type, occurred_at)
EXPECTED: dict[str, tuple[EventType, list[str], str | None, str]] = {
    "event_bounce.json": (EventType.BOUNCE, ["recipient@example.com"], "permanent", "2017-08-05T00:41:02.669000+00:00"),
    "event_complaint.json": (EventType.COMPLAINT, ["recipient@example.com"], None, "2017-08-05T00:41:02.669000+00:00"),
    "event_delivery.json": (EventType.DELIVERY, ["recipient@example.com"], None, "2016-10-19T23:21:04.133000+00:00"),
    "event_send.json": (EventType.SEND, ["recipient@example.com"], None, "2016-10-14T05:02:16.645000+00:00"),
    "event_reject.json": (EventType.REJECT, ["sender@example.com"], None, "2016-10-14T17:38:15.211000+00:00"),
    "event_open.json": (EventType.OPEN, ["recipient@example.com"], None, "2017-08-09T22:00:19.652000+00:00"),
    "event_click.json": (EventType.CLICK, ["recipient@example.com"], None, "2017-08-09T23:51:25.570000+00:00"),
    "event_rendering_failure.json": (EventType.RENDERING_FAILURE, ["recipient@example.com"], None,
                                     "2018-01-22T18:43:06.197000+00:00"),
    "event_delivery_delay.json": (EventType.DELIVERY_DELAY, ["recipient@example.com"], None,
                                  "2020-06-16T00:25:40.095000+00:00"),
    "event_subscription.json": (EventType.SUBSCRIPTION, ["recipient@example.com"], None,
                                "2022-01-12T01:00:17.910000+00:00"),
    "notification_bounce_with_dsn.json": (EventType.BOUNCE, ["jane@example.com"], "permanent",
                                          "2016-01-27T14:59:38.237000+00:00"),
    "notification_bounce_without_dsn.json": (EventType.BOUNCE, ["jane@example.com", "richard@example.com"],
                                             "permanent", "2016-01-27T14:59:38.237000+00:00"),
    "notification_complaint_with_feedback.json": (EventType.COMPLAINT, ["richard@example.com"], None,
                                                  "2016-01-27T14:59:38.237000+00:00"),
    "notification_complaint_without_feedback.json": (EventType.COMPLAINT, ["richard@example.com"], None,
                                                     "2016-01-27T14:59:38.237000+00:00"),
    "notification_delivery.json": (EventType.DELIVERY, ["jane@example.com"], None, "2016-01-27T14:59:38.237000+00:00"),
}


def sample(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SAMPLES / name).read_text())
    return data


def sns(record: Any, message_id: str = "sns-1") -> dict[str, Any]:
    return {"Type": "Notification", "MessageId": message_id, "TopicArn": "arn:aws:sns:us-east-1:1:t",
            "Message": record, "Timestamp": "2024-01-01T00:00:00.000Z"}


def test_every_documented_event_type_has_a_sample() -> None:
    """The samples cover all ten event-publishing types and the three identity-feedback types."""
    event_types = {sample(f)["eventType"] for f in EXPECTED if f.startswith("event_")}
    assert event_types == {"Send", "Delivery", "Bounce", "Complaint", "Reject", "Open", "Click",
                           "Rendering Failure", "DeliveryDelay", "Subscription"}
    notification_types = {sample(f)["notificationType"] for f in EXPECTED if f.startswith("notification_")}
    assert notification_types == {"Bounce", "Complaint", "Delivery"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("shape", ["bare", "sns_string", "sns_object"])
def test_each_sample_normalises_in_every_shape(name: str, shape: str) -> None:
    """Every documented sample gives one row per recipient, whichever way it is wrapped."""
    record = sample(name)
    body: Any = {"bare": record, "sns_string": sns(json.dumps(record)), "sns_object": sns(record)}[shape]
    envelope, rows = parse_body(json.dumps(body))
    kind, recipients, bounce_type, occurred = EXPECTED[name]
    assert [r.event_type for r in rows] == [kind] * len(recipients)
    assert [r.recipient for r in rows] == recipients
    assert all(r.bounce_type == bounce_type for r in rows)
    assert rows[0].occurred_at.isoformat() == occurred
    assert rows[0].ses_message_id == record["mail"]["messageId"]
    assert rows[0].raw == record  # the raw JSON is kept whole
    assert envelope.sns_message_id == (None if shape == "bare" else "sns-1")


def test_fields_specific_to_each_type() -> None:
    """Links, user agents, reasons and opt-outs land in their own columns."""
    (click,) = normalise(sample("event_click.json"))
    assert click.link == "http://docs.aws.amazon.com/ses/latest/DeveloperGuide/send-email-smtp.html"
    assert click.ip_address == "192.0.2.1" and click.user_agent and "Chrome" in click.user_agent
    (reject,) = normalise(sample("event_reject.json"))
    assert reject.detail == "Bad content"
    (failure,) = normalise(sample("event_rendering_failure.json"))
    assert failure.detail and "attributeName" in failure.detail
    (subscription,) = normalise(sample("event_subscription.json"))
    assert subscription.unsubscribed
    (complaint,) = normalise(sample("event_complaint.json"))
    assert complaint.feedback_type == "abuse"
    (open_,) = normalise(sample("event_open.json"))
    assert open_.machine_reason is None  # an iPhone's own Mail app, from a documentation address


def test_message_tags_are_read() -> None:
    """Déclic's flow, step, variant and send_id tags come out of mail.tags."""
    record = sample("event_delivery.json")
    record["mail"]["tags"].update({"flow": ["welcome"], "step": ["main"], "variant": ["b"],
                                   "send_id": ["0b6f1d7e-5c4b-4f7e-9a51-2f0a5b8c9d10"]})
    (row,) = normalise(record)
    assert (row.flow, row.step, row.variant, row.send_id) == (
        "welcome", "main", "b", "0b6f1d7e-5c4b-4f7e-9a51-2f0a5b8c9d10")


def test_a_redelivered_notification_has_the_same_key() -> None:
    """Duplicates are recognisable by content: the same notification gives the same event key."""
    first = normalise(sample("event_open.json"), "sns-a")
    second = normalise(sample("event_open.json"), "sns-b")
    assert first[0].event_key == second[0].event_key
    other = sample("event_open.json")
    other["open"]["timestamp"] = "2017-08-09T22:05:00.000Z"  # a second open: a different event
    assert normalise(other)[0].event_key != first[0].event_key


@pytest.mark.parametrize(("body", "reason"), [
    ("not json", "not JSON"),
    ("[1, 2]", "not a JSON object"),
    ('{"hello": "world"}', "neither an SNS envelope nor an SES notification"),
    (json.dumps(sns("Hello world!")), "not JSON"),
    (json.dumps({"Type": "SubscriptionConfirmation", "Message": "x"}), "carries no SES notification"),
    (json.dumps({"eventType": "Teleport", "mail": {"messageId": "m"}}), "unknown SES event type"),
    (json.dumps({"eventType": "Delivery"}), "without a mail object"),
    (json.dumps({"eventType": "Delivery", "mail": {"timestamp": "2024-01-01T00:00:00Z"}}), "without mail.messageId"),
    (json.dumps({"eventType": "Open", "mail": {"messageId": "m", "destination": ["a@b.c"]},
                 "open": {"timestamp": "yesterday"}}), "not an ISO 8601 time"),
    (json.dumps({"eventType": "Send", "mail": {"messageId": "m", "timestamp": "2024-01-01T00:00:00Z"}}),
     "names no recipient"),
])
def test_unparseable_bodies_say_why(body: str, reason: str) -> None:
    """Anything that is not an SES notification raises Unparseable with a reason for the dead letter."""
    with pytest.raises(Unparseable, match=reason):
        parse_body(body)


def test_the_documentation_sns_samples_are_told_apart() -> None:
    """The SNS docs' own envelopes: a text notification and a subscription confirmation, not SES data."""
    with pytest.raises(Unparseable):
        unwrap((SAMPLES / "sns_notification.json").read_text())
    with pytest.raises(Unparseable, match="SubscriptionConfirmation"):
        unwrap((SAMPLES / "sns_subscription_confirmation.json").read_text())


@pytest.mark.parametrize(("agent", "ip", "reason"), [
    ("Mozilla/5.0", "17.58.100.4", APPLE_MPP),
    ("Mozilla/5.0", "104.28.1.2", APPLE_MPP),
    ("Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)", "66.249.84.1",
     GOOGLE_PROXY),
    ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120 Safari/537.36", "66.102.8.1", GOOGLE_PROXY),
    ("python-requests/2.31", "203.0.113.9", SCANNER),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148", "198.51.100.7",
     None),
    (None, None, None),
])
def test_machine_opens_are_recognised(agent: str | None, ip: str | None, reason: str | None) -> None:
    """Privacy proxies and scanners are flagged by user agent and address; people are not."""
    assert machine_reason(agent, ip) == reason


def test_two_proportion_z_test_against_hand_computed_values() -> None:
    """45/100 vs 30/100: pooled p = 0.375, z = 0.15 / sqrt(0.375·0.625·0.02) ≈ 2.1909, p ≈ 0.02846."""
    test = two_proportion_z(45, 100, 30, 100)
    assert test.z == pytest.approx(2.19089, abs=1e-4)
    assert test.p_value == pytest.approx(0.028459, abs=1e-5)
    assert test.significant()
    assert not two_proportion_z(31, 100, 30, 100).significant()
    assert normal_cdf(0) == 0.5 and normal_cdf(1.959964) == pytest.approx(0.975, abs=1e-6)
    assert math.isclose(two_proportion_z(0, 10, 0, 10).p_value, 1.0)
