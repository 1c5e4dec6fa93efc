"""The SES notification normaliser: one plain dict in, a list of plain rows out. No I/O.

Every shape SES delivers ends up as :class:`EmailEvent` rows, one per notification and
recipient, with the SES record kept whole beside the normalised fields:

- the event-publishing shape (``eventType``: Send, Delivery, Bounce, Complaint, Reject, Open,
  Click, ``Rendering Failure`` — with a space —, DeliveryDelay, Subscription), published through
  a configuration set, with our message tags;
  https://docs.aws.amazon.com/ses/latest/dg/event-publishing-retrieving-sns-contents.html
- the older identity feedback shape (``notificationType``: Bounce, Complaint, Delivery), which
  carries no tags and joins to its send by message id only;
  https://docs.aws.amazon.com/ses/latest/dg/notification-contents.html
- either of them inside an SNS envelope whose ``Message`` is a JSON string (what SNS sends) or
  an object (what some relays and test tools send), or bare (SNS "raw message delivery").

Anything else raises :class:`Unparseable` with a reason meant for the dead-letter table.
SES may add fields at any time ("your code should be flexible enough to handle unknown
fields"), so unknown fields are ignored, never refused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from reporting.machine import machine_reason


class Unparseable(ValueError):
    """A body that is not an SES notification we understand; the message is the reason."""


class EventType(StrEnum):
    """What happened to one message for one recipient (``reporting.email_events.event_type``)."""

    SEND = "send"  # SES accepted the request and will try to deliver
    DELIVERY = "delivery"  # the recipient's mail server accepted the message
    BOUNCE = "bounce"  # refused: permanent (hard) or transient (soft, after SES gave up)
    COMPLAINT = "complaint"  # the recipient marked it as spam (feedback loop)
    REJECT = "reject"  # SES refused to send it (a virus was found)
    OPEN = "open"  # the tracking pixel was fetched — by a person or a proxy
    CLICK = "click"  # a tracked link was followed
    RENDERING_FAILURE = "rendering_failure"  # an SES template failed to render
    DELIVERY_DELAY = "delivery_delay"  # a temporary failure; SES keeps trying
    SUBSCRIPTION = "subscription"  # the recipient changed list preferences (SES list management)


_SES_NAMES: dict[str, EventType] = {
    "Send": EventType.SEND,
    "Delivery": EventType.DELIVERY,
    "Bounce": EventType.BOUNCE,
    "Complaint": EventType.COMPLAINT,
    "Reject": EventType.REJECT,
    "Open": EventType.OPEN,
    "Click": EventType.CLICK,
    "Rendering Failure": EventType.RENDERING_FAILURE,  # the documented spelling
    "RenderingFailure": EventType.RENDERING_FAILURE,  # as the v2 API's enum spells it
    "DeliveryDelay": EventType.DELIVERY_DELAY,
    "Subscription": EventType.SUBSCRIPTION,
}

# The key of each type's detail object in the record.
_DETAIL_KEY: dict[EventType, str] = {
    EventType.SEND: "send",
    EventType.DELIVERY: "delivery",
    EventType.BOUNCE: "bounce",
    EventType.COMPLAINT: "complaint",
    EventType.REJECT: "reject",
    EventType.OPEN: "open",
    EventType.CLICK: "click",
    EventType.RENDERING_FAILURE: "failure",
    EventType.DELIVERY_DELAY: "deliveryDelay",
    EventType.SUBSCRIPTION: "subscription",
}

BOUNCE_TYPES = {"Permanent": "permanent", "Transient": "transient", "Undetermined": "undetermined"}


@dataclass(frozen=True)
class Envelope:
    """What came in: the SES record and, when SNS wrapped it, the SNS message id and topic."""

    record: dict[str, Any]
    sns_message_id: str | None = None
    topic_arn: str | None = None


@dataclass(frozen=True)
class EmailEvent:
    """One row of ``reporting.email_events`` before it is joined to its send."""

    event_key: str
    event_type: EventType
    occurred_at: datetime
    sent_at: datetime | None
    ses_message_id: str
    recipient: str
    send_id: str | None
    flow: str | None
    step: str | None
    variant: str | None
    subject: str | None
    bounce_type: str | None
    bounce_subtype: str | None
    feedback_type: str | None
    link: str | None
    user_agent: str | None
    ip_address: str | None
    machine_reason: str | None
    unsubscribed: bool
    detail: str | None
    sns_message_id: str | None
    raw: Mapping[str, Any]


def _load(body: str | bytes | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(body, Mapping):
        return dict(body)
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Unparseable(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise Unparseable(f"not a JSON object but {type(value).__name__}")
    return value


def unwrap(body: str | bytes | Mapping[str, Any]) -> Envelope:
    """The SES record inside an SQS body or an HTTPS POST: SNS envelope or raw delivery."""
    outer = _load(body)
    if "eventType" in outer or "notificationType" in outer:
        return Envelope(outer)  # SNS raw message delivery: no envelope at all
    if "Type" not in outer:
        raise Unparseable("neither an SNS envelope nor an SES notification (no Type, eventType or notificationType)")
    if outer["Type"] != "Notification":
        raise Unparseable(f"SNS message of type {outer['Type']!r} carries no SES notification")
    message = outer.get("Message")
    if isinstance(message, str):
        record = _load(message)
    elif isinstance(message, Mapping):
        record = dict(message)
    else:
        raise Unparseable("SNS envelope without a Message")
    message_id = outer.get("MessageId")
    topic = outer.get("TopicArn")
    return Envelope(record, message_id if isinstance(message_id, str) else None,
                    topic if isinstance(topic, str) else None)


def _timestamp(value: Any, where: str) -> datetime:
    if not isinstance(value, str):
        raise Unparseable(f"{where} is missing")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise Unparseable(f"{where} is not an ISO 8601 time: {value[:40]!r}") from None
    if parsed.tzinfo is None:
        raise Unparseable(f"{where} has no time zone: {value[:40]!r}")
    return parsed


def _first_tag(tags: Mapping[str, Any], name: str) -> str | None:
    values = tags.get(name)
    if isinstance(values, list) and values and isinstance(values[0], str):
        return values[0]
    return values if isinstance(values, str) else None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _recipients(kind: EventType, detail: Mapping[str, Any], mail: Mapping[str, Any]) -> list[tuple[str, str | None]]:
    """(address, per-recipient diagnostic) pairs: the detail's own list when it has one."""
    listed: Any
    if kind is EventType.BOUNCE:
        listed = detail.get("bouncedRecipients")
    elif kind is EventType.COMPLAINT:
        listed = detail.get("complainedRecipients")
    elif kind is EventType.DELIVERY_DELAY:
        listed = detail.get("delayedRecipients")
    elif kind is EventType.DELIVERY:
        listed = [{"emailAddress": r} for r in detail.get("recipients") or [] if isinstance(r, str)]
    else:
        listed = None
    if not listed:
        # Send, reject, open, click, rendering failure and subscription name no recipient of
        # their own: they concern the message, sent by Déclic to one address at a time.
        listed = [{"emailAddress": r} for r in mail.get("destination") or [] if isinstance(r, str)]
    pairs = []
    for item in listed:
        if isinstance(item, Mapping) and isinstance(item.get("emailAddress"), str):
            pairs.append((item["emailAddress"].strip().lower(), _str(item.get("diagnosticCode"))))
    if not pairs:
        raise Unparseable(f"{kind.value} notification names no recipient")
    return pairs


