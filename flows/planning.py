"""Deciding what an event should send: matching, trigger conditions, variants, freshness.

Pure: takes the catalogue, the event and the contact as plain values and returns the sends
to record. One send per (event, flow, step), identified by a unique ``send_key``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from events.envelope import Event
from flows.conditions import ConditionError, evaluate
from flows.loader import Catalogue
from flows.model import Flow
from flows.schedules import firings_between, parse_stored_date


@dataclass(frozen=True)
class PlannedSend:
    """A send to record: ``pending`` (due now), ``scheduled`` (later), or already decided."""

    send_key: str
    flow: str
    step: str
    variant: str
    category: str
    queue: str
    due_at: datetime
    state: str
    reason: str | None = None


def send_key(event_id: str, flow: str, step: str) -> str:
    # Flow and step names cannot contain ":", so the key reads unambiguously from the right.
    return f"{event_id}:{flow}:{step}"


def choose_variant(flow: Flow, contact_id: str) -> str:
    """The same contact always gets the same variant of a flow, spread by the weights."""
    digest = hashlib.sha256(f"{flow.name}\x00{contact_id}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") % sum(v.weight for v in flow.variants)
    for variant in flow.variants:
        if point < variant.weight:
            return variant.name
        point -= variant.weight
    raise AssertionError("unreachable: weights cover the range")


def condition_values(event: Event, contact: Mapping[str, Any]) -> dict[str, Any]:
    """What conditions see: the event as JSON, its data, and the stored contact."""
    event_json = event.to_json()
    return {"event": event_json, "data": event_json["data"], "contact": contact}


def plan_sends(
    catalogue: Catalogue,
    event: Event,
    contact: Mapping[str, Any],
    now: datetime,
    recent: Mapping[str, int] | None = None,
    delay_scale: float = 1.0,
) -> list[PlannedSend]:
    """Every send the event causes, in catalogue order.

    ``recent`` counts, per flow with a frequency cap, the contact's sends inside the cap's
    window; a flow at its cap records its sends as skipped: ``frequency_cap``.
    """
    planned: list[PlannedSend] = []
    values = condition_values(event, contact)
    for flow in catalogue.for_event(event.type):
        state, reason = "pending", None
        try:
            if not evaluate(flow.trigger.condition, values):
                continue
        except ConditionError as exc:
            state, reason = "failed", f"condition_error: {exc}"
        if state == "pending" and flow.freshness is not None and now - event.occurred_at > flow.freshness:
            state, reason = "skipped", "stale"
        cap = flow.frequency_cap
        if state == "pending" and cap is not None and (recent or {}).get(flow.name, 0) >= cap.max:
            state, reason = "skipped", "frequency_cap"
        planned += flow_sends(flow, event.contact.id, event.id, now, state, reason, delay_scale)
    return planned


def flow_sends(
    flow: Flow, contact_id: str, key: str, start: datetime, state: str = "pending",
    reason: str | None = None, delay_scale: float = 1.0, now: datetime | None = None,
) -> list[PlannedSend]:
    """One send per step of the flow, the first at ``start`` and each later one after its delay.

    A send due after ``now`` (default: ``start``) is ``scheduled``; the dispatcher takes it then.
    """
    now = now or start
    variant = choose_variant(flow, contact_id)
    sends = []
    for step in flow.all_steps:
        later = step.after.total_seconds() > 0
        sends.append(
            PlannedSend(
                send_key=send_key(key, flow.name, step.name),
                flow=flow.name,
                step=step.name,
                variant=variant,
                category=flow.category_for(step).value,
                queue=flow.queue_for(step),
                # delay_scale shortens delays for demos and tests; 1 in production.
                due_at=start + step.after * delay_scale,
                state="scheduled" if state == "pending" and (later or start > now) else state,
                reason=reason,
            )
        )
    return sends


@dataclass(frozen=True)
class EventPlan:
    """What ingesting one event decides, given what the store knows of its contact."""

    catalogue: Catalogue
    event: Event
    now: datetime
    delay_scale: float = 1.0

    def caps(self) -> dict[str, timedelta]:
        """Flows this event may trigger that have a frequency cap, with the cap's window."""
        return {
            f.name: f.frequency_cap.per for f in self.catalogue.for_event(self.event.type) if f.frequency_cap
        }

    def exit_flows(self) -> list[str]:
        """Flows the contact leaves when this event happens (if their exit condition holds)."""
        return [f.name for f in self.catalogue.exits_for(self.event.type)]

    def sends(self, contact: Mapping[str, Any], recent: Mapping[str, int]) -> list[PlannedSend]:
        return plan_sends(self.catalogue, self.event, contact, self.now, recent, self.delay_scale)

    def cancels(self, flow_name: str, trigger_event: Mapping[str, Any] | None) -> bool:
        """Whether this event ends a pending send of ``flow_name`` started by ``trigger_event``."""
        flow = self.catalogue.flows.get(flow_name)
        if flow is None:
            return False
        values = {"event": self.event.to_json(), "trigger": trigger_event or {}}
        for exit_ in flow.exit:
            if exit_.event != self.event.type:
                continue
            try:
                if evaluate(exit_.condition, values):
                    return True
            except ConditionError:
                continue  # an exit that cannot be evaluated does not cancel anything
        return False


