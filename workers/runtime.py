"""The worker process's long-lived objects, built once on first use (never at import).

One store (connection pool), one catalogue, one renderer with compiled templates, one SES
client and one S3 client per process, shared by the pool's threads.
"""

from __future__ import annotations

import threading

import boto3
import redis
from botocore.exceptions import BotoCoreError

from declic.settings import Settings, get_settings
from events.outbox import Outbox
from events.publisher import OUTBOX_QUEUES
from flows.loader import CatalogueInvalid, load_catalogue
from workers.attachments import S3ObjectStore
from workers.errors import ConfigurationError
from workers.governor import Governor, GovernorConfig, account_max_rate
from workers.pipeline import Deps
from workers.rendering import Renderer
from workers.ses import SesSender
from workers.store import Store
from workers.unsubscribe import UnsubscribeLinks

_lock = threading.Lock()
_deps: Deps | None = None
_outbox: Outbox | None = None


def brand(settings: Settings) -> dict[str, str]:
    return {
        "name": settings.brand_name,
        "url": settings.brand_url,
        "address": settings.brand_address,
        "support_email": settings.support_email,
    }


def build_governor(settings: Settings, sender: SesSender) -> Governor:
    """The shared SES rate: the configured one, else the account's, else SES's default of 14/s."""
    rate = settings.ses_max_rate or account_max_rate(sender.client) or 14.0
    client = redis.Redis.from_url(settings.effective_redis_url, socket_timeout=5, socket_connect_timeout=5)
    return Governor(client, GovernorConfig(max_rate=rate))


def build_deps(settings: Settings) -> Deps:
    sender = SesSender(timeout_s=settings.ses_timeout_s)
    return Deps(
        store=Store.connect(settings.database_url, max_size=20, lease_s=settings.send_lease_s),
        catalogue=load_catalogue(settings.flows_dir),
        renderer=Renderer(settings.templates_dir, brand(settings)),
        sender=sender,
        governor=build_governor(settings, sender),
        objects=S3ObjectStore(timeout_s=settings.ses_timeout_s),
        configuration_set=settings.ses_configuration_set,
        links=UnsubscribeLinks(settings.require_secret_key(), settings.public_url),
        default_timezone=settings.default_timezone,
        max_attempts=settings.send_max_attempts,
        delay_scale=settings.delay_scale,
        ambiguous_wait_s=settings.ses_ambiguous_wait_s,
        inline_sends=settings.inline_sends,
    )


def preflight(settings: Settings) -> list[str]:
    """What stops this worker from doing any work, each with what to set; empty when it can start.

    Only what no retry can fix: the signing key, the catalogue, the templates, an AWS region
    and credentials. Postgres, Redis and SES being unreachable are not checked: those come
    back, and the tasks retry until they do.
    """
    problems: list[str] = []
    try:
        settings.require_secret_key()
    except ConfigurationError as exc:
        problems.append(str(exc))
    try:
        load_catalogue(settings.flows_dir)
    except CatalogueInvalid as exc:
        problems += [f"flow catalogue (DECLIC_FLOWS_DIR): {problem}" for problem in exc.problems]
    if not settings.templates_dir.is_dir():
        problems.append(f"no templates directory at {settings.templates_dir}: set DECLIC_TEMPLATES_DIR")
    try:
        session = boto3.session.Session()
        session.client("sesv2")  # resolves the region (and the endpoint) as every send will
        if session.get_credentials() is None:
            problems.append("no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                            "AWS_PROFILE, or run with an instance or task role")
    except BotoCoreError as exc:  # botocore says what to set ("You must specify a region")
        problems.append(f"SES client: {str(exc).rstrip('.')}; set AWS_DEFAULT_REGION (or region in the AWS profile)")
    return problems


def deps() -> Deps:
    """This process's dependencies, created on first call (after a prefork worker forks)."""
    global _deps
    if _deps is None:
        with _lock:
            if _deps is None:
                _deps = build_deps(get_settings())
    return _deps


def outbox() -> Outbox | None:
    """The broker's outbox, where ingested events are forgotten; None unless the broker is Redis."""
    global _outbox
    settings = get_settings()
    if _outbox is None and settings.uses_outbox:
        with _lock:
            if _outbox is None:
                _outbox = Outbox.connect(settings.broker_url, OUTBOX_QUEUES)
    return _outbox


def reset() -> None:
    """Close and forget the process's dependencies (tests, and after fork)."""
    global _deps
    with _lock:
        if _deps is not None:
            _deps.store.close()
        _deps = None