def _unsubscribed(detail: Mapping[str, Any]) -> bool:
    prefs = detail.get("newTopicPreferences")
    if not isinstance(prefs, Mapping):
        return False
    if prefs.get("unsubscribeAll") is True:
        return True
    statuses = prefs.get("topicSubscriptionStatus") or []
    return any(isinstance(s, Mapping) and s.get("subscriptionStatus") == "OptOut" for s in statuses)


def _detail_text(kind: EventType, detail: Mapping[str, Any]) -> str | None:
    """A short human-readable reason, for the event types that have one."""
    if kind is EventType.REJECT:
        return _str(detail.get("reason"))
    if kind is EventType.RENDERING_FAILURE:
        return _str(detail.get("errorMessage"))
    if kind is EventType.DELIVERY_DELAY:
        return _str(detail.get("delayType"))
    if kind is EventType.DELIVERY:
        return _str(detail.get("smtpResponse"))
    return None


def event_key(ses_message_id: str, kind: str, recipient: str, occurred_at: datetime, extra: str) -> str:
    """The natural identity of one row: the same notification delivered twice has the same key."""
    text = "|".join((ses_message_id, kind, recipient, occurred_at.isoformat(), extra))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def normalise(record: Mapping[str, Any], sns_message_id: str | None = None) -> list[EmailEvent]:
    """The rows of one SES record, one per recipient; raise :class:`Unparseable` if it is not one."""
    name = record.get("eventType", record.get("notificationType"))
    if not isinstance(name, str):
        raise Unparseable("no eventType or notificationType")
    kind = _SES_NAMES.get(name)
    if kind is None:
        raise Unparseable(f"unknown SES event type {name!r}")
    mail = record.get("mail")
    if not isinstance(mail, Mapping):
        raise Unparseable(f"{name} notification without a mail object")
    message_id = _str(mail.get("messageId"))
    if message_id is None:
        raise Unparseable(f"{name} notification without mail.messageId")
    detail = record.get(_DETAIL_KEY[kind]) or {}
    if not isinstance(detail, Mapping):
        raise Unparseable(f"{name} notification whose {_DETAIL_KEY[kind]!r} is not an object")
    sent_at = _timestamp(mail["timestamp"], "mail.timestamp") if "timestamp" in mail else None
    if "timestamp" in detail:
        occurred_at = _timestamp(detail["timestamp"], f"{_DETAIL_KEY[kind]}.timestamp")
    elif sent_at is not None:
        occurred_at = sent_at  # send, reject and rendering failure happen when the mail does
    else:
        raise Unparseable(f"{name} notification has no timestamp")
    tags = _mapping(mail.get("tags"))
    common = _mapping(mail.get("commonHeaders"))
    user_agent = _str(detail.get("userAgent")) if kind in (EventType.OPEN, EventType.CLICK) else None
    ip_address = _str(detail.get("ipAddress"))
    link = _str(detail.get("link")) if kind is EventType.CLICK else None
    feedback_id = _str(detail.get("feedbackId")) or ""
    rows = []
    for recipient, diagnostic in _recipients(kind, detail, mail):
        rows.append(EmailEvent(
            event_key=event_key(message_id, kind.value, recipient, occurred_at, link or feedback_id),
            event_type=kind,
            occurred_at=occurred_at,
            sent_at=sent_at,
            ses_message_id=message_id,
            recipient=recipient,
            send_id=_first_tag(tags, "send_id"),
            flow=_first_tag(tags, "flow"),
            step=_first_tag(tags, "step"),
            variant=_first_tag(tags, "variant"),
            subject=_str(common.get("subject")),
            bounce_type=BOUNCE_TYPES.get(str(detail.get("bounceType"))) if kind is EventType.BOUNCE else None,
            bounce_subtype=_str(detail.get("bounceSubType")) if kind is EventType.BOUNCE else None,
            feedback_type=_str(detail.get("complaintFeedbackType")) if kind is EventType.COMPLAINT else None,
            link=link,
            user_agent=user_agent,
            ip_address=ip_address,
            machine_reason=machine_reason(user_agent, ip_address) if kind is EventType.OPEN else None,
            unsubscribed=kind is EventType.SUBSCRIPTION and _unsubscribed(detail),
            detail=diagnostic or _detail_text(kind, detail),
            sns_message_id=sns_message_id,
            raw=record,
        ))
    return rows


def parse_body(body: str | bytes | Mapping[str, Any]) -> tuple[Envelope, list[EmailEvent]]:
    """Unwrap and normalise one SQS body or HTTPS POST in a single call."""
    envelope = unwrap(body)
    return envelope, normalise(envelope.record, envelope.sns_message_id)
