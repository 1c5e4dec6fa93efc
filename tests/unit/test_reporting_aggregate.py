"""Ingestion and aggregation on real Postgres, checked against figures computed by hand."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from reporting.aggregate import aggregate
from reporting.db import Pool
from reporting.ingest import Received, ingest
from workers.store import Store

D = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
UNSUB = "https://shop.example.com/v1/unsubscribe?t=abc"


def iso(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def record(kind: str, mid: str, to: str, at: datetime, *, flow: str = "order_confirmation", variant: str = "a",
           sent: datetime = D, tags: bool = True, **detail: Any) -> dict[str, Any]:
    """An SES event-publishing record as SES writes it, for message ``mid`` to ``to``."""
    mail: dict[str, Any] = {"timestamp": iso(sent), "source": "orders@shop.example.com", "messageId": mid,
                            "destination": [to], "commonHeaders": {"subject": f"Subject of {flow} {variant}"}}
    if tags:
        mail["tags"] = {"flow": [flow], "step": ["main"], "variant": [variant], "send_id": [str(uuid.uuid4())]}
    key = {"Send": "send", "Delivery": "delivery", "Bounce": "bounce", "Complaint": "complaint",
           "Open": "open", "Click": "click"}[kind]
    body: dict[str, Any] = {"timestamp": iso(at), **detail} if kind != "Send" else {}
    if kind == "Delivery":
        body["recipients"] = [to]
    if kind == "Bounce":
        body["bouncedRecipients"] = [{"emailAddress": to}]
    if kind == "Complaint":
        body["complainedRecipients"] = [{"emailAddress": to}]
    return {"eventType": kind, "mail": mail, key: body}


def body(rec: dict[str, Any], sns_id: str | None = None) -> Received:
    envelope = {"Type": "Notification", "MessageId": sns_id or str(uuid.uuid4()), "TopicArn": "arn:aws:sns:x:1:t",
                "Message": json.dumps(rec), "Timestamp": iso(D)}
    return Received(json.dumps(envelope))


HUMAN: dict[str, Any] = {"userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) Mobile/15E148",
         "ipAddress": "198.51.100.7"}
MPP: dict[str, Any] = {"userAgent": "Mozilla/5.0", "ipAddress": "17.1.2.3"}


def scenario() -> tuple[list[Received], list[Received]]:
    """Seven messages; the first batch holds engagement that arrived before its delivery."""
    s = timedelta(seconds=1)
    dup_delivery = record("Delivery", "m1", "a1@example.org", D + 2 * s)
    early = [
        body(record("Open", "m6", "a6@example.org", D + timedelta(hours=2), **HUMAN)),
        body(record("Click", "m1", "a1@example.org", D + timedelta(minutes=65), link="https://shop.example.com/o/1",
                    **HUMAN)),
    ]
    rest = [body(record("Send", m, f"a{m[1]}@example.org", D)) for m in ("m1", "m2", "m3", "m4", "m5", "m6")]
    rest += [
        body(dup_delivery, "dup-sns-id"), body(dup_delivery, "dup-sns-id"),  # SNS redelivery, same id
        body(dup_delivery),  # same notification, through the other subscription (new SNS id)
        body(record("Open", "m1", "a1@example.org", D + timedelta(hours=1), **HUMAN)),
        body(record("Delivery", "m2", "a2@example.org", D + 2 * s)),
        body(record("Open", "m2", "a2@example.org", D + 4 * s, **MPP)),
        body(record("Delivery", "m3", "a3@example.org", D + 2 * s)),
        body(record("Open", "m3", "a3@example.org", D + 5 * s, **HUMAN)),  # 3 s after delivery: a scanner
        body(record("Click", "m3", "a3@example.org", D + 6 * s, link=UNSUB, **HUMAN)),
        body(record("Bounce", "m4", "a4@example.org", D + 3 * s, bounceType="Permanent", bounceSubType="General")),
        body(record("Bounce", "m5", "a5@example.org", D + 3 * s, bounceType="Transient", bounceSubType="MailboxFull")),
        body(record("Delivery", "m6", "a6@example.org", D + 2 * s)),
        body(record("Complaint", "m6", "a6@example.org", D + timedelta(hours=3), complaintFeedbackType="abuse")),
        body(record("Send", "m7", "a7@example.org", D, flow="survey", variant="b")),
        body(record("Delivery", "m7", "a7@example.org", D + 2 * s, flow="survey", variant="b")),
        Received("{not json", "sqs-broken-1"),
    ]
    return early, rest


def daily(db: Pool, flow: str = "order_confirmation") -> dict[str, Any]:
    with db.connection() as conn:
        rows = conn.execute("SELECT * FROM reporting.flow_daily WHERE flow = %s", (flow,)).fetchall()
    assert len(rows) == 1, rows
    return rows[0]


def test_figures_match_the_hand_count(db: Pool) -> None:
    """Sent, delivered, bounces, complaints, human and raw opens, clicks and rates are what we counted."""
    early, rest = scenario()
    ingest(db, early, "sqs")
    aggregate(db)
    ingest(db, rest, "sqs")
    aggregate(db)
    row = daily(db)
    assert (row["day"], row["step"], row["variant"], row["locale"]) == (D.date(), "main", "a", "unknown")
    counts = {k: row[k] for k in ("sent", "delivered", "hard_bounces", "soft_bounces", "complaints", "rejects",
                                  "unique_opens", "human_opens", "machine_opens", "unique_clicks", "unsubscribes")}
    assert counts == {"sent": 6, "delivered": 4, "hard_bounces": 1, "soft_bounces": 1, "complaints": 1,
                      "rejects": 0, "unique_opens": 4, "human_opens": 2, "machine_opens": 2,
                      "unique_clicks": 1, "unsubscribes": 1}
    rates = {k: row[k] for k in ("delivery_rate", "bounce_rate", "complaint_rate", "open_rate",
                                 "human_open_rate", "click_rate", "click_to_open_rate", "unsubscribe_rate")}
    assert rates == {"delivery_rate": Decimal("0.6667"), "bounce_rate": Decimal("0.3333"),
                     "complaint_rate": Decimal("0.2500"), "open_rate": Decimal("1.0000"),
                     "human_open_rate": Decimal("0.5000"), "click_rate": Decimal("0.2500"),
                     "click_to_open_rate": Decimal("0.2500"), "unsubscribe_rate": Decimal("0.2500")}
    survey = daily(db, "survey")
    assert (survey["variant"], survey["sent"], survey["delivered"]) == ("b", 1, 1)


def test_duplicates_are_stored_once_and_garbage_is_dead_lettered(db: Pool) -> None:
    """A redelivered SNS message and the same notification with a new SNS id add nothing; bad JSON is kept."""
    early, rest = scenario()
    first = ingest(db, early + rest, "sqs")
    again = ingest(db, early + rest, "sqs")
    assert first.dead_letters == 1 and again.stored == 0
    with db.connection() as conn:
        deliveries = conn.execute(
            "SELECT count(*) AS n FROM reporting.email_events WHERE ses_message_id = 'm1' AND event_type = 'delivery'"
        ).fetchone()
        dead = conn.execute("SELECT source, ref, reason, body FROM reporting.ingest_dead_letters").fetchall()
    assert deliveries == {"n": 1}
    assert dead[0]["ref"] == "sqs-broken-1" and dead[0]["reason"].startswith("not JSON")
    assert dead[0]["body"] == "{not json"


def test_aggregation_is_idempotent(db: Pool) -> None:
    """A second run finds nothing to do and leaves every reporting row exactly as it was."""
    early, rest = scenario()
    ingest(db, early + rest, "sqs")
    aggregate(db)

    def snapshot() -> list[Any]:
        with db.connection() as conn:
            return [conn.execute(f"SELECT * FROM reporting.{t} ORDER BY 1, 2").fetchall()
                    for t in ("flow_daily", "flow_trends", "insights")]

    before = snapshot()
    result = aggregate(db)
    assert result.groups == 0 and result.insights == 0
    assert snapshot() == before
    full = aggregate(db, full=True)
    assert full.groups == 2
    after_full = snapshot()
    assert [[{k: v for k, v in r.items() if k != "updated_at"} for r in t] for t in after_full] == \
        [[{k: v for k, v in r.items() if k != "updated_at"} for r in t] for t in before]


def test_hard_bounces_and_complaints_are_suppressed(db: Pool) -> None:
    """The send path's suppression list gets hard bounces and complaints, not soft bounces."""
    early, rest = scenario()
    result = ingest(db, early + rest, "sqs")
    assert result.suppressed == 2
    with db.connection() as conn:
        rows = conn.execute("SELECT email, reason FROM suppressions ORDER BY email").fetchall()
    assert [(r["email"], r["reason"]) for r in rows] == [("a4@example.org", "hard_bounce"),
                                                         ("a6@example.org", "complaint")]


