"""An engagement simulator: realistic SES notifications for messages really sent, into SQS.

For the demo and the benchmarks. Given the SendEmail requests the SES stand-in received
(:meth:`declic.services.MotoStandIn.send_requests`, each with its ``MessageId`` and
``EmailTags``), it plays what SES and the recipients would do — a Send event, then a delivery
within seconds (or a bounce, now and then a delay first), Apple MPP prefetches seconds after
delivery, human opens minutes to hours later, clicks on the email's own links after an open, a
rare complaint or unsubscribe — and publishes each as SES's event-publishing record wrapped in
an SNS ``Notification`` envelope, exactly as SNS delivers to a subscribed SQS queue. Order is
shuffled and a few envelopes are sent twice, because SNS and SQS do that too.

Deterministic for a given ``seed``. The envelopes' signatures are placeholders: the SQS path
does not verify them (see :mod:`reporting.sqs`).
"""

from __future__ import annotations

import base64
import json
import random
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from typing import Any

ACCOUNT = "123456789012"
REGION = "us-east-1"
TOPIC_ARN = f"arn:aws:sns:{REGION}:{ACCOUNT}:declic-ses-events"
_HREF = re.compile(r'href="(https?://[^"]+)"')
_HUMAN_AGENTS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko)",
)


@dataclass(frozen=True)
class SentMessage:
    """What the simulator needs of one sent email."""

    message_id: str
    sender: str
    to: str
    subject: str
    tags: Mapping[str, str]
    sent_at: datetime
    links: tuple[str, ...] = ()


@dataclass(frozen=True)
class Behaviour:
    """Probabilities per delivered message; ``open_by_flow`` overrides ``human_open``."""

    bounce: float = 0.02
    hard_share: float = 0.75
    reject: float = 0.002
    delay: float = 0.01
    complaint: float = 0.0004  # healthy lists stay well under AWS's 0.1% review level
    mpp: float = 0.35  # share of recipients behind Apple Mail Privacy Protection
    human_open: float = 0.45
    click_after_open: float = 0.25
    unsubscribe: float = 0.005
    duplicate: float = 0.02
    open_by_flow: Mapping[str, float] = field(default_factory=dict)


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def from_send_requests(requests: Iterable[Mapping[str, Any]], sent_at: datetime | None = None) -> list[SentMessage]:
    """Messages from the SES stand-in's recorded SendEmail requests (those SES accepted)."""
    at = sent_at or datetime.now(UTC)
    messages = []
    for request in requests:
        if not request.get("MessageId"):
            continue
        content = request.get("Content", {})
        subject, html = "", ""
        if "Simple" in content:
            subject = content["Simple"]["Subject"]["Data"]
            html = content["Simple"]["Body"].get("Html", {}).get("Data", "")
        elif "Raw" in content:
            raw = content["Raw"]["Data"]
            parsed = message_from_bytes(base64.b64decode(raw) if isinstance(raw, str) else bytes(raw),
                                        policy=policy.default)
            subject = str(parsed.get("Subject", ""))
            part = parsed.get_body(("html",))
            html = part.get_content() if part is not None else ""
        messages.append(SentMessage(
            message_id=request["MessageId"], sender=request.get("FromEmailAddress", ""),
            to=request["Destination"]["ToAddresses"][0], subject=subject,
            tags={t["Name"]: t["Value"] for t in request.get("EmailTags", [])}, sent_at=at,
            links=tuple(dict.fromkeys(_HREF.findall(html))),
        ))
    return messages


def _mail(m: SentMessage) -> dict[str, Any]:
    """SES's ``mail`` object for an event-publishing record of this message."""
    domain = m.sender.rpartition("@")[2].rstrip(">") or "example.com"
    tags: dict[str, list[str]] = {
        "ses:operation": ["SendEmail"], "ses:configuration-set": ["declic"],
        "ses:source-ip": ["192.0.2.10"], "ses:from-domain": [domain], "ses:caller-identity": ["declic"],
    }
    tags.update({k: [v] for k, v in m.tags.items()})
    headers = [{"name": "From", "value": m.sender}, {"name": "To", "value": m.to},
               {"name": "Subject", "value": m.subject}, {"name": "MIME-Version", "value": "1.0"},
               {"name": "Content-Type", "value": 'multipart/alternative; boundary="----=_Part_0"'}]
    return {
        "timestamp": _iso(m.sent_at), "source": m.sender,
        "sourceArn": f"arn:aws:ses:{REGION}:{ACCOUNT}:identity/{domain}", "sendingAccountId": ACCOUNT,
        "messageId": m.message_id, "destination": [m.to], "headersTruncated": False, "headers": headers,
        "commonHeaders": {"from": [m.sender], "to": [m.to], "messageId": m.message_id, "subject": m.subject},
        "tags": tags,
    }


