"""SNS signatures (v1 SHA1, v2 SHA256) and the POST /v1/ses/sns endpoint, with a local key and cert."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from reporting.db import Pool
from reporting.ingest import ingest
from reporting.sns_http import SnsService, get_sns_service, router
from reporting.sns_verify import (
    CertificateCache,
    CertificateUrlRefused,
    SnsVerificationError,
    SnsVerifier,
    check_sns_url,
)
from reporting.testing import RESET_REPORTING, LocalSns
from workers.store import Store

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "ses"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def local_sns() -> LocalSns:
    return LocalSns()


def verifier(sns: LocalSns) -> SnsVerifier:
    return SnsVerifier(CertificateCache(sns.fetch))


def delivery() -> dict[str, Any]:
    record: dict[str, Any] = json.loads((SAMPLES / "event_delivery.json").read_text())
    return record


@pytest.mark.parametrize("version", ["1", "2"])
def test_signed_messages_verify(local_sns: LocalSns, version: str) -> None:
    """A notification and a subscription confirmation signed with SHA1 (v1) or SHA256 (v2) verify."""
    check = verifier(local_sns)
    check.verify(local_sns.notification(delivery(), version=version))
    check.verify(local_sns.subscription_confirmation(version=version))


@pytest.mark.parametrize("field", ["Message", "MessageId", "Timestamp", "TopicArn"])
def test_a_tampered_field_fails(local_sns: LocalSns, field: str) -> None:
    """Changing any signed field after signing breaks the signature."""
    message = local_sns.notification(delivery())
    message[field] = message[field] + "x"
    with pytest.raises(SnsVerificationError, match="does not match"):
        verifier(local_sns).verify(message)


def test_unsigned_and_unknown_versions_are_refused(local_sns: LocalSns) -> None:
    """No signature, or a SignatureVersion other than 1 and 2, is refused before any fetch."""
    message = local_sns.notification(delivery())
    fetched = len(local_sns.fetched)
    for broken in ({k: v for k, v in message.items() if k != "Signature"}, {**message, "SignatureVersion": "3"}):
        with pytest.raises(SnsVerificationError):
            verifier(local_sns).verify(broken)
    assert len(local_sns.fetched) == fetched


@pytest.mark.parametrize("url", [
    "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-x.pem",  # not HTTPS
    "https://sns.us-east-1.amazonaws.com.evil.example/SimpleNotificationService-x.pem",
    "https://evil.example/sns.us-east-1.amazonaws.com/x.pem",
    "https://s3.amazonaws.com/sns/x.pem",
    "https://sns.us-east-1.amazonaws.com:8443/x.pem",
    "https://user@sns.us-east-1.amazonaws.com/x.pem",
    "https://sns.us-east-1.amazonaws.com/x.txt",
    "https://169.254.169.254/latest/meta-data/x.pem",
])
def test_a_certificate_outside_sns_is_never_fetched(local_sns: LocalSns, url: str) -> None:
    """Only https://sns.<region>.amazonaws.com/….pem is fetched; anything else is refused untouched."""
    message = local_sns.notification(delivery(), version="1")
    message["SigningCertURL"] = url
    fetched = len(local_sns.fetched)
    with pytest.raises(CertificateUrlRefused):
        verifier(local_sns).verify(message)
    assert len(local_sns.fetched) == fetched


def test_the_certificate_is_fetched_once(local_sns: LocalSns) -> None:
    """The cache keeps the certificate: a hundred messages cost one fetch."""
    cache = CertificateCache(local_sns.fetch)
    check = SnsVerifier(cache)
    for _ in range(100):
        check.verify(local_sns.notification(delivery()))
    assert cache.fetches == 1


def test_china_regions_are_sns_too() -> None:
    """amazonaws.com.cn hosts are accepted, as SNS uses them in the China regions."""
    assert check_sns_url("https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-x.pem", pem=True)


# -- the endpoint -------------------------------------------------------------------------------------


