"""Deciding what an event should send: matching, trigger conditions, variants, freshness.

Pure: takes the catalogue, the event and the contact as plain values and returns the sends
to record. One send per (event, flow, step), identified by a unique ``send_key``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from events.envelope import Event
from flows.conditions import ConditionError, evaluate
from flows.loader import Catalogue
from flows.model import Flow


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
    catalogue: Catalogue, event: Event, contact: Mapping[str, Any], now: datetime
) -> list[PlannedSend]:
    """Every send the event causes, in catalogue order."""
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
        variant = choose_variant(flow, event.contact.id)
        for step in flow.all_steps:
            later = step.after.total_seconds() > 0
            planned.append(
                PlannedSend(
                    send_key=send_key(event.id, flow.name, step.name),
                    flow=flow.name,
                    step=step.name,
                    variant=variant,
                    category=flow.category_for(step).value,
                    queue=flow.queue_for(step),
                    due_at=now + step.after,
                    state="scheduled" if state == "pending" and later else state,
                    reason=reason,
                )
            )
    return planned
