"""The demo's day of shop events: every flow's sample, plus the interaction stories.

Pure: builds event dicts from the catalogue and the clock. Besides one sample per
event-triggered flow it plays a fifth purchase (the loyalty invitation), a refund that
cancels a satisfaction survey, a customer without marketing consent, a birthday and an
account anniversary falling due now in the contacts' own time zones, a customer silent for
100 days (the win-back), and a night owl signing up inside quiet hours. Contacts whose night
it is otherwise move to a midday zone, so the demo shows every flow at any hour.
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from flows import Catalogue
from flows.schedules import daytime_zone, zone_where_it_is_past


@dataclass
class Scenario:
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def contact_ids(self) -> list[str]:
        return sorted({e["contact"]["id"] for e in self.events})


def _fresh(event: dict[str, Any], now: datetime, **contact: Any) -> dict[str, Any]:
    copied = copy.deepcopy(event)
    copied["id"] = f"demo-{copied['type']}-{uuid.uuid4().hex[:10]}"
    copied["occurred_at"] = now.isoformat()
    copied["contact"] = {**copied["contact"], **contact}
    return copied


# Longer than the demo takes, so follow-ups due seconds after the start are not caught either.
_DEMO_SPAN = timedelta(minutes=15)


def _wake(events: list[dict[str, Any]], catalogue: Catalogue, moment: datetime) -> None:
    """Move contacts whose night it is, or soon will be, to a zone where it is midday, so the
    demo shows every flow at any hour; quiet hours get their own story (the night owl)."""
    windows = [flow.quiet_hours for flow in catalogue if flow.quiet_hours is not None]
    midday = daytime_zone(moment)
    for event in events:
        contact = event["contact"]
        zone = ZoneInfo(contact.get("timezone") or "UTC")
        during = [(moment + offset).astimezone(zone).time() for offset in (timedelta(0), _DEMO_SPAN)]
        if any(window.contains(local) for window in windows for local in during):
            contact["timezone"] = midday


def _night_owl(catalogue: Catalogue, moment: datetime) -> dict[str, Any] | None:
    """A signup from a contact whose local time is inside the onboarding's quiet hours: the
    welcome goes at once, the onboarding series waits for the morning."""
    flow = catalogue.flows.get("onboarding")
    if flow is None or flow.quiet_hours is None:
        return None
    an_hour_in = (datetime.combine(moment.date(), flow.quiet_hours.start) + timedelta(hours=1)).time()
    return _fresh(flow.sample, moment, id="demo-night-owl", email="night.owl@example.com",
                  timezone=zone_where_it_is_past(an_hour_in, moment))


def build(catalogue: Catalogue, now: datetime | None = None) -> Scenario:
    moment = now or datetime.now(UTC)
    scenario = Scenario()
    for flow in catalogue:
        if flow.trigger.event is None:
            continue
        if flow.name == "loyalty_invitation":
            # The invitation follows the fifth purchase: four earlier orders first.
            for _ in range(5):
                scenario.events.append(_fresh(flow.sample, moment))
            continue
        scenario.events.append(_fresh(flow.sample, moment))

    if "satisfaction_survey" in catalogue.flows:
        purchase = _fresh(catalogue["satisfaction_survey"].sample, moment, id="demo-refunder")
        scenario.events.append(purchase)
        refund = _fresh(purchase, moment)
        refund.update(type="order_refunded", data={"order_id": purchase["data"]["order_id"], "reason": "damaged"})
        scenario.events.append(refund)

    if "password_reset" in catalogue.flows:
        # Someone who cannot get in: five reset requests; the cap lets three through, and the
        # reporting side flags the contact among "repeated password resets".
        for _ in range(5):
            scenario.events.append(_fresh(catalogue["password_reset"].sample, moment, id="demo-locked-out",
                                          email="locked.out@example.com"))

    if "onboarding" in catalogue.flows:
        no_consent = _fresh(catalogue["onboarding"].sample, moment, id="demo-no-consent", opt_in=False,
                            email="no.marketing@example.com")
        scenario.events.append(no_consent)

    for flow in catalogue.scheduled():
        trigger = flow.trigger
        if trigger.date is not None:
            zone = zone_where_it_is_past(trigger.date.at, moment)
            local_today = moment.astimezone(ZoneInfo(zone)).date()
            occurrence = local_today - timedelta(days=trigger.date.offset.days)
            years_back = 4 if (occurrence.month, occurrence.day) == (2, 29) else 3  # keep a 29 February
            stored = date(occurrence.year - years_back, occurrence.month, occurrence.day)
            profile = _fresh(flow.sample, moment, id=f"demo-{flow.name}", timezone=zone)
            profile["contact"]["attributes"] = {**profile["contact"].get("attributes", {}),
                                                trigger.date.attribute: stored.isoformat()}
            profile.update(type="profile_updated", data={})
            scenario.events.append(profile)
        elif trigger.inactivity is not None:
            silent = _fresh(flow.sample, moment - trigger.inactivity.after - timedelta(days=10), id=f"demo-{flow.name}")
            silent.update(type="page_view", data={"path": "/collections/linen"})
            scenario.events.append(silent)
    _wake(scenario.events, catalogue, moment)
    if (night_owl := _night_owl(catalogue, moment)) is not None:
        scenario.events.append(night_owl)
    return scenario