class Endpoint:
    """The router on a small app, with the service's parts replaced by local ones."""

    def __init__(self, pool: Pool, sns: LocalSns, topic_arns: list[str] | None = None) -> None:
        self.confirmed: list[str] = []
        self.service = SnsService(
            verifier=verifier(sns), ingest=lambda items: ingest(pool, items, "sns_http"),
            confirm=self.confirmed.append, topic_arns=topic_arns or [],
        )
        app = FastAPI()
        app.include_router(router)
        app.dependency_overrides[get_sns_service] = lambda: self.service
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")

    async def post(self, message: dict[str, Any] | str, **headers: str) -> httpx.Response:
        content = message if isinstance(message, str) else json.dumps(message)
        # SNS posts JSON as text/plain.
        return await self.client.post("/v1/ses/sns", content=content,
                                      headers={"content-type": "text/plain; charset=UTF-8", **headers})


@pytest.fixture
def endpoint(pool: Pool, store: Store, local_sns: LocalSns) -> Endpoint:
    with pool.connection() as conn:
        conn.execute(RESET_REPORTING)
    return Endpoint(pool, local_sns)


@pytest.mark.anyio
async def test_a_signed_notification_is_stored_once(
    endpoint: Endpoint, local_sns: LocalSns, pool: Pool,
) -> None:
    """A valid notification is stored; SNS redelivering it is answered 200 and stores nothing more."""
    message = local_sns.notification(delivery(), version="2")
    first = await endpoint.post(message, **{"x-amz-sns-message-type": "Notification"})
    again = await endpoint.post(message)
    assert first.status_code == 200 and first.json()["stored"] == 1
    assert again.status_code == 200 and again.json() == {"status": "accepted", "stored": 0, "duplicates": 1,
                                                        "dead_letters": 0}
    with pool.connection() as conn:
        assert conn.execute("SELECT count(*) AS n FROM reporting.email_events").fetchone() == {"n": 1}


@pytest.mark.anyio
async def test_unsigned_and_forged_messages_get_401(endpoint: Endpoint, local_sns: LocalSns) -> None:
    """An unsigned message, or one signed by another key, is refused with 401 in the API's error shape."""
    unsigned = {k: v for k, v in local_sns.notification(delivery()).items()
                if k not in ("Signature", "SignatureVersion", "SigningCertURL")}
    forged = LocalSns().notification(delivery())
    for message in (unsigned, forged):
        response = await endpoint.post(message)
        assert response.status_code == 401
        assert response.json()["error"] == "unauthorized"


@pytest.mark.anyio
async def test_subscription_confirmation_is_confirmed(endpoint: Endpoint, local_sns: LocalSns) -> None:
    """A signed SubscriptionConfirmation makes the endpoint visit its SubscribeURL."""
    message = local_sns.subscription_confirmation()
    response = await endpoint.post(message, **{"x-amz-sns-message-type": "SubscriptionConfirmation"})
    assert response.status_code == 200 and response.json() == {"status": "confirmed"}
    assert endpoint.confirmed == [message["SubscribeURL"]]


@pytest.mark.anyio
async def test_other_topics_and_bad_bodies(pool: Pool, store: Store, local_sns: LocalSns) -> None:
    """A topic not configured is 403; a body that is not JSON is 400; a mismatched type header is 400."""
    endpoint = Endpoint(pool, local_sns, topic_arns=["arn:aws:sns:eu-west-3:123456789012:other"])
    assert (await endpoint.post(local_sns.notification(delivery()))).status_code == 403
    assert (await endpoint.post("{nope")).status_code == 400
    mismatched = await endpoint.post(local_sns.notification(delivery()),
                                     **{"x-amz-sns-message-type": "SubscriptionConfirmation"})
    assert mismatched.status_code == 400


@pytest.mark.anyio
async def test_a_signed_but_unparseable_notification_is_dead_lettered(
    endpoint: Endpoint, local_sns: LocalSns, pool: Pool,
) -> None:
    """Authentic but not SES data: kept as a dead letter with the reason, answered 200 (no retry storm)."""
    message = local_sns.sign({"Type": "Notification", "MessageId": "odd-1", "TopicArn": "arn:aws:sns:eu-west-3:1:t",
                              "Message": "Hello world!", "Timestamp": "2024-01-01T00:00:00.000Z"})
    response = await endpoint.post(message)
    assert response.status_code == 200 and response.json()["dead_letters"] == 1
    with pool.connection() as conn:
        dead = conn.execute("SELECT source, ref, reason FROM reporting.ingest_dead_letters").fetchall()
    assert dead == [{"source": "sns_http", "ref": "odd-1",
                     "reason": "not JSON: Expecting value: line 1 column 1 (char 0)"}]
