"""Follow-ups, exits, consent and dispatcher restarts with a real dispatcher and worker."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from typing import Any

import pytest

from declic.processes import ManagedProcess, WorkerProcess
from declic.services import Services
from events import Publisher
from flows import Catalogue
from flows.schedules import daytime_zone
from tests.e2e.conftest import dispatcher_process, fresh, wait_for
from workers.store import Store

pytestmark = pytest.mark.e2e


@pytest.fixture
def dispatcher(worker_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedProcess]:
    process = dispatcher_process(worker_env, tmp_path_factory.mktemp("dispatcher") / "dispatcher.log")
    with process:
        yield process


def signup(catalogue: Catalogue, *, opt_in: bool = True) -> dict[str, Any]:
    event = fresh(copy.deepcopy(catalogue["onboarding"].sample))
    event["contact"] = {**event["contact"], "id": f"c-{event['id']}", "opt_in": opt_in, "timezone": daytime_zone()}
    return event


def onboarding_sends(store: Store, event_id: str) -> dict[str, dict[str, Any]]:
    return {r["step"]: r for r in store.sends_for_event(event_id) if r["flow"] == "onboarding"}


def all_final(store: Store, event_id: str) -> dict[str, dict[str, Any]] | None:
    sends = onboarding_sends(store, event_id)
    return sends if sends and all(s["state"] in ("sent", "skipped", "failed") for s in sends.values()) else None


def test_follow_ups_go_out_on_time(
    worker: WorkerProcess, dispatcher: ManagedProcess, publisher: Publisher, store: Store, catalogue: Catalogue
) -> None:
    """Onboarding's day 2 and day 7 steps (2 s and 7 s here) leave within about two seconds of their due time."""
    event = signup(catalogue)
    publisher.publish(event)
    sends = wait_for(lambda: all_final(store, event["id"]), timeout=30, what="the onboarding series")
    assert {step: s["state"] for step, s in sends.items()} == {"day0": "sent", "day2": "sent", "day7": "sent"}
    for step in ("day2", "day7"):
        late = (sends[step]["sent_at"] - sends[step]["due_at"]).total_seconds()
        assert 0 <= late < 2.5, f"{step} sent {late:.2f} s after it was due"


def test_a_purchase_exits_onboarding(
    worker: WorkerProcess, dispatcher: ManagedProcess, publisher: Publisher, store: Store, catalogue: Catalogue
) -> None:
    """A purchase right after signing up cancels the onboarding steps still scheduled."""
    event = signup(catalogue)
    publisher.publish(event)
    wait_for(lambda: onboarding_sends(store, event["id"]).get("day0", {}).get("state") == "sent", what="day 0")
    purchase = fresh(copy.deepcopy(catalogue["purchase_confirmation"].sample))
    purchase["contact"] = {**purchase["contact"], "id": event["contact"]["id"]}
    publisher.publish(purchase)
    sends = wait_for(lambda: all_final(store, event["id"]), timeout=30, what="the cancellation")
    assert (sends["day2"]["state"], sends["day2"]["reason"]) == ("skipped", "cancelled")
    assert (sends["day7"]["state"], sends["day7"]["reason"]) == ("skipped", "cancelled")


def test_no_consent_no_onboarding(
    worker: WorkerProcess, dispatcher: ManagedProcess, publisher: Publisher, store: Store, catalogue: Catalogue
) -> None:
    """A contact without marketing opt-in gets the welcome email but no onboarding step."""
    event = signup(catalogue, opt_in=False)
    publisher.publish(event)
    sends = wait_for(lambda: all_final(store, event["id"]), timeout=30, what="the skipped series")
    assert {(s["state"], s["reason"]) for s in sends.values()} == {("skipped", "no_consent")}
    welcome = [r for r in store.sends_for_event(event["id"]) if r["flow"] == "welcome"]
    assert welcome and wait_for(lambda: store.sends_for_event(event["id"]) and all(
        r["state"] == "sent" for r in store.sends_for_event(event["id"]) if r["flow"] == "welcome"))


def test_dispatcher_restart_loses_and_duplicates_nothing(
    worker: WorkerProcess, worker_env: dict[str, str], publisher: Publisher, store: Store, services: Services,
    catalogue: Catalogue, tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Killing the dispatcher mid-run and starting it again sends every due step exactly once."""
    logs = tmp_path_factory.mktemp("restart")
    first = dispatcher_process(worker_env, logs / "first.log").start()
    first.wait_ready(30)
    events = [signup(catalogue) for _ in range(20)]
    for event in events:
        publisher.publish(event)
    time.sleep(2.2)  # day 2 steps are falling due now
    first.kill()
    time.sleep(1.0)
    with dispatcher_process(worker_env, logs / "second.log"):
        finals = [wait_for(lambda e=e: all_final(store, e["id"]), timeout=60, what="every series") for e in events]
    send_ids = [str(s["id"]) for sends in finals for s in sends.values()]
    assert all(s["state"] == "sent" for sends in finals for s in sends.values())
    per_send = {sid: 0 for sid in send_ids}
    for request in services.moto.send_requests():
        for tag in request.get("EmailTags", []):
            if tag["Name"] == "send_id" and tag["Value"] in per_send:
                per_send[tag["Value"]] += 1
    assert set(per_send.values()) == {1}, "every step reached SES exactly once"
