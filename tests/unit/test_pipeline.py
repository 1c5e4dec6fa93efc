"""The ingest and delivery stages on a real Postgres, with the in-memory SES sender."""

from __future__ import annotations

import base64
import copy
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from flows import Catalogue
from flows.schedules import daytime_zone
from workers.errors import PermanentSendError, TransientSendError
from workers.pipeline import (
    Deps,
    Failed,
    NotClaimed,
    Retry,
    Sent,
    Skipped,
    deliver,
    deliver_claimed,
    ingest_event,
)
from workers.rendering import Renderer
from workers.ses import InMemorySender
from workers.store import Enqueue, Store
from workers.unsubscribe import UnsubscribeLinks


class NoObjects:
    def get(self, bucket: str, key: str) -> bytes:
        raise AssertionError("no S3 in these tests")


def make_deps(store: Store, catalogue: Catalogue, renderer: Renderer, sender: InMemorySender, **kw: Any) -> Deps:
    return Deps(store=store, catalogue=catalogue, renderer=renderer, sender=sender, objects=NoObjects(),
                configuration_set="declic", links=UnsubscribeLinks("test-secret", "https://mail.example.com"), **kw)


def sample(catalogue: Catalogue, flow: str, **changes: Any) -> dict[str, Any]:
    event = copy.deepcopy(catalogue[flow].sample)
    event["occurred_at"] = datetime.now(UTC).isoformat()
    for key, value in changes.items():
        event[key] = value
    return event


def ingest_one(store: Store, catalogue: Catalogue, event: dict[str, Any], flow: str | None = None) -> str:
    """Ingest the event and return the id of its send for ``flow`` (the flow it is a sample of)."""
    result = ingest_event(store, catalogue, event)
    assert result is not None, result
    due = {str(row["id"]): row["flow"] for row in store.sends_for_event(event["id"])}
    ids = [e.send_id for e in result.to_enqueue if flow is None or due[e.send_id] == flow]
    assert len(ids) == 1, (flow, due)
    return ids[0]


def state(store: Store, send_id: str) -> dict[str, Any]:
    with store.pool.connection() as conn:
        row = conn.execute("SELECT * FROM sends WHERE id = %s", (send_id,)).fetchone()
    assert row is not None
    return row


def test_event_becomes_one_tagged_email(store: Store, catalogue: Catalogue, renderer: Renderer) -> None:
    """An order confirmation is recorded, rendered in the contact's language and sent with its tags."""
    sender = InMemorySender()
    send_id = ingest_one(store, catalogue, sample(catalogue, "order_confirmation"), "order_confirmation")
    outcome = deliver(send_id, make_deps(store, catalogue, renderer, sender))
    assert isinstance(outcome, Sent)
    [request] = sender.sent
    tags = {t["Name"]: t["Value"] for t in request["EmailTags"]}
    assert tags == {"flow": "order_confirmation", "step": "main", "variant": tags["variant"], "send_id": send_id}
    assert request["ConfigurationSetName"] == "declic"
    row = state(store, send_id)
    assert row["state"] == "sent" and row["ses_message_id"] == outcome.ses_message_id
    assert row["subject"] == request["Content"]["Simple"]["Subject"]["Data"]


def test_same_event_twice_sends_once(store: Store, catalogue: Catalogue, renderer: Renderer) -> None:
    """A repeated event id is a duplicate, and a send already sent is not claimed again."""
    sender = InMemorySender()
    event = sample(catalogue, "welcome")
    send_id = ingest_one(store, catalogue, event, "welcome")
    deps = make_deps(store, catalogue, renderer, sender)
    assert isinstance(deliver(send_id, deps), Sent)
    again = ingest_event(store, catalogue, event)
    assert again is not None and again.duplicate and send_id not in [e.send_id for e in again.to_enqueue]
    assert isinstance(deliver(send_id, deps), NotClaimed)
    assert len(sender.sent) == 1


def test_duplicate_event_reenqueues_sends_still_pending(store: Store, catalogue: Catalogue) -> None:
    """If the worker died between commit and enqueue, the redelivered event enqueues the send again."""
    event = sample(catalogue, "welcome")
    send_id = ingest_one(store, catalogue, event, "welcome")
    again = ingest_event(store, catalogue, event)
    assert again is not None and send_id in [e.send_id for e in again.to_enqueue]


