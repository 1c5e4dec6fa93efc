"""SES behind a one-method interface: a real sender on boto3 and an in-memory one.

``SesSender`` owns the boto3 client (one per process, created on first use, with timeouts,
enough connections for a threaded worker, and the SDK's own retries off because retrying
is the task's decision) and translates every botocore error in :func:`translate` — nothing
above this module sees a provider type.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any, Protocol

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectionError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from workers.errors import AmbiguousSendError, PermanentSendError, SendError, ThrottledError, TransientSendError

_THROTTLING = {"TooManyRequestsException", "Throttling", "ThrottlingException", "LimitExceededException"}
_PERMANENT = {
    "MessageRejected",
    "BadRequestException",
    "MailFromDomainNotVerifiedException",
    "AccountSuspendedException",
    "SendingPausedException",
    "NotFoundException",
    "InvalidParameterValue",
    "ValidationError",
}


class Sender(Protocol):
    def send(self, request: dict[str, Any]) -> str:
        """Send one ``SendEmail`` request; return the SES message id or raise SendError."""
        ...


def translate(exc: Exception) -> SendError:
    """The one place botocore errors become Déclic's: throttled, transient or permanent."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        message = f"{code}: {error.get('Message', '')}".strip()
        if code in _THROTTLING or status == 429 or "Maximum sending rate" in message:
            return ThrottledError(message)
        if status >= 500 or code in {"InternalFailure", "ServiceUnavailable"}:
            return TransientSendError(message)
        if code in _PERMANENT or 400 <= status < 500:
            return PermanentSendError(message)
        return TransientSendError(message)
    if isinstance(exc, ReadTimeoutError | ConnectionClosedError):
        # The request left: SES may have accepted the message. Its Send notification decides.
        return AmbiguousSendError(f"no answer from SES: {exc}")
    if isinstance(exc, ConnectTimeoutError | EndpointConnectionError | ConnectionError):
        return TransientSendError(f"SES unreachable: {exc}")
    if isinstance(exc, BotoCoreError):
        return TransientSendError(f"{exc.__class__.__name__}: {exc}")
    return TransientSendError(f"{exc.__class__.__name__}: {exc}")


class SesSender:
    """Sends through the SES v2 API; endpoint and credentials come from boto3's standard setup."""

    def __init__(self, *, region: str | None = None, timeout_s: float = 10.0, max_pool: int = 50) -> None:
        self._config = Config(
            region_name=region,
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
            retries={"total_max_attempts": 1},
            max_pool_connections=max_pool,
        )
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = boto3.session.Session().client("sesv2", config=self._config)
        return self._client

    def send(self, request: dict[str, Any]) -> str:
        try:
            response = self.client.send_email(**request)
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc) from exc
        return str(response["MessageId"])


class InMemorySender:
    """Records requests instead of sending; ``fail_next`` queues errors to raise first."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.failures: deque[SendError] = deque()
        self._lock = threading.Lock()

    def fail_next(self, *errors: SendError) -> None:
        self.failures.extend(errors)

    def send(self, request: dict[str, Any]) -> str:
        with self._lock:
            if self.failures:
                raise self.failures.popleft()
            self.sent.append(request)
            return f"mem-{len(self.sent):06d}"
