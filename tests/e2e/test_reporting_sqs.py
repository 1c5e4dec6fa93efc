"""The SQS path end to end: real sends through the SES stand-in, simulated engagement, moto SQS, Postgres."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from declic.services import SES_DOMAIN, MotoStandIn, Services
from reporting.aggregate import aggregate
from reporting.db import Pool
from reporting.simulator import Behaviour, from_send_requests, notifications, publish
from reporting.sqs import drain
from reporting.trend import trend_rows, trend_table

pytestmark = pytest.mark.e2e


def queue(services: Services, visibility_s: int = 30) -> str:
    url: str = services.moto.client("sqs").create_queue(
        QueueName=f"ses-events-{uuid.uuid4().hex[:8]}", Attributes={"VisibilityTimeout": str(visibility_s)},
    )["QueueUrl"]
    return url


def send_emails(services: Services, count: int, flow: str = "order_confirmation") -> set[str]:
    """Send through the SES stand-in the way the send worker does: configuration set and tags."""
    sesv2 = services.moto.client("sesv2")
    ids = set()
    for i in range(count):
        response = sesv2.send_email(
            FromEmailAddress=f"Maison Lumière <orders@{SES_DOMAIN}>",
            Destination={"ToAddresses": [f"customer{i}@example.org"]},
            ConfigurationSetName="declic",
            EmailTags=[{"Name": "flow", "Value": flow}, {"Name": "step", "Value": "main"},
                       {"Name": "variant", "Value": "a"}, {"Name": "send_id", "Value": str(uuid.uuid4())}],
            Content={"Simple": {"Subject": {"Data": "Votre commande MLM-10482"},
                                "Body": {"Text": {"Data": "Merci"},
                                         "Html": {"Data": '<a href="https://shop.example.com/o/1">Suivre</a>'}}}},
        )
        ids.add(response["MessageId"])
    return ids


def ours(services: Services, ids: set[str]) -> list[dict[str, Any]]:
    return [r for r in services.moto.send_requests() if r.get("MessageId") in ids]


def test_simulated_engagement_flows_through_sqs_into_the_trend_tables(services: Services, db: Pool) -> None:
    """Every simulated notification for real sends is stored once, the queue ends empty, trends appear."""
    ids = send_emails(services, 40)
    messages = from_send_requests(ours(services, ids))
    assert len(messages) == 40 and messages[0].links == ("https://shop.example.com/o/1",)
    bodies = notifications(messages, seed=5, behaviour=Behaviour(duplicate=0.1))
    url = queue(services)
    sqs = services.moto.client("sqs")
    assert publish(sqs, url, bodies) == len(bodies)

    result = drain(db, sqs, url, wait_s=1, max_seconds=60)
    assert result.received == len(bodies) and result.deleted == len(bodies)
    assert result.dead_letters == 0 and result.duplicates > 0  # the simulator's redeliveries
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "0"
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "0"

    aggregate(db)
    with db.connection() as conn:
        stored = conn.execute("SELECT count(DISTINCT ses_message_id) AS n FROM reporting.email_events").fetchone()
        daily = conn.execute("SELECT sum(sent) AS sent FROM reporting.flow_daily WHERE flow = 'order_confirmation'"
                             ).fetchone()
        rows = trend_rows(conn, flow="order_confirmation")
    assert stored == {"n": 40} and daily == {"sent": 40}
    assert rows and rows[-1]["sent_7d"] == 40
    assert trend_table(rows).row_count == len(rows)


class _DownPool:
    """A pool whose database is unreachable."""

    def connection(self) -> Any:
        raise psycopg.OperationalError("connection refused")


def test_nothing_is_deleted_when_the_database_is_down(services: Services, db: Pool) -> None:
    """A batch that could not be committed stays in the queue and is stored by the next drain."""
    ids = send_emails(services, 3)
    bodies = notifications(from_send_requests(ours(services, ids)), behaviour=Behaviour(duplicate=0))
    url = queue(services, visibility_s=1)
    sqs = services.moto.client("sqs")
    publish(sqs, url, bodies)
    with pytest.raises(psycopg.OperationalError):
        drain(_DownPool(), sqs, url, wait_s=0)  # type: ignore[arg-type]
    result = drain(db, sqs, url, wait_s=2, max_seconds=30)
    assert result.received == len(bodies) and result.stored >= len(bodies)


@pytest.fixture
def own_services(services: Services) -> Iterator[Services]:
    """The run's services with a moto server of this test's own.

    ``play_engagement`` takes every send its stand-in has seen: on the session's moto that is
    every email of every earlier test (thousands of SQS messages, depending on test order),
    on this one only what the test sent. moto keeps one store per process, so the SES events
    queue is the same queue under this server's address.
    """
    moto = MotoStandIn()
    moto.start()
    try:
        yield dataclasses.replace(services, moto=moto, aws_endpoint_url=moto.endpoint_url)
    finally:
        moto.stop()


def test_the_demo_act_ends_with_a_trend_table_and_a_report(own_services: Services, db: Pool, tmp_path: Any) -> None:
    """`play_engagement` takes the stand-in's sends through SQS to a trend table and an HTML file."""
    from reporting.demo import play_engagement

    services = own_services
    send_emails(services, 5, flow="welcome")
    report = play_engagement(services, tmp_path, history_days=4, per_day=5)
    assert report.stored > 0 and report.table.row_count >= 1
    assert report.html.read_text().count("<svg") >= 1
    attributes = services.moto.client("sqs").get_queue_attributes(
        QueueUrl=services.moto.ses_queue_url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "0"
