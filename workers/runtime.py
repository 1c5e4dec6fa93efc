"""The worker process's long-lived objects, built once on first use (never at import).

One store (connection pool), one catalogue, one renderer with compiled templates, one SES
client and one S3 client per process, shared by the pool's threads.
"""

from __future__ import annotations

import threading

from declic.settings import Settings, get_settings
from flows.loader import load_catalogue
from workers.attachments import S3ObjectStore
from workers.pipeline import Deps
from workers.rendering import Renderer
from workers.ses import SesSender
from workers.store import Store
from workers.unsubscribe import UnsubscribeLinks

_lock = threading.Lock()
_deps: Deps | None = None


def brand(settings: Settings) -> dict[str, str]:
    return {
        "name": settings.brand_name,
        "url": settings.brand_url,
        "address": settings.brand_address,
        "support_email": settings.support_email,
    }


def build_deps(settings: Settings) -> Deps:
    return Deps(
        store=Store.connect(settings.database_url, max_size=20, lease_s=settings.send_lease_s),
        catalogue=load_catalogue(settings.flows_dir),
        renderer=Renderer(settings.templates_dir, brand(settings)),
        sender=SesSender(timeout_s=settings.ses_timeout_s),
        objects=S3ObjectStore(timeout_s=settings.ses_timeout_s),
        configuration_set=settings.ses_configuration_set,
        links=UnsubscribeLinks(settings.require_secret_key(), settings.public_url),
        default_timezone=settings.default_timezone,
        max_attempts=settings.send_max_attempts,
        delay_scale=settings.delay_scale,
    )


def deps() -> Deps:
    """This process's dependencies, created on first call (after a prefork worker forks)."""
    global _deps
    if _deps is None:
        with _lock:
            if _deps is None:
                _deps = build_deps(get_settings())
    return _deps


def reset() -> None:
    """Close and forget the process's dependencies (tests, and after fork)."""
    global _deps
    with _lock:
        if _deps is not None:
            _deps.store.close()
        _deps = None
