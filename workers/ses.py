"""SES behind a one-method interface: a real sender and an in-memory one.

``SesSender`` builds one boto3 client per process (created on first use, with timeouts, enough
connections for a threaded worker, and the SDK's own retries off because retrying is the
task's decision). The client resolves the endpoint (``AWS_ENDPOINT_URL_SESV2``, the region),
the credentials, TLS and proxies exactly as boto3 does; ``SendEmail`` itself skips boto3's
per-call machinery (parameter validation, event hooks, serializer, response parser — about
two thirds of a send's CPU): the JSON body is encoded by :func:`encode_send_email` (orjson),
signed with botocore's own SigV4 signer and posted on the client's pooled HTTP session. Every error, the
botocore ones and SES's answers alike, is translated in :func:`translate` — nothing above this
module sees a provider type.

https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_SendEmail.html (rest-json)
"""

from __future__ import annotations

import base64
import json
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectionError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from events.encoding import json_bytes
from workers.errors import (
    AmbiguousSendError,
    PermanentSendError,
    SendError,
    ThrottledError,
    TransientSendError,
)

SEND_EMAIL_PATH = "/v2/email/outbound-emails"

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


def encode_send_email(request: Mapping[str, Any]) -> bytes:
    """The JSON body of ``SendEmail`` for ``sesv2.send_email`` keyword arguments, as boto3 sends it.

    Blobs (``Content.Raw.Data``, each ``Content.Simple.Attachments[].RawContent``) go
    base64-encoded, as rest-json wants.
    """
    body = dict(request)
    content = body.get("Content", {})
    raw = content.get("Raw")
    if raw is not None and isinstance(raw.get("Data"), bytes | bytearray):
        body["Content"] = {**content, "Raw": {**raw, "Data": _b64(raw["Data"])}}
    simple = content.get("Simple")
    if simple is not None and simple.get("Attachments"):
        attachments = [{**a, "RawContent": _b64(a["RawContent"])} if isinstance(a.get("RawContent"), bytes | bytearray)
                       else a for a in simple["Attachments"]]
        body["Content"] = {**content, "Simple": {**simple, "Attachments": attachments}}
    return json_bytes(body)  # orjson: a twentieth of json.dumps's time on a 20 kB HTML part


def _b64(data: bytes | bytearray) -> str:
    return base64.b64encode(data).decode()


def answer_error(status: int, headers: Mapping[str, str], body: bytes) -> ClientError:
    """SES's error answer as botocore's rest-json parser reads it, for :func:`translate`."""
    try:
        parsed = json.loads(body) if body else {}
    except ValueError:
        parsed = {}
    fields: dict[str, Any] = parsed if isinstance(parsed, dict) else {}
    code = headers.get("x-amzn-ErrorType") or fields.get("code") or fields.get("Code") or fields.get("__type")
    code = str(code or status).split(":", 1)[0].rsplit("#", 1)[-1]
    message = str(fields.get("message", fields.get("Message", "")))
    metadata: Any = {"HTTPStatusCode": status, "RequestId": headers.get("x-amzn-RequestId", "")}
    return ClientError({"Error": {"Code": code, "Message": message}, "ResponseMetadata": metadata}, "SendEmail")


@dataclass(frozen=True)
class _Route:
    """Where and how SendEmail goes, resolved once by the boto3 client."""

    url: str
    region: str
    signing_name: str
    credentials: Any
    http: Any  # the client's botocore URLLib3Session: pooled, with its TLS, proxy and timeouts


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
        self._route: _Route | None = None
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        """The boto3 ``sesv2`` client, for the calls other than SendEmail (GetAccount)."""
        return self._resolve()[0]

    def _resolve(self) -> tuple[Any, _Route]:
        if self._route is None:
            with self._lock:
                if self._route is None:
                    session = boto3.session.Session()
                    client: Any = session.client("sesv2", config=self._config)
                    meta = client.meta
                    self._client = client
                    self._route = _Route(
                        url=meta.endpoint_url.rstrip("/") + SEND_EMAIL_PATH,
                        region=meta.region_name,
                        signing_name=meta.service_model.signing_name,
                        credentials=session.get_credentials(),
                        # botocore has no public accessor; the same session boto3 itself sends on.
                        http=client._endpoint.http_session,
                    )
        return self._client, self._route

    def send(self, request: dict[str, Any]) -> str:
        try:
            route = self._resolve()[1]
            if route.credentials is None:
                raise NoCredentialsError()
            signed = AWSRequest("POST", route.url, data=encode_send_email(request),
                                headers={"Content-Type": "application/json"})
            # Frozen per call: refreshable credentials (an instance role) renew themselves here.
            SigV4Auth(route.credentials.get_frozen_credentials(), route.signing_name, route.region).add_auth(signed)
            response = route.http.send(signed.prepare())
        except BotoCoreError as exc:
            raise translate(exc) from exc
        if response.status_code != 200:
            raise translate(answer_error(response.status_code, response.headers, response.content))
        try:
            return str(json.loads(response.content)["MessageId"])
        except (ValueError, KeyError, TypeError) as exc:
            # SES answered 200, so it took the message: its Send notification says under what id.
            raise AmbiguousSendError(f"unreadable SES answer: {exc}") from exc


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
