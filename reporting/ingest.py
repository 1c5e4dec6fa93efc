"""Ingesting a batch of SES notification bodies: parse each, then write all in one transaction.

Used by both intakes — the SQS drain (:mod:`reporting.sqs`) and the HTTPS endpoint
(:mod:`reporting.sns_http`) — so both dedupe, join, suppress and dead-letter alike. One
structured log line per batch; addresses never appear in it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from psycopg import Connection
from psycopg_pool import ConnectionPool

from reporting.parse import EmailEvent, Unparseable, parse_body
from reporting.store import DeadLetter, claim_sns_ids, write_dead_letters, write_events

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Received:
    """One body as it arrived, and a reference to name it by (SQS or SNS message id)."""

    body: str
    ref: str | None = None


@dataclass
class Parsed:
    """A batch after parsing, before any I/O."""

    events_by_sns_id: dict[str, list[EmailEvent]] = field(default_factory=dict)
    unenveloped: list[EmailEvent] = field(default_factory=list)  # raw delivery: no SNS id
    dead: list[DeadLetter] = field(default_factory=list)


@dataclass(frozen=True)
class IngestResult:
    received: int
    stored: int
    duplicates: int
    dead_letters: int
    suppressed: int
    unsubscribed: int


def parse_batch(items: Sequence[Received]) -> Parsed:
    """Parse every body; pure. Unparseable ones become dead letters with their reason."""
    parsed = Parsed()
    for item in items:
        try:
            envelope, events = parse_body(item.body)
        except Unparseable as exc:
            parsed.dead.append(DeadLetter(item.ref, str(exc), item.body))
            continue
        if envelope.sns_message_id:
            # The same SNS message twice in one batch (SQS at-least-once) counts once.
            parsed.events_by_sns_id.setdefault(envelope.sns_message_id, events)
        else:
            parsed.unenveloped.extend(events)
    return parsed


def write_parsed(conn: Connection[Any], parsed: Parsed, source: str, received: int) -> IngestResult:
    """Write a parsed batch inside the caller's transaction."""
    fresh = claim_sns_ids(conn, list(parsed.events_by_sns_id))
    events = [e for sns_id in fresh for e in parsed.events_by_sns_id[sns_id]] + parsed.unenveloped
    stored, suppressed, unsubscribed = write_events(conn, events)
    write_dead_letters(conn, source, parsed.dead)
    return IngestResult(
        received=received,
        stored=stored,
        # Whole SNS messages seen before, plus rows whose event key was already stored.
        duplicates=len(events) - stored + sum(
            len(v) for k, v in parsed.events_by_sns_id.items() if k not in fresh
        ),
        dead_letters=len(parsed.dead),
        suppressed=suppressed,
        unsubscribed=unsubscribed,
    )


def ingest(pool: ConnectionPool[Any], items: Sequence[Received], source: str) -> IngestResult:
    """Parse and store a batch in one transaction; return what happened to it."""
    parsed = parse_batch(items)
    with pool.connection() as conn, conn.transaction():
        result = write_parsed(conn, parsed, source, len(items))
    log.info("ses_notifications_ingested", source=source, **_fields(result))
    for letter in parsed.dead:
        log.warning("ses_notification_dead_lettered", source=source, ref=letter.ref, reason=letter.reason)
    return result


def _fields(result: IngestResult) -> Mapping[str, int]:
    return {
        "received": result.received, "stored": result.stored, "duplicates": result.duplicates,
        "dead_letters": result.dead_letters, "suppressed": result.suppressed,
        "unsubscribed": result.unsubscribed,
    }
