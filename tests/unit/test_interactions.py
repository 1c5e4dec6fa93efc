"""Follow-ups, exits, caps, cancellation, dates, inactivity, quiet hours and consent on real Postgres."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest

from events import parse_event
from flows import Catalogue
from flows.model import Flow
from workers.dispatcher import Dispatcher, scan_dates, scan_inactivity
from workers.pipeline import Deferred, Deps, Sent, Skipped, deliver, ingest_event
from workers.rendering import Renderer
from workers.ses import InMemorySender
from workers.store import Enqueue, Store
from workers.unsubscribe import InvalidLink, UnsubscribeLinks

LINKS = UnsubscribeLinks("test-secret", "https://mail.example.com")
SENDER = {"email": "hello@shop.example.com", "name": "Shop"}


def event(kind: str, contact: str = "c-1", **data: Any) -> dict[str, Any]:
    return {
        "id": f"{kind}-{datetime.now(UTC).timestamp()}-{contact}",
        "type": kind,
        "occurred_at": datetime.now(UTC).isoformat(),
        "contact": {"id": contact, "email": f"{contact}@example.org", "opt_in": True, "timezone": "Europe/Paris"},
        "data": data,
    }


def flow(**fields: Any) -> Flow:
    trigger = fields.get("trigger", {"event": "thing"})
    kind = trigger.get("event") or ("inactivity" if "inactivity" in trigger else f"date.{trigger['date']['attribute']}")
    base: dict[str, Any] = {"category": "marketing", "sender": SENDER, "template": "generic_notification",
                            "sample": {**event("x"), "type": kind}}
    return Flow.model_validate({**base, **fields})


def catalogue_of(*flows: Flow) -> Catalogue:
    catalogue = Catalogue()
    for f in flows:
        catalogue.add(f)
    return catalogue


def states(store: Store, contact: str = "c-1") -> dict[str, tuple[str, str | None]]:
    with store.pool.connection() as conn:
        rows = conn.execute("SELECT flow, step, state, reason FROM sends WHERE contact_id = %s", (contact,)).fetchall()
    return {f"{r['flow']}/{r['step']}": (r["state"], r["reason"]) for r in rows}


def make_deps(store: Store, catalogue: Catalogue, renderer: Renderer) -> tuple[Deps, InMemorySender]:
    sender = InMemorySender()

    class NoObjects:
        def get(self, bucket: str, key: str) -> bytes:
            raise AssertionError

    deps = Deps(store=store, catalogue=catalogue, renderer=renderer, sender=sender, objects=NoObjects(),
                configuration_set=None, links=LINKS)
    return deps, sender


ONBOARDING = flow(
    name="onboarding", trigger={"event": "signup"},
    steps=[{"name": "day0"}, {"name": "day2", "after": "2d"}, {"name": "day7", "after": "7d"}],
    exit=[{"event": "purchase"}],
)
SURVEY = flow(
    name="survey_later", trigger={"event": "order_done"}, steps=[{"name": "ask", "after": "7d"}],
    exit=[{"event": "order_refunded", "condition": "event.data.order == trigger.data.order"}],
)


def test_follow_ups_are_scheduled_and_an_exit_cancels_them(store: Store) -> None:
    """Onboarding sends day 0 now, holds day 2 and 7 in Postgres, and a purchase cancels what is left."""
    catalogue = catalogue_of(ONBOARDING)
    result = ingest_event(store, catalogue, event("signup"))
    assert result is not None and len(result.to_enqueue) == 1
    assert states(store) == {"onboarding/day0": ("pending", None), "onboarding/day2": ("scheduled", None),
                             "onboarding/day7": ("scheduled", None)}
    ingest_event(store, catalogue, {**event("purchase"), "type": "custom_purchase"})  # not the exit type
    assert states(store)["onboarding/day2"] == ("scheduled", None)
    bought = event("purchase", order_id="o1", currency="EUR", total="10",
                   items=[{"sku": "a", "name": "A", "quantity": 1, "unit_price": "10"}])
    cancelled = ingest_event(store, catalogue, bought)
    assert cancelled is not None and cancelled.cancelled == 3
    assert set(states(store).values()) == {("skipped", "cancelled")}


def test_exit_condition_compares_with_the_triggering_event(store: Store) -> None:
    """A refund cancels the survey of the refunded order only."""
    catalogue = catalogue_of(SURVEY)
    ingest_event(store, catalogue, {**event("order_done", order="A"), "id": "order-A"})
    ingest_event(store, catalogue, {**event("order_done", order="B"), "id": "order-B"})
    ingest_event(store, catalogue, event("order_refunded", order="A"))
    assert {r["event_id"]: r["state"] for r in [*store.sends_for_event("order-A"), *store.sends_for_event("order-B")]} \
        == {"order-A": "skipped", "order-B": "scheduled"}


def test_frequency_cap_counts_recent_sends(store: Store) -> None:
    """At most 3 password resets in 15 minutes: the fourth is recorded as skipped: frequency_cap."""
    reset = flow(name="reset", category="critical", trigger={"event": "reset_asked"},
                 frequency_cap={"max": 3, "per": "15m"})
    catalogue = catalogue_of(reset)
    outcomes = []
    for _ in range(4):
        result = ingest_event(store, catalogue, event("reset_asked"))
        assert result is not None
        outcomes.append(len(result.to_enqueue))
    assert outcomes == [1, 1, 1, 0]
    with store.pool.connection() as conn:
        reasons = [r["reason"] for r in conn.execute("SELECT reason FROM sends ORDER BY created_at").fetchall()]
    assert reasons == [None, None, None, "frequency_cap"]


def test_cancel_by_event_and_by_contact(store: Store) -> None:
    """Cancelling pending sends by event or by contact leaves sent mail alone and records 'cancelled'."""
    catalogue = catalogue_of(ONBOARDING)
    first = event("signup", contact="c-1")
    ingest_event(store, catalogue, first)
    ingest_event(store, catalogue, event("signup", contact="c-2"))
    assert store.cancel_pending(event_id=first["id"]) == 3
    assert store.cancel_pending(contact_id="c-2") == 3
    with pytest.raises(ValueError, match="one of the two"):
        store.cancel_pending()


def test_dispatcher_sends_due_rows_once(store: Store) -> None:
    """Due scheduled sends are claimed once even by two dispatchers; future ones stay."""
    catalogue = catalogue_of(ONBOARDING)
    ingest_event(store, catalogue, event("signup"))
    with store.pool.connection() as conn:
        conn.execute("UPDATE sends SET due_at = now() - interval '1 second' WHERE step = 'day2'")
    seen: list[Enqueue] = []
    one = Dispatcher(store, catalogue, seen.extend)
    two = Dispatcher(store, catalogue, seen.extend)
    assert one.dispatch() + two.dispatch() == 1
    assert [s.queue for s in seen] == ["send.bulk"]
    assert states(store)["onboarding/day7"] == ("scheduled", None)


BIRTHDAY = flow(name="birthday", trigger={"date": {"attribute": "birthday", "at": "09:00"}})
WINBACK = flow(name="winback", trigger={"inactivity": {"after": "90d"}})


def test_birthdays_are_scheduled_once_at_local_nine(store: Store) -> None:
    """A birthday tomorrow is scheduled at 09:00 Paris time, and scanning again adds nothing."""
    catalogue = catalogue_of(BIRTHDAY)
    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    raw = event("signup", contact="c-b")
    raw["contact"]["attributes"] = {"birthday": "1990-12-03"}
    ingest_event(store, catalogue_of(), raw)
    assert scan_dates(store, catalogue, now, "UTC") == []
    assert scan_dates(store, catalogue, now, "UTC") == []
    with store.pool.connection() as conn:
        [row] = conn.execute("SELECT * FROM sends WHERE flow = 'birthday'").fetchall()
    assert row["state"] == "scheduled" and row["due_at"] == datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
    assert row["send_key"] == "date:c-b:2026-12-03:birthday:main"
    assert row["payload"]["data"]["years"] == 36


def test_inactivity_fires_once_per_period(store: Store) -> None:
    """A contact silent for 100 days gets one win-back; a new activity opens a new period."""
    catalogue = catalogue_of(WINBACK)
    old = event("page_view", contact="c-w")
    old["occurred_at"] = (datetime.now(UTC) - timedelta(days=100)).isoformat()
    ingest_event(store, catalogue_of(), old)
    now = datetime.now(UTC)
    assert len(scan_inactivity(store, catalogue, now)) == 1
    assert scan_inactivity(store, catalogue, now) == []
    later = event("page_view", contact="c-w")
    later["occurred_at"] = (datetime.now(UTC) - timedelta(days=95)).isoformat()
    ingest_event(store, catalogue_of(), later)
    assert len(scan_inactivity(store, catalogue, now)) == 1


def test_marketing_carries_one_click_unsubscribe(store: Store, renderer: Renderer) -> None:
    """A marketing email has List-Unsubscribe with a signed link and List-Unsubscribe-Post."""
    catalogue = catalogue_of(flow(name="promo", trigger={"event": "promo"}))
    raw = event("promo", headline="Winter sale", paragraphs=["Twenty percent off linen."])
    result = ingest_event(store, catalogue, raw)
    assert result is not None
    deps, sender = make_deps(store, catalogue, renderer)
    assert isinstance(deliver(result.to_enqueue[0].send_id, deps), Sent)
    headers = {h["Name"]: h["Value"] for h in sender.sent[0]["Content"]["Simple"]["Headers"]}
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = headers["List-Unsubscribe"].strip("<>")
    assert url.startswith("https://mail.example.com/v1/unsubscribe/")
    assert LINKS.read(url.rsplit("/", 1)[1]).contact_id == "c-1"
    assert url in sender.sent[0]["Content"]["Simple"]["Body"]["Html"]["Data"]


def test_unsubscribe_links_are_signed_and_expire() -> None:
    """A tampered link is refused, and an old link has expired."""
    token = LINKS.url("c-1", "promo").rsplit("/", 1)[1]
    with pytest.raises(InvalidLink) as bad:
        LINKS.read(token[:-2] + "xx")
    assert not bad.value.expired
    with pytest.raises(InvalidLink) as old:
        LINKS.read(token, max_age_s=-1)
    assert old.value.expired


def test_unsubscribe_stops_marketing_but_not_receipts(store: Store, renderer: Renderer) -> None:
    """After unsubscribing, pending marketing is cancelled and new marketing skipped; transactional still goes."""
    promo = flow(name="promo", trigger={"event": "promo"}, steps=[{"name": "now"}, {"name": "later", "after": "1d"}])
    receipt = flow(name="receipt", category="transactional", trigger={"event": "promo"})
    catalogue = catalogue_of(promo, receipt)
    ingest_event(store, catalogue, event("promo", headline="h", paragraphs=["p"]))
    assert store.unsubscribe("c-1")
    assert states(store)["promo/later"] == ("skipped", "unsubscribed")
    again = event("promo", headline="h", paragraphs=["p"])
    result = ingest_event(store, catalogue, again)
    assert result is not None
    deps, _ = make_deps(store, catalogue, renderer)
    outcomes = {deliver(e.send_id, deps).label for e in result.to_enqueue}
    assert outcomes == {"sent", "skipped"}
    assert states(store)["receipt/main"][0] == "sent"


def test_quiet_hours_defer_marketing(store: Store, renderer: Renderer) -> None:
    """A marketing step due inside its quiet hours goes back to the schedule until they end."""
    always_quiet = flow(name="night", trigger={"event": "promo"},
                        quiet_hours={"start": time(0, 0), "end": time(23, 59, 59)})
    catalogue = catalogue_of(always_quiet)
    result = ingest_event(store, catalogue, event("promo", headline="h", paragraphs=["p"]))
    assert result is not None
    deps, sender = make_deps(store, catalogue, renderer)
    outcome = deliver(result.to_enqueue[0].send_id, deps)
    assert isinstance(outcome, Deferred) and outcome.until > datetime.now(UTC)
    assert states(store)["night/main"] == ("scheduled", "quiet_hours") and sender.sent == []


def test_opt_in_after_unsubscribe_needs_an_explicit_newer_event(store: Store) -> None:
    """Only a marketing_opt_in event newer than the unsubscribe opts the contact back in."""
    catalogue = catalogue_of()
    ingest_event(store, catalogue, event("signup"))
    store.unsubscribe("c-1")
    stale = event("signup")
    stale["occurred_at"] = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    ingest_event(store, catalogue, stale)
    with store.pool.connection() as conn:
        row = conn.execute("SELECT opt_in, unsubscribed_at FROM contacts WHERE id = 'c-1'").fetchone()
    assert row is not None and row["opt_in"] is False and row["unsubscribed_at"] is not None
    echoed = event("signup")
    echoed["occurred_at"] = (datetime.now(UTC) + timedelta(seconds=5)).isoformat()
    ingest_event(store, catalogue, echoed)  # a producer echoing opt_in: true does not count
    with store.pool.connection() as conn:
        row = conn.execute("SELECT opt_in FROM contacts WHERE id = 'c-1'").fetchone()
    assert row is not None and row["opt_in"] is False
    fresh = event("marketing_opt_in")
    fresh["occurred_at"] = (datetime.now(UTC) + timedelta(seconds=6)).isoformat()
    ingest_event(store, catalogue, fresh)
    with store.pool.connection() as conn:
        row = conn.execute("SELECT opt_in, unsubscribed_at FROM contacts WHERE id = 'c-1'").fetchone()
    assert row is not None and row["opt_in"] is True and row["unsubscribed_at"] is None


def test_skip_reasons_are_recorded(store: Store, renderer: Renderer) -> None:
    """A step whose condition is false when due is skipped with reason 'condition'."""
    conditional = flow(name="maybe", trigger={"event": "promo"},
                       steps=[{"name": "only_big", "condition": "data.amount > 100"}])
    catalogue = catalogue_of(conditional)
    result = ingest_event(store, catalogue, event("promo", amount=5, headline="h", paragraphs=["p"]))
    assert result is not None
    deps, _ = make_deps(store, catalogue, renderer)
    assert deliver(result.to_enqueue[0].send_id, deps) == Skipped("condition")
    assert parse_event(event("promo")).type == "promo"
