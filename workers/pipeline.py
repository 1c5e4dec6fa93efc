"""The two stages the tasks call: ingest an event, deliver a send.

Each returns an outcome value — skips are values, not exceptions — and logs one line for
its unit of work. The stages take their collaborators as arguments, so unit tests pass an
in-memory sender and a real Postgres store, and the tasks pass the process's own.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import redis
import structlog

from declic.logs import recipient_hash
from events.envelope import EventInvalid, parse_event
from flows.conditions import ConditionError, evaluate
from flows.consent import consent_skip
from flows.loader import Catalogue
from flows.model import Category
from flows.planning import EventPlan
from flows.schedules import quiet_until
from workers.attachments import ObjectStore, collect_attachments
from workers.errors import (
    AmbiguousSendError,
    AttachmentError,
    PermanentSendError,
    ThrottledError,
    TransientSendError,
)
from workers.governor import Governor, RateWaitTooLong
from workers.payload import OutgoingEmail, build_send_request
from workers.rendering import Renderer, RenderError, build_context
from workers.ses import Sender
from workers.store import IngestResult, Row, Store
from workers.unsubscribe import UnsubscribeLinks

log = structlog.get_logger("declic")


@dataclass(frozen=True)
class Sent:
    ses_message_id: str
    label: str = "sent"


@dataclass(frozen=True)
class Skipped:
    reason: str
    label: str = "skipped"


@dataclass(frozen=True)
class Failed:
    reason: str
    label: str = "failed"


@dataclass(frozen=True)
class Retry:
    reason: str
    delay_s: float
    ambiguous: bool = False  # SES may have accepted it: look for its Send notification first
    label: str = "retry"


@dataclass(frozen=True)
class Deferred:
    """Held back until ``until`` (quiet hours); the dispatcher sends it then."""

    until: datetime
    label: str = "deferred"


@dataclass(frozen=True)
class NotClaimed:
    """Already sent, skipped, failed or being sent by someone else: nothing to do."""

    label: str = "not_claimed"


Outcome = Sent | Skipped | Failed | Retry | Deferred | NotClaimed


@dataclass(frozen=True)
class Deps:
    """What the delivery stage works with; one per worker process."""

    store: Store
    catalogue: Catalogue
    renderer: Renderer
    sender: Sender
    objects: ObjectStore
    configuration_set: str | None
    links: UnsubscribeLinks
    governor: Governor | None = None
    default_timezone: str = "UTC"
    max_attempts: int = 8
    delay_scale: float = 1.0
    ambiguous_wait_s: float = 300.0
    inline_sends: bool = True


def event_ref(raw: Any) -> str | None:
    """The id a message claims to carry, before (or without) validating it."""
    ref = raw.get("id") if isinstance(raw, dict) else None
    return ref if isinstance(ref, str) else None


def keep_as_dead_letter(store: Store, raw: Any, reason: str) -> None:
    """Keep an event that was not ingested, as received, with the reason, for a replay."""
    ref = event_ref(raw)
    store.dead_letter_event(ref[:255] if ref else None, reason,
                            raw if isinstance(raw, dict) else {"raw": repr(raw)[:10_000]})


def ingest_event(
    store: Store, catalogue: Catalogue, raw: Any, now: datetime | None = None, *, delay_scale: float = 1.0,
    claim_queues: frozenset[str] = frozenset(),
) -> IngestResult | None:
    """Validate, dedupe, upsert the contact and record sends; None for a dead-lettered event.

    Sends due now on ``claim_queues`` come back claimed, for :func:`deliver_claimed`.
    """
    try:
        event = parse_event(raw if isinstance(raw, dict | str | bytes) else repr(raw))
    except EventInvalid as exc:
        keep_as_dead_letter(store, raw, f"invalid_event: {exc}")
        log.warning("event_refused", event_id=event_ref(raw), reason="invalid_event", errors=exc.errors[:10])
        return None
    moment = now or datetime.now(UTC)
    result = store.ingest(event, EventPlan(catalogue, event, moment, delay_scale), claim_queues=claim_queues)
    log.info(
        "event_ingested", event_id=event.id, event_type=event.type, duplicate=result.duplicate,
        sends=result.planned, due_now=len(result.to_enqueue) + len(result.claimed), cancelled=result.cancelled,
    )
    return result


def backoff_s(attempt: int, *, base: float = 2.0, cap: float = 120.0) -> float:
    """Exponential backoff with full jitter: a fleet of retries does not stampede SES."""
    return random.uniform(base / 2, min(cap, base * 2 ** max(0, attempt - 1)))  # noqa: S311


def template_context(row: Mapping[str, Any]) -> dict[str, Any]:
    """What templates and step conditions see of a claimed send."""
    contact = {
        "id": row["contact_id"],
        "email": row["email"],
        "locale": row["contact_locale"],
        "timezone": row["timezone"],
        "attributes": row["attributes"],
        "opt_in": row["opt_in"],
        "purchases": row["purchases"],
        "total_spent": str(row["total_spent"]),
    }
    return build_context(row["event"], contact, str(row["id"]))


def deliver(send_id: str, deps: Deps) -> Outcome:
    """Claim a send and take it to SES, or record why not."""
    row = deps.store.claim(send_id)
    if row is None:
        left = deps.store.lease_left(send_id)
        if left is not None:
            # Another worker holds the claim — or held it and died. Look again when the lease
            # ends, so a dead worker's send is taken over rather than forgotten.
            log.info("send_in_flight", send_id=send_id, lease_left_s=round(left, 1))
            return Retry("in_flight", left + 1.0)
        log.info("send_not_claimed", send_id=send_id)
        return NotClaimed()
    return deliver_claimed(row, deps)


def deliver_claimed(row: Row, deps: Deps) -> Outcome:
    """Take a send this worker has claimed to SES, or record why not."""
    send_id = str(row["id"])
    bound = log.bind(
        send_id=send_id, event_id=row["event_id"], flow=row["flow"], step=row["step"],
        attempt=row["attempts"], recipient=recipient_hash(row["email"]),
    )
    outcome = _deliver_claimed(row, deps)
    if isinstance(outcome, Sent):
        bound.info("email_sent", ses_message_id=outcome.ses_message_id)
    elif isinstance(outcome, Skipped):
        deps.store.mark_skipped(send_id, outcome.reason)
        bound.info("send_skipped", reason=outcome.reason)
    elif isinstance(outcome, Failed):
        deps.store.mark_failed(send_id, row["flow"], outcome.reason)
        bound.warning("send_failed", reason=outcome.reason)
    elif isinstance(outcome, Retry):
        deps.store.mark_retry(send_id, outcome.reason, ambiguous=outcome.ambiguous)
        bound.warning("send_retrying", reason=outcome.reason, delay_s=round(outcome.delay_s, 2))
    elif isinstance(outcome, Deferred):
        deps.store.defer(send_id, outcome.until, "quiet_hours")
        bound.info("send_deferred", reason="quiet_hours", until=outcome.until.isoformat())
    return outcome


def _deliver_claimed(row: Row, deps: Deps) -> Outcome:
    flow = deps.catalogue.flows.get(row["flow"])
    if flow is None:
        return Failed(f"unknown_flow: {row['flow']!r} is not in the catalogue")
    step = flow.step(row["step"])
    skip = consent_skip(row["category"], row)
    if skip:
        return Skipped(skip)
    marketing = row["category"] == Category.MARKETING
    if marketing and flow.quiet_hours is not None:
        zone = ZoneInfo(row["timezone"] or deps.default_timezone)
        until = quiet_until(flow.quiet_hours, datetime.now(UTC), zone)
        if until is not None:
            return Deferred(until)
    context = template_context(row)
    headers: dict[str, str] = {}
    if marketing:
        unsubscribe_url = deps.links.url(row["contact_id"], flow.name)
        context["links"] = {"unsubscribe": unsubscribe_url}
        headers = deps.links.headers(unsubscribe_url)
    try:
        if not evaluate(step.condition, context):
            return Skipped("condition")
    except ConditionError as exc:
        return Failed(f"condition_error: {exc}")
    try:
        email = deps.renderer.render(
            flow, step, locale=row["contact_locale"], variant=row["variant"], context=context
        )
        attachments = collect_attachments(flow, context["data"], deps.objects)
        request = build_send_request(
            OutgoingEmail(
                sender_email=flow.sender.email,
                sender_name=flow.sender.name,
                to=row["email"],
                reply_to=flow.reply_to,
                subject=email.subject,
                html=email.html,
                text=email.text,
                tags={"flow": flow.name, "step": step.name, "variant": row["variant"], "send_id": str(row["id"])},
                configuration_set=deps.configuration_set,
                headers=headers,
                attachments=attachments,
            )
        )
        if row["ambiguous_age_s"] is not None:
            # The last attempt may have reached SES: never send again before looking.
            resolved = _resolve_ambiguous(row, deps)
            if isinstance(resolved, str):
                deps.store.mark_sent(str(row["id"]), resolved, email.subject, email.locale)
                return Sent(resolved)
            if resolved is not None:
                return resolved
        if deps.governor is not None:
            deps.governor.acquire(1, critical=row["category"] == Category.CRITICAL)
        message_id = deps.sender.send(request)
    except RateWaitTooLong as exc:
        return Retry(f"rate: {exc}", backoff_s(1, base=1.0, cap=5.0))
    except redis.RedisError as exc:  # the rate governor is unreachable: nothing was sent
        return Retry(f"rate_governor_unavailable: {exc.__class__.__name__}", backoff_s(2, base=1.0, cap=10.0))
    except ThrottledError as exc:
        if deps.governor is not None:
            deps.governor.throttled()
        return _retry_or_fail(row, f"ses_throttled: {exc}", deps)
    except RenderError as exc:
        return Failed(f"render_error: {exc}")
    except AttachmentError as exc:
        if exc.transient:
            return _retry_or_fail(row, f"attachment: {exc}", deps)
        return Failed(f"attachment_error: {exc}")
    except PermanentSendError as exc:
        return Failed(f"ses_rejected: {exc}")
    except AmbiguousSendError as exc:
        return Retry(f"ses_ambiguous: {exc}", deps.ambiguous_wait_s, ambiguous=True)
    except TransientSendError as exc:
        return _retry_or_fail(row, f"ses_transient: {exc}", deps)
    except ValueError as exc:  # a header or tag refused by the request builder
        return Failed(f"invalid_message: {exc}")
    deps.store.mark_sent(str(row["id"]), message_id, email.subject, email.locale)
    return Sent(message_id)


def _resolve_ambiguous(row: Row, deps: Deps) -> str | Retry | None:
    """After an ambiguous attempt: SES's message id if it accepted, a Retry while its Send
    notification may still be on the way, None once it is safe to send (SES did not accept)."""
    message_id = deps.store.ses_accepted(str(row["id"]))
    if message_id is not None:
        return message_id
    left = deps.ambiguous_wait_s - float(row["ambiguous_age_s"])
    if left > 0:
        return Retry("ses_ambiguous: waiting for the SES Send notification", left + 0.5, ambiguous=True)
    return None


def _retry_or_fail(row: Row, reason: str, deps: Deps) -> Outcome:
    if row["attempts"] >= deps.max_attempts:
        return Failed(f"gave_up after {row['attempts']} attempts: {reason}")
    return Retry(reason, backoff_s(row["attempts"]))