def test_invalid_event_is_dead_lettered(store: Store, catalogue: Catalogue) -> None:
    """An event that fails validation is kept as a dead letter naming the field."""
    event = sample(catalogue, "password_reset")
    event["data"] = {"reset_url": "not a url"}
    assert ingest_event(store, catalogue, event) is None
    [letter] = store.dead_letters()
    assert letter["kind"] == "event" and letter["ref"] == event["id"]
    assert "data.reset_url" in letter["reason"]
    assert letter["payload"]["data"] == {"reset_url": "not a url"}


def test_template_error_fails_the_send_with_a_reason(
    store: Store, catalogue: Catalogue, templates_dir: Path, tmp_path: Path
) -> None:
    """A template that breaks marks the send failed with the template named; nothing is sent."""
    broken = tmp_path / "templates"
    shutil.copytree(templates_dir, broken)
    for body in (broken / "welcome").glob("*/body.html"):
        body.write_text('{% extends "_layouts/base.html" %}{% block content %}{{ data.no_such_field }}{% endblock %}')
    sender = InMemorySender()
    send_id = ingest_one(store, catalogue, sample(catalogue, "welcome"), "welcome")
    outcome = deliver(send_id, make_deps(store, catalogue, Renderer(broken, {"name": "x"}), sender))
    assert isinstance(outcome, Failed) and "render_error" in outcome.reason and "body.html" in outcome.reason
    assert sender.sent == []
    [letter] = store.dead_letters()
    assert letter["kind"] == "send" and letter["ref"] == send_id and letter["flow"] == "welcome"


def test_transient_errors_retry_then_give_up(store: Store, catalogue: Catalogue, renderer: Renderer) -> None:
    """Throttling leads to a retry with backoff; after the last attempt the send is dead."""
    sender = InMemorySender()
    deps = make_deps(store, catalogue, renderer, sender, max_attempts=2)
    send_id = ingest_one(store, catalogue, sample(catalogue, "welcome"), "welcome")
    sender.fail_next(TransientSendError("503"), TransientSendError("503"))
    first = deliver(send_id, deps)
    assert isinstance(first, Retry) and 0 < first.delay_s <= 120
    assert state(store, send_id)["state"] == "retry"
    second = deliver(send_id, deps)
    assert isinstance(second, Failed) and second.reason.startswith("gave_up after 2 attempts")
    assert sender.sent == []


def test_permanent_error_is_not_retried(store: Store, catalogue: Catalogue, renderer: Renderer) -> None:
    """A rejection by SES fails the send at once."""
    sender = InMemorySender()
    sender.fail_next(PermanentSendError("MessageRejected: Email address is not verified"))
    send_id = ingest_one(store, catalogue, sample(catalogue, "welcome"), "welcome")
    outcome = deliver(send_id, make_deps(store, catalogue, renderer, sender))
    assert isinstance(outcome, Failed) and outcome.reason.startswith("ses_rejected")
    assert state(store, send_id)["attempts"] == 1


def test_suppressed_address_is_skipped_even_for_critical(
    store: Store, catalogue: Catalogue, renderer: Renderer
) -> None:
    """A hard-bounced address gets no password reset: skipped, with the reason recorded."""
    event = sample(catalogue, "password_reset")
    store.suppress(event["contact"]["email"].upper(), "hard_bounce")
    sender = InMemorySender()
    send_id = ingest_one(store, catalogue, event, "password_reset")
    assert deliver(send_id, make_deps(store, catalogue, renderer, sender)) == Skipped("suppressed")
    assert state(store, send_id)["reason"] == "suppressed" and sender.sent == []


def test_marketing_needs_opt_in(store: Store, catalogue: Catalogue, renderer: Renderer) -> None:
    """A survey to a contact without marketing consent is skipped as no_consent."""
    event = sample(catalogue, "survey")
    event["contact"] = {**event["contact"], "opt_in": False}
    send_id = ingest_one(store, catalogue, event, "survey")
    sender = InMemorySender()
    assert deliver(send_id, make_deps(store, catalogue, renderer, sender)) == Skipped("no_consent")


