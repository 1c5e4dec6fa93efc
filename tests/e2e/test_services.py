"""start_services gives working Postgres, Redis and moto, and stops what it started."""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from bench.measure import cpu_seconds, tree
from bench.pipeline import service_roots
from declic.services import (
    INVOICE_BUCKET,
    SES_CONFIGURATION_SET,
    Services,
    claim_empty_db,
    start_services,
)

pytestmark = pytest.mark.e2e

SENDER = "noreply@shop.example.com"


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """This module's own services in test mode, apart from the suite's session fixture."""
    with start_services(tmp_path_factory.mktemp("services"), mode="test") as running:
        yield running


def _port_open(url: str) -> bool:
    port = redis.Redis.from_url(url).connection_pool.connection_kwargs["port"]
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_postgres_answers(services: Services) -> None:
    """The database URL reaches a Postgres, in a fresh declic_test_ database when local."""
    with psycopg.connect(services.database_url, connect_timeout=5) as conn:
        row = conn.execute("SELECT current_database()").fetchone()
    assert row is not None
    if services.sources["postgres"] == "local":
        assert row[0].startswith("declic_test_")


def test_redis_answers(services: Services) -> None:
    """The Redis and broker URLs reach a Redis that answers PING."""
    for url in (services.redis_url, services.broker_url):
        with redis.Redis.from_url(url, socket_timeout=5) as client:
            assert client.ping()


def test_concurrent_runs_never_share_a_redis_database(services: Services) -> None:
    """Each claim takes a database no other claim holds and skips one with data in it, so two
    test processes (pytest -n 2) on the machine's Redis never flush each other's keys."""
    used = int(services.redis_url.rsplit("/", 1)[1])
    claimed = [claim_empty_db(services.redis_url) for _ in range(4)]  # the run's own holds keys
    try:
        assert None not in claimed and len(set(claimed)) == 4 and used not in claimed
    finally:
        for db in claimed:
            if db is not None:
                with redis.Redis.from_url(services.redis_url.rsplit("/", 1)[0] + f"/{db}") as client:
                    client.flushdb()


def test_moto_has_what_ses_needs(services: Services) -> None:
    """The configuration set, the invoice bucket and the SES events queue exist."""
    sesv2 = services.moto.client("sesv2")
    config_set = sesv2.get_configuration_set(ConfigurationSetName=SES_CONFIGURATION_SET)
    assert config_set["ConfigurationSetName"] == SES_CONFIGURATION_SET
    services.moto.client("s3").head_bucket(Bucket=INVOICE_BUCKET)
    assert services.moto.ses_queue_url.endswith("/declic-ses-events")


def test_send_email_is_recorded_with_what_moto_drops(services: Services) -> None:
    """A SendEmail request keeps its tags, configuration set and headers, and moto stores it."""
    response = services.moto.client("sesv2").send_email(
        FromEmailAddress=SENDER,
        Destination={"ToAddresses": ["jane@example.com"]},
        Content={
            "Simple": {
                "Subject": {"Data": "Votre commande"},
                "Body": {"Text": {"Data": "Merci !"}},
                "Headers": [{"Name": "X-Declic-Send", "Value": "42"}],
            }
        },
        EmailTags=[{"Name": "flow", "Value": "order_confirmation"}],
        ConfigurationSetName=SES_CONFIGURATION_SET,
    )
    message_id = response["MessageId"]

    request = services.moto.send_requests()[-1]
    assert request["MessageId"] == message_id
    assert request["EmailTags"] == [{"Name": "flow", "Value": "order_confirmation"}]
    assert request["ConfigurationSetName"] == SES_CONFIGURATION_SET
    assert request["Content"]["Simple"]["Headers"] == [{"Name": "X-Declic-Send", "Value": "42"}]

    stored = {m.message_id: m for m in services.moto.sent_messages()}[message_id]
    assert (stored.source, stored.destinations) == (SENDER, ["jane@example.com"])
    assert (stored.subject, stored.body) == ("Votre commande", "Merci !")


def test_raw_send_keeps_the_mime_text(services: Services) -> None:
    """A raw send's MIME text is readable from sent_messages()."""
    mime = f"From: {SENDER}\r\nTo: jane@example.com\r\nSubject: Facture\r\n\r\nPDF ci-joint\r\n"
    response = services.moto.client("sesv2").send_email(
        FromEmailAddress=SENDER,
        Destination={"ToAddresses": ["jane@example.com"]},
        Content={"Raw": {"Data": mime.encode()}},
    )
    stored = {m.message_id: m for m in services.moto.sent_messages()}[response["MessageId"]]
    assert stored.raw_data is not None and "Subject: Facture" in stored.raw_data
    body = services.moto.send_requests()[-1]["Content"]["Raw"]["Data"]
    assert base64.b64decode(body).decode() == mime


def test_env_points_a_child_at_these_services(services: Services) -> None:
    """env() carries the service URLs and sends every AWS client to moto."""
    env = services.env()
    assert env["DECLIC_DATABASE_URL"] == services.database_url
    assert env["DECLIC_BROKER_URL"] == services.broker_url
    assert env["DECLIC_REDIS_URL"] == services.redis_url
    for service in ("SESV2", "S3", "SQS", "SNS"):
        assert env[f"AWS_ENDPOINT_URL_{service}"] == services.aws_endpoint_url
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "us-east-1"
    assert env["AWS_ACCESS_KEY_ID"] == env["AWS_SECRET_ACCESS_KEY"] == "testing"


def test_declic_urls_in_the_environment_are_used_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DECLIC_DATABASE_URL and DECLIC_BROKER_URL are passed through untouched."""
    monkeypatch.setenv("DECLIC_DATABASE_URL", "postgresql://someone@db.invalid/declic")
    monkeypatch.setenv("DECLIC_BROKER_URL", "redis://cache.invalid:6379/3")
    monkeypatch.delenv("DECLIC_REDIS_URL", raising=False)
    with start_services(tmp_path, mode="test") as running:
        assert running.database_url == "postgresql://someone@db.invalid/declic"
        assert running.broker_url == running.redis_url == "redis://cache.invalid:6379/3"
        assert running.sources["postgres"] == running.sources["redis"] == "env"


def test_embedded_services_answer_and_are_removed(tmp_path: Path) -> None:
    """Forced embedded Postgres and Redis answer, then stop and leave no files behind."""
    with start_services(tmp_path, mode="test", force_embedded=True) as running:
        assert running.sources["postgres"] == running.sources["redis"] == "embedded"
        with psycopg.connect(running.database_url, connect_timeout=5) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("declic",)
        with redis.Redis.from_url(running.broker_url, socket_timeout=5) as client:
            assert client.ping()
        # The benchmark finds their processes to count the CPU an email costs them.
        roots = service_roots(running)
        assert len(roots["postgres"]) == 1 and len(roots["redis"]) == 1
        assert len(tree(roots["postgres"][0])) > 1  # the postmaster and its backends
        assert cpu_seconds(roots["postgres"]) > 0 and cpu_seconds(roots["redis"]) >= 0
    assert not _port_open(running.redis_url)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(running.database_url, connect_timeout=2)
    assert list(tmp_path.iterdir()) == []


def test_embedded_services_stop_when_the_body_raises(tmp_path: Path) -> None:
    """An exception inside the block still stops everything that was started."""
    with (
        pytest.raises(RuntimeError, match="boom"),
        start_services(tmp_path, mode="demo", force_embedded=True) as running,
    ):
        raise RuntimeError("boom")
    assert not _port_open(running.redis_url)
    assert list(tmp_path.iterdir()) == []