def _trigger_state(flow: Flow, payload: Mapping[str, Any], contact: Mapping[str, Any]) -> tuple[str, str | None] | None:
    """Pending when the trigger's condition holds, None when it does not, failed when it breaks."""
    try:
        if evaluate(flow.trigger.condition, {"event": payload, "data": payload["data"], "contact": contact}):
            return "pending", None
        return None
    except ConditionError as exc:
        return "failed", f"condition_error: {exc}"


def plan_date_sends(
    flow: Flow, contact: Mapping[str, Any], value: object, zone: ZoneInfo, now: datetime,
    *, lookahead: timedelta = timedelta(hours=26), grace: timedelta = timedelta(hours=12),
) -> list[tuple[list[PlannedSend], dict[str, Any]]]:
    """Sends for a date trigger firing between ``now - grace`` and ``now + lookahead``.

    The key (flow, contact, occurrence) makes each occurrence once-only however often the
    scan runs; a firing missed by less than ``grace`` (a contact added at 10:00 whose
    birthday fired at 09:00) goes out late the same day rather than never.
    """
    trigger = flow.trigger.date
    stored = parse_stored_date(value)
    if trigger is None or stored is None:
        return []
    result = []
    contact_id = str(contact["id"])
    for firing in firings_between(trigger, stored, zone, now - grace, now + lookahead):
        key = f"date:{contact_id}:{firing.occurrence.isoformat()}"
        start = max(firing.due_at, now)
        payload = {
            "id": key, "type": flow.trigger_type, "occurred_at": start.isoformat(),
            "data": {"date": value, "occurrence": firing.occurrence.isoformat(), "years": firing.years},
        }
        decided = _trigger_state(flow, payload, contact)
        if decided is not None:
            result.append((flow_sends(flow, contact_id, key, start, *decided, now=now), payload))
    return result


def plan_inactivity_sends(
    flow: Flow, contact: Mapping[str, Any], last_activity_at: datetime, now: datetime
) -> tuple[list[PlannedSend], dict[str, Any]]:
    """Sends for a contact inactive since ``last_activity_at``: once per inactive period.

    When the trigger's condition does not hold, a send is still recorded, as skipped:
    ``condition``, so the period is not examined again at every scan.
    """
    contact_id = str(contact["id"])
    key = f"inactive:{contact_id}:{int(last_activity_at.timestamp())}"
    payload = {
        "id": key, "type": "inactivity", "occurred_at": now.isoformat(),
        "data": {"last_activity_at": last_activity_at.isoformat(), "inactive_days": (now - last_activity_at).days},
    }
    state, reason = _trigger_state(flow, payload, contact) or ("skipped", "condition")
    return flow_sends(flow, contact_id, key, now, state, reason), payload