def test_stale_password_reset_is_recorded_not_sent(store: Store, catalogue: Catalogue) -> None:
    """A password reset older than its 15-minute freshness is recorded as skipped: stale."""
    event = sample(catalogue, "password_reset")
    event["occurred_at"] = (datetime.now(UTC) - timedelta(minutes=20)).isoformat()
    result = ingest_event(store, catalogue, event)
    assert result is not None and result.to_enqueue == []
    [row] = store.sends_for_event(event["id"])
    assert (row["state"], row["reason"]) == ("skipped", "stale")


def test_older_event_does_not_overwrite_newer_contact(store: Store, catalogue: Catalogue) -> None:
    """Events arriving out of order keep the newest address and count every purchase."""
    newer = sample(catalogue, "purchase_confirmation", id="p-new")
    older = sample(catalogue, "purchase_confirmation", id="p-old")
    older["occurred_at"] = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    older["contact"] = {**older["contact"], "email": "old-address@example.org"}
    ingest_event(store, catalogue, newer)
    ingest_event(store, catalogue, older)
    with store.pool.connection() as conn:
        contact = conn.execute("SELECT * FROM contacts WHERE id = %s", (newer["contact"]["id"],)).fetchone()
    assert contact is not None
    assert contact["email"] == newer["contact"]["email"]
    assert contact["purchases"] == 2


def test_abandoned_claim_is_taken_over_after_the_lease(store: Store, catalogue: Catalogue) -> None:
    """A send left 'sending' by a dead worker can be claimed again only after the lease."""
    send_id = ingest_one(store, catalogue, sample(catalogue, "welcome"), "welcome")
    assert store.claim(send_id) is not None
    assert store.claim(send_id) is None
    with store.pool.connection() as conn:
        conn.execute("UPDATE sends SET claimed_at = now() - interval '1 hour' WHERE id = %s", (send_id,))
    reclaimed = store.claim(send_id)
    assert reclaimed is not None and reclaimed["attempts"] == 2


@pytest.mark.parametrize("flow", ["invoice"])
def test_invoice_carries_its_pdf(flow: str, store: Store, catalogue: Catalogue, renderer: Renderer) -> None:
    """The invoice flow attaches the PDF from the event, for SES to build into the message."""
    sender = InMemorySender()
    event = sample(catalogue, flow)
    send_id = ingest_one(store, catalogue, event, flow)
    assert isinstance(deliver(send_id, make_deps(store, catalogue, renderer, sender)), Sent)
    [attachment] = sender.sent[0]["Content"]["Simple"]["Attachments"]
    assert attachment["FileName"] == event["data"]["pdf"]["filename"]
    assert attachment["ContentType"] == "application/pdf"
    assert attachment["RawContent"] == base64.b64decode(event["data"]["pdf"]["content_base64"])


def test_replaying_a_dead_letter_never_resends(store: Store, catalogue: Catalogue, renderer: Renderer) -> None:
    """A failed send can be reopened once for a replay; a sent one cannot be reopened at all."""
    sender = InMemorySender()
    deps = make_deps(store, catalogue, renderer, sender)
    sent_id = ingest_one(store, catalogue, sample(catalogue, "order_confirmation"), "order_confirmation")
    assert isinstance(deliver(sent_id, deps), Sent)
    sender.fail_next(PermanentSendError("MessageRejected"))
    failed_id = ingest_one(store, catalogue, sample(catalogue, "shipping_confirmation"), "shipping_confirmation")
    assert isinstance(deliver(failed_id, deps), Failed)
    [letter] = store.dead_letters()
    assert store.reopen_send(letter["id"], sent_id) is None  # already sent: nothing to replay
    item = store.reopen_send(letter["id"], failed_id)
    assert item is not None and item.send_id == failed_id
    assert isinstance(deliver(failed_id, deps), Sent)
    assert store.reopen_send(letter["id"], failed_id) is None
    assert store.dead_letters() == []  # replayed letters leave the open list
    assert len(sender.sent) == 2


def test_a_send_claimed_elsewhere_is_looked_at_again_after_the_lease(
    store: Store, catalogue: Catalogue, renderer: Renderer
) -> None:
    """A redelivered message for a send another worker holds comes back when the lease ends, not never."""
    send_id = ingest_one(store, catalogue, sample(catalogue, "welcome"), "welcome")
    assert store.claim(send_id) is not None  # a worker took it, and (say) died
    outcome = deliver(send_id, make_deps(store, catalogue, renderer, InMemorySender()))
    assert isinstance(outcome, Retry) and outcome.reason == "in_flight"
    assert 100 < outcome.delay_s <= store.lease_s + 1


