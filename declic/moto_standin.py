"""The moto server standing in for SES v2, S3, SQS and SNS in the demo and the tests.

moto keeps what SES received but drops what Déclic must prove it sent — tags, the
configuration set, headers — so a small WSGI middleware records every SendEmail body too.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

import structlog
from moto.server import ThreadedMotoServer

log = structlog.get_logger(__name__)

AWS_REGION = "us-east-1"
SES_DOMAIN = "shop.example.com"
SES_CONFIGURATION_SET = "declic"
INVOICE_BUCKET = "declic-demo-invoices"
SES_EVENTS_QUEUE = "declic-ses-events"
# https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_SendEmail.html
SES_SEND_PATH = "/v2/email/outbound-emails"

AwsService = Literal["sesv2", "ses", "s3", "sqs", "sns"]


@dataclass(frozen=True)
class SesMessage:
    """One message as moto's SES stored it: simple (subject and body) or raw (MIME text)."""

    message_id: str
    source: str
    destinations: list[str]
    subject: str | None = None
    body: str | None = None
    raw_data: str | None = None


class _SendRecorder:
    """WSGI middleware that keeps every SES v2 SendEmail body, with the MessageId returned.

    moto drops EmailTags, ConfigurationSetName and Headers; tests need to see them.
    """

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app
        self._lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST" or environ.get("PATH_INFO") != SES_SEND_PATH:
            return self.app(environ, start_response)
        length = environ.get("CONTENT_LENGTH") or ""
        body: bytes = environ["wsgi.input"].read(int(length) if length.isdigit() else -1)
        environ["wsgi.input"] = io.BytesIO(body)
        response = self.app(environ, start_response)
        try:
            content = b"".join(response)
        finally:
            close = getattr(response, "close", None)
            if close is not None:
                close()
        record: dict[str, Any] = _json_object(body)
        # A rejected send (unverified sender, bad request) is kept too, with no MessageId.
        record["MessageId"] = _json_object(content).get("MessageId")
        with self._lock:
            self.requests.append(record)
        return [content]

    def snapshot(self) -> list[dict[str, Any]]:
        """A copy of the records so far, safe while the server keeps receiving."""
        with self._lock:
            return [dict(r) for r in self.requests]


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class _RecordingMotoServer(ThreadedMotoServer):
    """moto's threaded server with :class:`_SendRecorder` around its WSGI app."""

    def __init__(self) -> None:
        # Port 0: the OS picks a free port, so there is no race with other test runs.
        super().__init__(ip_address="127.0.0.1", port=0, verbose=False)
        self.recorder: _SendRecorder | None = None

    def _server_entry(self) -> None:
        # Same as ThreadedMotoServer._server_entry, with the app wrapped.
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        class QuietHandler(MotoRequestHandler):
            """No access-log line per request: the demo's terminal is for the demo."""

            def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
                pass

        self.recorder = _SendRecorder(DomainDispatcherApplication(create_backend_app))
        self._server = make_server(self._ip_address, self._port, self.recorder, True, request_handler=QuietHandler)
        self._server_ready_event.set()
        # A short poll so stop() returns in tens of milliseconds, not half a second.
        self._server.serve_forever(poll_interval=0.05)


class MotoStandIn:
    """A moto server on 127.0.0.1 set up the way Déclic expects SES, S3 and SQS to be.

    moto keeps its state per process, not per server: two stand-ins in one process share
    buckets and queues. What each saw sent (:meth:`send_requests`) is its own.
    """

    def __init__(self) -> None:
        self._server = _RecordingMotoServer()
        self.endpoint_url = ""
        self.ses_queue_url = ""

    def start(self) -> None:
        """Start the server, then verify the sending domain and create the resources."""
        self._server.start()
        try:
            self._set_up()
        except BaseException:
            self.stop()
            raise

    def _set_up(self) -> None:
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        sesv2 = self.client("sesv2")
        sesv2.create_email_identity(EmailIdentity=SES_DOMAIN)
        # moto keeps one store per process: a second stand-in finds the set already there.
        if SES_CONFIGURATION_SET not in sesv2.list_configuration_sets()["ConfigurationSets"]:
            sesv2.create_configuration_set(ConfigurationSetName=SES_CONFIGURATION_SET)
        self.client("s3").create_bucket(Bucket=INVOICE_BUCKET)
        self.ses_queue_url = self.client("sqs").create_queue(QueueName=SES_EVENTS_QUEUE)["QueueUrl"]

    def stop(self) -> None:
        """Shut the server down and wait for its thread."""
        self._server.stop()

    def client(self, service: AwsService) -> Any:
        """A boto3 client for ``service`` pointed at this server, with test credentials."""
        import boto3  # type: ignore[import-untyped,unused-ignore]
        from botocore.config import Config  # type: ignore[import-untyped,unused-ignore]

        return boto3.session.Session().client(
            service,
            endpoint_url=self.endpoint_url,
            region_name=AWS_REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # noqa: S106 - moto's documented dummy value
            config=Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 2}),
        )

    def send_requests(self) -> list[dict[str, Any]]:
        """Every SES v2 SendEmail request body received, in order, each with its MessageId."""
        recorder = self._server.recorder
        if recorder is None:
            return []
        return recorder.snapshot()

    def sent_messages(self) -> list[SesMessage]:
        """What moto's SES stored for the sends that went through this server, in order.

        moto keeps one store per process; filtering on this server's message ids keeps two
        stand-ins in one process (a session fixture and a test's own) apart.
        """
        from moto.core.models import DEFAULT_ACCOUNT_ID
        from moto.ses.models import ses_backends

        ours = {r["MessageId"] for r in self.send_requests() if r.get("MessageId")}
        stored = ses_backends[DEFAULT_ACCOUNT_ID][AWS_REGION].sent_messages
        return [_ses_message(m) for m in list(stored) if getattr(m, "id", None) in ours]


def _ses_message(message: Any) -> SesMessage:
    destinations = message.destinations
    if isinstance(destinations, dict):  # simple sends keep To/Cc/Bcc apart
        destinations = [a for key in sorted(destinations) for a in destinations[key]]
    return SesMessage(
        message_id=message.id,
        source=message.source,
        # moto adds a raw message's header recipients to the given ones: keep each once.
        destinations=list(dict.fromkeys(destinations)),
        subject=getattr(message, "subject", None),
        body=getattr(message, "body", None),
        raw_data=getattr(message, "raw_data", None),
    )