def test_trends_roll_seven_and_twenty_eight_days(db: Pool) -> None:
    """Rolling windows sum the right days and week-over-week compares with the 7 days before."""
    bodies = []
    # One delivered message a day for 14 days; opened (by a person) only in the first week.
    for i in range(14):
        sent = D + timedelta(days=i)
        mid = f"t{i}"
        bodies.append(body(record("Delivery", mid, "t@example.org", sent + timedelta(seconds=2), sent=sent)))
        if i < 7:
            bodies.append(body(record("Open", mid, "t@example.org", sent + timedelta(hours=1), sent=sent, **HUMAN)))
    ingest(db, bodies, "sqs")
    aggregate(db)
    with db.connection() as conn:
        rows = conn.execute("SELECT * FROM reporting.flow_trends WHERE flow = 'order_confirmation' ORDER BY day"
                            ).fetchall()
    assert len(rows) == 14
    last = rows[-1]
    assert (last["sent_7d"], last["sent_28d"], last["sent_prev_7d"]) == (7, 14, 7)
    assert last["human_open_rate_7d"] == Decimal("0") and last["human_open_rate_prev_7d"] == Decimal("1")
    assert last["human_open_rate_wow"] == Decimal("-1") and last["sent_wow"] == Decimal("0")
    assert last["human_open_rate_28d"] == Decimal("0.5")
    assert rows[6]["sent_7d"] == 7 and rows[6]["sent_prev_7d"] == 0 and rows[6]["sent_wow"] is None