INLINE = frozenset({"send.critical", "send.transactional"})


@pytest.mark.parametrize("suppressed", [False, True])
def test_a_send_claimed_at_ingest_is_the_row_a_claim_returns(
    suppressed: bool, store: Store, catalogue: Catalogue
) -> None:
    """The ledger row of a send recorded claimed is the one LedgerStore.claim gives for it:
    same columns, same values (event payload as Postgres holds it, contact, suppression)."""
    event = sample(catalogue, "purchase_confirmation")
    if suppressed:
        store.suppress(event["contact"]["email"], "complaint")
    result = ingest_event(store, catalogue, event, claim_queues=INLINE)
    assert result is not None
    [claimed] = result.claimed
    assert claimed["state"] == "sending" and claimed["attempts"] == 1 and claimed["claimed_at"] is not None
    with store.pool.connection() as conn:  # let it go, and claim it the usual way
        conn.execute("UPDATE sends SET state = 'pending', attempts = 0, claimed_at = NULL WHERE id = %s",
                     (claimed["id"],))
    again = store.claim(str(claimed["id"]))
    assert again is not None and set(again) == set(claimed)
    moving = {"claimed_at", "updated_at"}
    assert {k: v for k, v in claimed.items() if k not in moving} == {k: v for k, v in again.items() if k not in moving}
    assert (claimed["suppressed"] == "complaint") is suppressed


def test_only_an_events_first_inline_send_is_claimed_at_ingest(
    store: Store, catalogue: Catalogue, renderer: Renderer
) -> None:
    """A signup has two emails due now (welcome, and the onboarding series' first): with both
    queues inline, the first comes back claimed and goes out with deliver_claimed; the second
    stays pending, to be claimed on its own, so a failure on the first never holds it up."""
    event = sample(catalogue, "welcome")
    # At midday for the contact whatever the hour of the run: the onboarding has quiet hours.
    event["contact"]["timezone"] = daytime_zone()
    result = ingest_event(store, catalogue, event, claim_queues=INLINE | {"send.bulk"})
    assert result is not None and len(result.claimed) == 1 and len(result.to_enqueue) == 1
    sends = {str(r["id"]): r for r in store.sends_for_event(event["id"])}
    assert sends[result.to_enqueue[0].send_id]["state"] == "pending"
    sender = InMemorySender()
    outcome = deliver_claimed(result.claimed[0], make_deps(store, catalogue, renderer, sender))
    assert isinstance(outcome, Sent) and len(sender.sent) == 1
    assert state(store, str(result.claimed[0]["id"]))["state"] == "sent"
    assert isinstance(deliver(result.to_enqueue[0].send_id, make_deps(store, catalogue, renderer, sender)), Sent)


def test_a_send_claimed_at_ingest_is_held_by_its_lease(store: Store, catalogue: Catalogue) -> None:
    """Recorded claimed, a send is not claimed again while its lease runs — not even by the
    same event delivered twice — and is taken over once the lease is over."""
    event = sample(catalogue, "order_confirmation")
    result = ingest_event(store, catalogue, event, claim_queues=INLINE)
    assert result is not None
    send_id = str(result.claimed[0]["id"])
    again = ingest_event(store, catalogue, event, claim_queues=INLINE)
    assert again is not None and again.duplicate and again.claimed == []
    assert [e.send_id for e in again.to_enqueue] == [send_id]  # offered to the claim, which waits
    assert store.claim(send_id) is None and (store.lease_left(send_id) or 0) > 100
    with store.pool.connection() as conn:
        conn.execute("UPDATE sends SET claimed_at = now() - interval '1 hour' WHERE id = %s", (send_id,))
    taken = store.claim(send_id)
    assert taken is not None and taken["attempts"] == 2 and taken["ambiguous_age_s"] is not None