def play(m: SentMessage, rng: random.Random, behaviour: Behaviour) -> list[dict[str, Any]]:
    """Every SES event record this message produces, in the order they happened."""
    mail = _mail(m)
    t = m.sent_at
    records: list[dict[str, Any]] = [{"eventType": "Send", "mail": mail, "send": {}}]
    if rng.random() < behaviour.reject:
        return [{"eventType": "Reject", "mail": mail, "reject": {"reason": "Bad content"}}]
    if rng.random() < behaviour.delay:
        t += timedelta(minutes=rng.uniform(5, 40))
        records.append({"eventType": "DeliveryDelay", "mail": mail, "deliveryDelay": {
            "timestamp": _iso(t), "delayType": "MailboxFull", "expirationTime": _iso(t + timedelta(hours=12)),
            "delayedRecipients": [{"emailAddress": m.to, "status": "4.2.2",
                                   "diagnosticCode": "smtp; 452 4.2.2 Mailbox full"}],
        }})
    if rng.random() < behaviour.bounce:
        hard = rng.random() < behaviour.hard_share
        t += timedelta(seconds=rng.uniform(1, 8))
        records.append({"eventType": "Bounce", "mail": mail, "bounce": {
            "bounceType": "Permanent" if hard else "Transient",
            "bounceSubType": "General" if hard else "MailboxFull",
            "bouncedRecipients": [{"emailAddress": m.to, "action": "failed",
                                   "status": "5.1.1" if hard else "4.2.2",
                                   "diagnosticCode": "smtp; 550 5.1.1 user unknown" if hard
                                   else "smtp; 452 4.2.2 full"}],
            "timestamp": _iso(t), "feedbackId": f"{uuid.UUID(int=rng.getrandbits(128))}-000000",
            "reportingMTA": "dsn; a8-70.smtp-out.amazonses.com",
        }})
        return records
    delivered = t + timedelta(milliseconds=rng.randint(300, 4000))
    records.append({"eventType": "Delivery", "mail": mail, "delivery": {
        "timestamp": _iso(delivered), "processingTimeMillis": int((delivered - m.sent_at).total_seconds() * 1000),
        "recipients": [m.to], "smtpResponse": "250 2.6.0 Message received",
        "reportingMTA": "a8-70.smtp-out.amazonses.com",
    }})
    if rng.random() < behaviour.mpp:
        at = delivered + timedelta(seconds=rng.uniform(0.5, 3))
        records.append(_open(mail, at, "Mozilla/5.0", f"17.58.{rng.randint(0, 255)}.{rng.randint(1, 254)}"))
    p_open = behaviour.open_by_flow.get(m.tags.get("flow", ""), behaviour.human_open)
    opened_at = None
    if rng.random() < p_open:
        opened_at = delivered + timedelta(seconds=min(rng.expovariate(1 / 3600), 3 * 86400) + 30)
        agent = rng.choice(_HUMAN_AGENTS)
        ip = f"198.51.100.{rng.randint(1, 254)}"
        records.append(_open(mail, opened_at, agent, ip))
        if rng.random() < 0.3:  # opened again later
            records.append(_open(mail, opened_at + timedelta(hours=rng.uniform(1, 20)), agent, ip))
        links = [link for link in m.links if "unsubscribe" not in link]
        if links and rng.random() < behaviour.click_after_open:
            clicked = opened_at + timedelta(seconds=rng.uniform(5, 300))
            records.append({"eventType": "Click", "mail": mail, "click": {
                "ipAddress": ip, "link": rng.choice(links), "linkTags": {}, "timestamp": _iso(clicked),
                "userAgent": agent,
            }})
    if rng.random() < behaviour.complaint:
        records.append({"eventType": "Complaint", "mail": mail, "complaint": {
            "complainedRecipients": [{"emailAddress": m.to}],
            "timestamp": _iso(delivered + timedelta(hours=rng.uniform(1, 30))),
            "feedbackId": f"{uuid.UUID(int=rng.getrandbits(128))}-000000", "userAgent": "Yahoo!-Mail-Feedback/2.0",
            "complaintFeedbackType": "abuse", "arrivalDate": _iso(delivered + timedelta(hours=1)),
        }})
    elif opened_at and rng.random() < behaviour.unsubscribe:
        records.append({"eventType": "Subscription", "mail": mail, "subscription": {
            "contactList": "declic", "timestamp": _iso(opened_at + timedelta(seconds=40)),
            "source": "UnsubscribeHeader",
            "newTopicPreferences": {"unsubscribeAll": True}, "oldTopicPreferences": {"unsubscribeAll": False},
        }})
    return records