def test_a_notification_without_tags_joins_its_send_by_message_id(db: Pool, store: Store) -> None:
    """Identity feedback carries no tags: the message id finds the send, its flow and locale."""
    with db.connection() as conn:
        conn.execute("INSERT INTO events (id, type, occurred_at, contact_id, payload) VALUES"
                     " ('e1', 'order_confirmed', now(), 'c1', '{}')")
        conn.execute("INSERT INTO contacts (id, email, profile_at) VALUES ('c1', 'j@example.org', now())")
        conn.execute(
            "INSERT INTO sends (id, send_key, event_id, contact_id, flow, step, variant, category, queue, state,"
            " due_at, locale, subject, ses_message_id) VALUES ('6f1f4a4e-8a0b-4d55-9d0a-1b2c3d4e5f60', 'k1', 'e1',"
            " 'c1', 'order_confirmation', 'main', 'b', 'transactional', 'send.transactional', 'sent', now(),"
            " 'fr-FR', 'Votre commande', 'm-untagged')")
    ingest(db, [body(record("Delivery", "m-untagged", "j@example.org", D, tags=False))], "sqs")
    aggregate(db)
    with db.connection() as conn:
        event = conn.execute("SELECT * FROM reporting.email_events").fetchone()
    assert event is not None
    assert (event["flow"], event["variant"], event["locale"], event["contact_id"], event["subject"]) == (
        "order_confirmation", "b", "fr-FR", "c1", "Votre commande")
    assert daily(db)["locale"] == "fr-FR"