def test_ingest_task_sends_transactional_mail_itself_and_queues_bulk(
    store: Store, catalogue: Catalogue, renderer: Renderer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ingest task delivers due-now transactional sends itself and puts bulk ones on send.bulk."""
    from workers import runtime, tasks

    sender = InMemorySender()
    queued: list[tuple[str, str]] = []
    monkeypatch.setattr(runtime, "_deps", make_deps(store, catalogue, renderer, sender))
    # The broker is the process boundary: record what would be published instead.
    monkeypatch.setattr(tasks.deliver_send, "apply_async",
                        lambda args, queue, routing_key, **_: queued.append((args[0], queue)))
    order = sample(catalogue, "order_confirmation")
    assert tasks.ingest.run(order) == "ingested"
    assert len(sender.sent) == 1 and queued == []
    legal = sample(catalogue, "legal_update")
    tasks.ingest.run(legal)
    [row] = store.sends_for_event(legal["id"])
    assert queued == [(str(row["id"]), "send.bulk")] and len(sender.sent) == 1


def test_an_ambiguous_send_is_resolved_by_its_ses_send_notification(
    store: Store, catalogue: Catalogue, renderer: Renderer
) -> None:
    """A timeout after SES may have accepted waits for SES's Send notification, and is not sent twice."""
    from workers.errors import AmbiguousSendError

    sender = InMemorySender()
    deps = make_deps(store, catalogue, renderer, sender, ambiguous_wait_s=60)
    send_id = ingest_one(store, catalogue, sample(catalogue, "welcome"), "welcome")
    sender.fail_next(AmbiguousSendError("read timeout"))
    first = deliver(send_id, deps)
    assert isinstance(first, Retry) and first.ambiguous and first.delay_s == 60
    waiting = deliver(send_id, deps)  # no notification yet: wait, do not send
    assert isinstance(waiting, Retry) and waiting.ambiguous and sender.sent == []
    # SES's Send notification arrives, as documented, and the reporting side ingests it.
    import json

    from declic.settings import REPO_ROOT
    from reporting.ingest import Received, ingest

    notification = json.loads((REPO_ROOT / "tests/data/ses/event_send.json").read_text())
    notification["mail"]["messageId"] = "ses-accepted-1"
    notification["mail"]["timestamp"] = datetime.now(UTC).isoformat()
    notification["mail"]["tags"] = {"send_id": [send_id], "flow": ["welcome"], "step": ["main"], "variant": ["a"]}
    ingest(store.pool, [Received(json.dumps(notification))], "test")
    assert deliver(send_id, deps) == Sent("ses-accepted-1")
    assert sender.sent == [] and state(store, send_id)["ses_message_id"] == "ses-accepted-1"


def test_an_ambiguous_send_goes_once_the_wait_is_over(store: Store, catalogue: Catalogue, renderer: Renderer) -> None:
    """Without a Send notification after the wait, SES did not accept it: the send goes out once."""
    from workers.errors import AmbiguousSendError

    sender = InMemorySender()
    deps = make_deps(store, catalogue, renderer, sender, ambiguous_wait_s=0)
    send_id = ingest_one(store, catalogue, sample(catalogue, "welcome"), "welcome")
    sender.fail_next(AmbiguousSendError("read timeout"))
    assert isinstance(deliver(send_id, deps), Retry)
    assert isinstance(deliver(send_id, deps), Sent) and len(sender.sent) == 1


def test_an_unreachable_rate_governor_is_a_retry_not_a_crash(
    store: Store, catalogue: Catalogue, renderer: Renderer
) -> None:
    """When Redis (the shared rate) is down, the send is retried later and nothing is sent meanwhile."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry as RedisRetry

    from workers.governor import Governor, GovernorConfig

    sender = InMemorySender()
    # Refused at once, without redis-py's default three reconnections with backoff (3 s): the
    # governor sees the same ConnectionError either way.
    unreachable = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=RedisRetry(NoBackoff(), 0))
    down = Governor(unreachable, GovernorConfig(max_rate=10))
    deps = make_deps(store, catalogue, renderer, sender, governor=down)
    send_id = ingest_one(store, catalogue, sample(catalogue, "welcome"), "welcome")
    outcome = deliver(send_id, deps)
    assert isinstance(outcome, Retry) and outcome.reason.startswith("rate_governor_unavailable")
    assert sender.sent == [] and state(store, send_id)["state"] == "retry"


def test_sends_travel_a_few_to_a_message_and_each_is_delivered_on_its_own(
    store: Store, catalogue: Catalogue, renderer: Renderer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """enqueue groups sends per queue (critical alone, bulk 10 to a message); the batch task
    delivers each, sends a transient failure back alone with its backoff, and hands what it did
    not reach within its time budget back to the queue."""
    from workers import runtime, tasks

    published: list[tuple[str, Any, str]] = []
    monkeypatch.setattr(tasks.deliver_send, "apply_async",
                        lambda args, queue, routing_key, **kw: published.append(("one", args, queue)))
    monkeypatch.setattr(tasks.deliver_sends, "apply_async",
                        lambda args, queue, routing_key, **kw: published.append(("many", args, queue)))
    bulk = [Enqueue(f"b{n}", "send.bulk") for n in range(15)]
    tasks.enqueue([Enqueue("c1", "send.critical"), *bulk, Enqueue("c2", "send.critical")])
    assert published == [("one", ("c1",), "send.critical"), ("one", ("c2",), "send.critical"),
                         ("many", ([f"b{n}" for n in range(10)], "send.bulk"), "send.bulk"),
                         ("many", ([f"b{n}" for n in range(10, 15)], "send.bulk"), "send.bulk")]

    sender = InMemorySender()
    monkeypatch.setattr(runtime, "_deps", make_deps(store, catalogue, renderer, sender))
    ids = [ingest_one(store, catalogue, sample(catalogue, "order_confirmation", id=f"batch-{n}")) for n in range(4)]
    published.clear()
    sender.fail_next(TransientSendError("503"))
    label = tasks.deliver_sends.run(ids, "send.transactional")
    assert label == "retry 1, sent 3" and len(sender.sent) == 3
    [(kind, args, queue)] = published
    assert (kind, args, queue) == ("one", (ids[0],), "send.transactional")
    assert state(store, ids[0])["state"] == "retry"
    assert tasks.deliver_sends.run(ids, "send.transactional") == "not_claimed 3, sent 1"

    more = [ingest_one(store, catalogue, sample(catalogue, "order_confirmation", id=f"late-{n}")) for n in range(3)]
    published.clear()
    monkeypatch.setattr(tasks, "SEND_BATCH_BUDGET_S", 0.0)
    assert tasks.deliver_sends.run(more, "send.transactional") == "handed_on 2, sent 1"
    assert published == [("many", (more[1:], "send.transactional"), "send.transactional")]


def test_a_batch_message_enqueues_and_forgets_once_for_all_its_events(
    store: Store, catalogue: Catalogue, renderer: Renderer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An API batch: every event ingested (the invalid one a dead letter), their due sends put on
    the queues a few to a message, and all of them forgotten in the outbox in one call."""
    from workers import runtime, tasks

    class Outbox:
        def __init__(self) -> None:
            self.calls: list[list[str]] = []

        def done_many(self, refs: list[str]) -> None:
            self.calls.append(list(refs))

    outbox = Outbox()
    published: list[tuple[Any, str]] = []
    monkeypatch.setattr(runtime, "_deps", make_deps(store, catalogue, renderer, InMemorySender()))
    monkeypatch.setattr(runtime, "outbox", lambda: outbox)
    monkeypatch.setattr(tasks.deliver_sends, "apply_async",
                        lambda args, queue, routing_key, **kw: published.append((args, queue)))
    monkeypatch.setattr(tasks.deliver_send, "apply_async",
                        lambda args, queue, routing_key, **kw: published.append((args, queue)))
    events = [sample(catalogue, "order_confirmation", id=f"api-{n}") for n in range(3)]
    invalid = {"id": "api-bad", "type": "purchase"}
    assert tasks.ingest_batch.run([*events, invalid]) == "3 ingested, 1 invalid"
    assert outbox.calls == [["api-0", "api-1", "api-2", "api-bad"]]
    [(args, queue)] = published
    assert queue == "send.transactional" and len(args[0]) == 3


def test_an_unexpected_ingest_failure_is_a_dead_letter_not_a_lost_event(
    store: Store, catalogue: Catalogue, renderer: Renderer, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A fault of ours while ingesting (a bug, not the event's) keeps the event as a dead letter
    naming the error and where it was raised, for `declic dlq replay`; the log line holds neither
    the error's message nor the address. The database being down is still retried."""
    import psycopg

    from workers import runtime, tasks

    monkeypatch.setattr(runtime, "_deps", make_deps(store, catalogue, renderer, InMemorySender()))
    order = sample(catalogue, "order_confirmation", id="evt-unexpected")

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError(f"boom near {order['contact']['email']}")

    monkeypatch.setattr(tasks, "ingest_event", broken)
    assert tasks.ingest.run(order) == "failed"
    [letter] = [d for d in store.dead_letters(reason="ingest_error") if d["ref"] == "evt-unexpected"]
    assert letter["kind"] == "event" and letter["payload"] == order
    assert letter["reason"].startswith("ingest_error: RuntimeError at test_pipeline.py:")
    [line] = [x for x in capsys.readouterr().out.splitlines() if "event_failed" in x]
    assert "RuntimeError" in line and "evt-unexpected" in line
    assert order["contact"]["email"] not in line and "boom" not in line

    def down(*args: Any, **kwargs: Any) -> None:
        raise psycopg.OperationalError("the database is restarting")

    monkeypatch.setattr(tasks, "ingest_event", down)
    with pytest.raises(psycopg.OperationalError):
        tasks.ingest_one(order, inline=True)


def test_a_worker_that_cannot_build_its_clients_keeps_the_message(monkeypatch: pytest.MonkeyPatch) -> None:
    """A misconfigured worker (here: no AWS region) retries its tasks with backoff, keeping their
    messages, and says what to set; it neither fails nor acknowledges them."""
    from botocore.exceptions import NoRegionError

    from workers import runtime, tasks

    def unconfigured(settings: Any) -> Deps:
        raise NoRegionError()

    monkeypatch.setattr(runtime, "_deps", None)
    monkeypatch.setattr(runtime, "build_deps", unconfigured)
    with pytest.raises(tasks.WorkerNotReady, match="NoRegionError: You must specify a region"):
        tasks.ingest_one({"id": "evt-waiting"}, inline=True)
    for task in (tasks.ingest, tasks.ingest_batch, tasks.deliver_send, tasks.deliver_sends):
        assert tasks.WorkerNotReady in task.autoretry_for


def test_celery_per_task_lines_are_quiet_at_info_and_retries_still_say_so(capsys: pytest.CaptureFixture[str]) -> None:
    """At INFO, Celery's "received" and "succeeded" lines (which repeat event_ingested and
    email_sent) are off; a retried task still logs task_retrying with the error's class only.
    DEBUG shows Celery's lines again."""
    import logging

    import psycopg
    import structlog
    from celery import signals

    from declic.logs import configure
    from workers import tasks

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure("INFO", "json")
        assert not logging.getLogger("celery.app.trace").isEnabledFor(logging.INFO)
        assert not logging.getLogger("celery.worker.strategy").isEnabledFor(logging.INFO)
        assert logging.getLogger("celery.app.trace").isEnabledFor(logging.WARNING)
        down = psycopg.OperationalError("connection to postgresql://declic:s3cret@db failed")
        signals.task_retry.send(sender=tasks.ingest, request=None, reason=down, einfo=None)
        [line] = [x for x in capsys.readouterr().err.splitlines() if "task_retrying" in x]
        assert "declic.ingest" in line and "OperationalError" in line and "s3cret" not in line
        configure("DEBUG", "json")
        assert logging.getLogger("celery.app.trace").isEnabledFor(logging.INFO)
    finally:  # the rest of the suite runs with structlog's and logging's defaults
        structlog.reset_defaults()
        root.handlers[:], root.level = handlers, level
        for name in ("celery.app.trace", "celery.worker.strategy"):
            logging.getLogger(name).setLevel(logging.NOTSET)


def test_a_log_line_stays_one_line_whatever_an_event_id_holds() -> None:
    """U+0085, U+2028 and U+2029 are valid in JSON and left raw by orjson, but split lines for
    str.splitlines and JavaScript: a JSON log line escapes them and reads back the same."""
    import json

    from declic.logs import _json_line

    for value in ({"event_id": "a\x85b\u2028c\u2029d", "n": 1}, {"event_id": "déjà — vu"}):
        line = _json_line(value)
        assert line.splitlines() == [line] and json.loads(line) == value
