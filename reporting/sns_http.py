"""``POST /v1/ses/sns``: a direct HTTPS subscription to the configuration set's SNS topic.

Include :data:`router` in the API's FastAPI app. Every message must carry a valid SNS
signature (401 otherwise — unsigned messages included); a topic not in
``DECLIC_SNS_TOPIC_ARNS`` (when set) gets 403. A ``SubscriptionConfirmation`` is confirmed by
fetching its ``SubscribeURL`` (also checked to be an SNS HTTPS URL); a ``Notification`` goes
through the same ingestion as the SQS path, so duplicates are harmless and unparseable
payloads are dead-lettered (answered 200: retrying would not make them parseable). When the
database is down the answer is 503 so SNS retries later.

SNS posts with ``Content-Type: text/plain``, so the body is read as bytes and parsed here.
Errors use the API's shape: ``{"error", "message", "errors"}``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import httpx
import psycopg
import psycopg_pool
import structlog
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from reporting.ingest import IngestResult, Received
from reporting.sns_verify import (
    CertificateCache,
    SnsVerificationError,
    SnsVerifier,
    check_sns_url,
    https_fetcher,
)

log = structlog.get_logger(__name__)

MAX_BODY = 1024 * 1024  # SNS messages are at most 256 KB; anything far larger is not SNS
router = APIRouter(tags=["reporting"])


@dataclass
class SnsService:
    """What the endpoint needs; built once per process, replaced in tests."""

    verifier: SnsVerifier
    ingest: Callable[[list[Received]], IngestResult]
    confirm: Callable[[str], None]
    topic_arns: list[str] = field(default_factory=list)


def https_confirm(timeout_s: float = 5.0) -> Callable[[str], None]:
    """Confirm a subscription by GETting its SubscribeURL (SNS hosts only)."""
    def confirm(url: str) -> None:
        response = httpx.get(check_sns_url(url, pem=False), timeout=timeout_s, follow_redirects=False)
        response.raise_for_status()

    return confirm


_lock = threading.Lock()
_service: SnsService | None = None


def get_sns_service() -> SnsService:
    """The process's service from the settings, created on first request."""
    global _service
    with _lock:
        if _service is None:
            from declic.settings import get_settings
            from reporting.db import connect_pool
            from reporting.ingest import ingest

            settings = get_settings()
            pool = connect_pool(settings.database_url, max_size=4)
            _service = SnsService(
                verifier=SnsVerifier(CertificateCache(https_fetcher())),
                ingest=lambda items: ingest(pool, items, "sns_http"),
                confirm=https_confirm(),
                topic_arns=list(settings.sns_topic_arns),
            )
        return _service


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message, "errors": []}, status_code=status)


@router.post("/v1/ses/sns", summary="Amazon SNS notifications of SES events")
async def receive_sns(request: Request, service: Annotated[SnsService, Depends(get_sns_service)]) -> JSONResponse:
    """Verify, then confirm a subscription or ingest a notification."""
    body = await request.body()
    if len(body) > MAX_BODY:
        return _error(413, "body_too_large", "an SNS message is at most 256 KB")
    try:
        message: Any = json.loads(body)
    except ValueError:
        return _error(400, "bad_request", "the body is not JSON")
    if not isinstance(message, dict) or not isinstance(message.get("Type"), str):
        return _error(400, "bad_request", "not an SNS message (no Type)")
    kind = message["Type"]
    header = request.headers.get("x-amz-sns-message-type")
    if header is not None and header != kind:
        return _error(400, "bad_request", "x-amz-sns-message-type does not match the message Type")
    bound = log.bind(sns_type=kind, sns_message_id=str(message.get("MessageId", ""))[:100])
    try:
        await run_in_threadpool(service.verifier.verify, message)
    except SnsVerificationError as exc:
        bound.warning("sns_message_refused", reason=str(exc))
        return _error(401, "unauthorized", f"SNS signature check failed: {exc}")
    except (httpx.HTTPError, OSError) as exc:  # the certificate could not be fetched: let SNS retry
        bound.warning("sns_certificate_unavailable", reason=type(exc).__name__)
        return _error(503, "unavailable", "the signing certificate could not be fetched")
    if service.topic_arns and message.get("TopicArn") not in service.topic_arns:
        bound.warning("sns_message_refused", reason="topic_not_allowed")
        return _error(403, "forbidden", "this topic is not accepted here")
    if kind == "SubscriptionConfirmation":
        return await _confirm(service, message, bound)
    if kind == "UnsubscribeConfirmation":
        bound.info("sns_unsubscribed")
        return JSONResponse({"status": "unsubscribed"})
    if kind != "Notification":
        return _error(400, "bad_request", f"unknown SNS message type {kind!r}")
    text = body.decode("utf-8", errors="replace")
    try:
        result = await run_in_threadpool(service.ingest, [Received(text, message.get("MessageId"))])
    except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
        bound.warning("sns_ingest_failed", reason=type(exc).__name__)
        return _error(503, "unavailable", "the database is unavailable; retry later")
    return JSONResponse({"status": "accepted", "stored": result.stored, "duplicates": result.duplicates,
                         "dead_letters": result.dead_letters})


async def _confirm(service: SnsService, message: dict[str, Any], bound: Any) -> JSONResponse:
    url = message.get("SubscribeURL")
    if not isinstance(url, str):
        return _error(400, "bad_request", "SubscriptionConfirmation without SubscribeURL")
    try:
        await run_in_threadpool(service.confirm, url)
    except SnsVerificationError as exc:
        bound.warning("sns_subscription_refused", reason=str(exc))
        return _error(401, "unauthorized", str(exc))
    except (httpx.HTTPError, OSError) as exc:  # network failure: 503 makes SNS send it again
        bound.warning("sns_subscription_failed", reason=type(exc).__name__)
        return _error(503, "unavailable", "the subscription could not be confirmed; retry later")
    bound.info("sns_subscription_confirmed", topic=message.get("TopicArn"))
    return JSONResponse({"status": "confirmed"})