def test_repeated_password_resets_per_contact_and_day(db: Pool) -> None:
    """More than three reset requests in a UTC day flags the contact, with the daily trend."""
    with db.connection() as conn:
        conn.execute("INSERT INTO contacts (id, email, profile_at) VALUES ('c1', 'x@example.org', now()),"
                     " ('c2', 'y@example.org', now())")
        for i in range(5):
            conn.execute("INSERT INTO events (id, type, occurred_at, contact_id, payload)"
                         " VALUES (%s, 'password_reset', %s, 'c1', '{}')", (f"r1-{i}", D + timedelta(minutes=i)))
        for i in range(2):
            conn.execute("INSERT INTO events (id, type, occurred_at, contact_id, payload)"
                         " VALUES (%s, 'password_reset', %s, 'c2', '{}')", (f"r2-{i}", D + timedelta(minutes=i)))
    result = aggregate(db)
    assert result.reset_days == 1
    with db.connection() as conn:
        resets = conn.execute("SELECT contact_id, requests, sent FROM reporting.password_resets_daily"
                              " ORDER BY contact_id").fetchall()
        insight = conn.execute("SELECT * FROM reporting.insights WHERE kind = 'repeated_password_resets'").fetchone()
    assert [(r["contact_id"], r["requests"], r["sent"]) for r in resets] == [("c1", 5, 0), ("c2", 2, 0)]
    assert insight is not None and insight["evidence"]["contacts"] == 1
    assert insight["evidence"]["top_contacts"] == [{"contact_id": "c1", "requests": 5}]
    assert insight["evidence"]["trend"] == [{"day": D.date().isoformat(), "contacts": 1}]


def _volume(flow: str, variant: str, day: datetime, n: int, opened: int, *, bounced: int = 0) -> list[Received]:
    out = []
    for i in range(n):
        mid = f"{flow}-{variant}-{day:%m%d}-{i}"
        to = f"{mid}@example.org"
        if i < bounced:
            out.append(body(record("Bounce", mid, to, day + timedelta(seconds=3), flow=flow, variant=variant,
                                   sent=day, bounceType="Permanent")))
            continue
        out.append(body(record("Delivery", mid, to, day + timedelta(seconds=2), flow=flow, variant=variant, sent=day)))
        if i < bounced + opened:
            out.append(body(record("Open", mid, to, day + timedelta(hours=1), flow=flow, variant=variant,
                                   sent=day, **HUMAN)))
    return out


def test_insights_flag_drops_bounces_and_winning_variants(db: Pool) -> None:
    """A significant open-rate drop, a bounce rate over 5 % and a significant A/B winner are flagged."""
    bodies: list[Received] = []
    for week in range(4):  # baseline weeks: 50 % opens; the last week: 20 %
        day = D + timedelta(days=7 * week)
        bodies += _volume("welcome", "a", day, 100, 50 if week < 3 else 20)
    last = D + timedelta(days=21)
    bodies += _volume("survey", "a", last, 100, 60) + _volume("survey", "b", last, 100, 30)
    bodies += _volume("invoice", "a", last, 40, 10, bounced=4)
    ingest(db, bodies, "sqs")
    aggregate(db)
    with db.connection() as conn:
        found = {r["key"]: r for r in conn.execute("SELECT * FROM reporting.insights").fetchall()}
    drop = found[f"engagement_drop:welcome:human_open_rate:{last.date()}"]
    assert drop["evidence"]["current"] == 0.2 and drop["evidence"]["baseline"] == 0.5
    assert drop["evidence"]["copy"][0]["subject"] == "Subject of welcome a"
    winner = found[f"variant_winner:survey:main:{last.date()}"]
    assert winner["evidence"]["winner"] == "a" and winner["evidence"]["p_value"] < 0.05
    bounce = found[f"bounce_rate:invoice:{last.date()}"]
    assert bounce["severity"] == "warning" and bounce["evidence"]["rate_7d"] == 0.1


def test_the_documented_analyst_queries_run(db: Pool) -> None:
    """Every SQL example in the README runs against the schema as migrated."""
    import re

    from declic.settings import REPO_ROOT

    text = (REPO_ROOT / "README.md").read_text()
    blocks = re.findall(r"```sql\n(.*?)```", text, re.S)
    assert len(blocks) >= 3
    early, rest = scenario()
    ingest(db, early + rest, "sqs")
    aggregate(db)
    with db.connection() as conn:
        for block in blocks:
            for statement in filter(str.strip, block.split(";")):
                conn.execute(statement)
