"""The dispatcher: sends that are due leave the Postgres schedule for the broker.

It loops: every half second it claims due ``scheduled`` sends (``FOR UPDATE SKIP LOCKED``,
so several dispatchers can run) and enqueues them after the claim committed; every minute
it scans date and inactivity triggers and re-enqueues sends whose broker message was lost;
on a Redis broker it also publishes again events whose message was lost (:mod:`events.outbox`).
A dispatcher killed at any point loses nothing: a claimed send not yet enqueued is pending
in Postgres, and the lost-message sweep enqueues it again; the send ledger's claim keeps a
second enqueue from sending twice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog

from events.outbox import Outbox
from events.publisher import Publisher
from flows.loader import Catalogue
from flows.planning import plan_date_sends, plan_inactivity_sends
from workers.store import Enqueue, Store

log = structlog.get_logger("declic.dispatcher")

Enqueuer = Callable[[Iterable[Enqueue]], None]


def _zone(name: str | None, default: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or default)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(default)


def scan_dates(store: Store, catalogue: Catalogue, now: datetime, default_tz: str) -> list[Enqueue]:
    """Schedule every date-triggered send firing soon; already-scheduled ones are kept once."""
    due: list[Enqueue] = []
    for flow in catalogue.scheduled():
        if flow.trigger.date is None:
            continue
        for contact in store.contacts_with_attribute(flow.trigger.date.attribute):
            zone = _zone(contact["timezone"], default_tz)
            for planned, payload in plan_date_sends(flow, contact, contact["value"], zone, now):
                due += store.schedule(contact["id"], planned, payload)
    return due


def scan_inactivity(store: Store, catalogue: Catalogue, now: datetime) -> list[Enqueue]:
    """Start inactivity flows for contacts newly past their threshold, once per inactive period."""
    due: list[Enqueue] = []
    for flow in catalogue.scheduled():
        if flow.trigger.inactivity is None:
            continue
        first = flow.all_steps[0].name
        for contact in store.inactive_contacts(flow.name, first, flow.trigger.inactivity.after):
            planned, payload = plan_inactivity_sends(flow, contact, contact["last_activity_at"], now)
            due += store.schedule(contact["id"], planned, payload)
    return due


@dataclass
class OutboxSweep:
    """Accepted events that never reached ingest go back on the broker."""

    outbox: Outbox
    store: Store
    publisher: Publisher
    grace_s: float

    def __call__(self) -> int:
        overdue = self.outbox.overdue(self.grace_s)
        if not overdue:
            return 0
        known = self.store.known_events([item.event_id for item in overdue])
        republished = 0
        for item in overdue:
            if item.event_id in known:  # ingested, only its forgetting failed
                self.outbox.done(item.event_id)
            else:
                self.publisher.republish(item)
                republished += 1
        if republished:
            log.warning("events_republished", count=republished, reason="not ingested in time")
        return republished


class Dispatcher:
    """The loop; ``run`` until ``stop`` is set. One tick is also callable on its own (tests)."""

    def __init__(
        self, store: Store, catalogue: Catalogue, enqueue: Enqueuer, *, default_tz: str = "UTC",
        interval_s: float = 0.5, scan_every_s: float = 60.0, lost_after_s: int = 300,
        outbox_sweep: Callable[[], int] | None = None,
    ) -> None:
        self.store, self.catalogue, self.enqueue = store, catalogue, enqueue
        self.outbox_sweep = outbox_sweep
        self.default_tz = default_tz
        self.interval_s, self.scan_every_s, self.lost_after_s = interval_s, scan_every_s, lost_after_s
        self._last_scan = self._last_sweep = self._last_outbox = 0.0

    def dispatch(self) -> int:
        due = self.store.dispatch_due()
        self.enqueue(due)
        if due:
            log.info("sends_dispatched", count=len(due))
        return len(due)

    def scan(self, now: datetime | None = None) -> int:
        moment = now or datetime.now(UTC)
        due = scan_dates(self.store, self.catalogue, moment, self.default_tz)
        due += scan_inactivity(self.store, self.catalogue, moment)
        self.enqueue(due)
        log.info("triggers_scanned", enqueued=len(due))
        return len(due)

    def sweep(self) -> int:
        """Enqueue again sends whose message was lost (a crash between commit and enqueue)."""
        lost = self.store.stale_pending(self.lost_after_s)
        self.enqueue(lost)
        if lost:
            log.warning("sends_requeued", count=len(lost))
        return len(lost)

    def run(self, stop: threading.Event) -> None:
        log.info("dispatcher_started", interval_s=self.interval_s)
        while not stop.is_set():
            try:
                if time.monotonic() - self._last_scan >= self.scan_every_s:
                    self._last_scan = time.monotonic()
                    self.scan()
                if time.monotonic() - self._last_sweep >= min(10.0, self.lost_after_s / 2):
                    self._last_sweep = time.monotonic()
                    self.sweep()
                if self.outbox_sweep is not None and time.monotonic() - self._last_outbox >= 2.0:
                    self._last_outbox = time.monotonic()
                    self.outbox_sweep()
                busy = self.dispatch() >= 500
            except Exception as exc:
                log.warning("dispatcher_tick_failed", error=f"{exc.__class__.__name__}: {exc}")
                busy = False
                stop.wait(2.0)
            if not busy:
                stop.wait(self.interval_s)
        log.info("dispatcher_stopped")