def _open(mail: dict[str, Any], at: datetime, agent: str, ip: str) -> dict[str, Any]:
    return {"eventType": "Open", "mail": mail, "open": {"ipAddress": ip, "timestamp": _iso(at), "userAgent": agent}}


def envelope(record: Mapping[str, Any], rng: random.Random, now: datetime | None = None) -> dict[str, Any]:
    """The SNS ``Notification`` envelope SNS puts in the SQS body (``Message`` is a string)."""
    message_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    return {
        "Type": "Notification", "MessageId": message_id, "TopicArn": TOPIC_ARN,
        "Message": json.dumps(record, separators=(",", ":")), "Timestamp": _iso(now or datetime.now(UTC)),
        "SignatureVersion": "1", "Signature": base64.b64encode(b"simulated; not verified on the SQS path").decode(),
        "SigningCertURL": f"https://sns.{REGION}.amazonaws.com/SimpleNotificationService-simulated.pem",
        "UnsubscribeURL": f"https://sns.{REGION}.amazonaws.com/?Action=Unsubscribe&SubscriptionArn={TOPIC_ARN}:sim",
    }


def notifications(messages: Sequence[SentMessage], *, seed: int = 7, behaviour: Behaviour | None = None) -> list[str]:
    """SQS bodies for these messages: shuffled, with a few duplicates, as SNS delivers them."""
    rng = random.Random(seed)  # noqa: S311 - a simulation, not cryptography
    chosen = behaviour or Behaviour()
    bodies = [json.dumps(envelope(r, rng)) for m in messages for r in play(m, rng, chosen)]
    bodies += [b for b in bodies if rng.random() < chosen.duplicate]
    rng.shuffle(bodies)
    return bodies


def publish(sqs: Any, queue_url: str, bodies: Sequence[str]) -> int:
    """Send the bodies to the queue in batches of ten; the number sent."""
    sent = 0
    for start in range(0, len(bodies), 10):
        chunk = bodies[start:start + 10]
        response = sqs.send_message_batch(
            QueueUrl=queue_url, Entries=[{"Id": str(i), "MessageBody": b} for i, b in enumerate(chunk)])
        sent += len(response.get("Successful", []))
    return sent


def history(flows: Mapping[str, Sequence[str]], *, days: int, per_day: int, end: datetime,
            seed: int = 11) -> list[SentMessage]:
    """Synthetic sent messages over ``days`` days up to ``end``, for benchmarks and a demo history.

    ``flows`` maps a flow name to its variant names; addresses are ``.invalid`` (RFC 2606).
    """
    rng = random.Random(seed)  # noqa: S311
    names = sorted(flows)
    out = []
    for d in range(days, 0, -1):
        day = end - timedelta(days=d)
        for _ in range(per_day):
            flow = rng.choice(names)
            variant = rng.choice(list(flows[flow]))
            n = rng.getrandbits(64)
            out.append(SentMessage(
                message_id=f"{n:016x}-sim-{uuid.UUID(int=rng.getrandbits(128))}-000000",
                sender="Maison Lumière <orders@shop.example.com>", to=f"customer{n % 50000}@example.invalid",
                subject=f"{flow.replace('_', ' ').capitalize()} ({variant})",
                tags={"flow": flow, "step": "main", "variant": variant, "send_id": str(uuid.UUID(int=n, version=4))},
                sent_at=day + timedelta(seconds=rng.uniform(0, 86400)),
                links=("https://shop.example.com/account", "https://shop.example.com/unsubscribe?t=x"),
            ))
    return out
