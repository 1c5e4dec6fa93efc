"""The Celery application: ``celery -A workers.app worker`` or ``declic worker``.

Queues: ``events.critical`` and ``events`` (ingest), then ``send.critical``, ``send.transactional`` and
``send.bulk``, so a password reset never waits behind a newsletter-sized backlog.
Late acknowledgement everywhere: a message is acknowledged only after its work is durable
in Postgres, and a worker killed mid-task gives its message back.
"""

from __future__ import annotations

from typing import Any

import structlog
from celery import Celery, signals
from kombu import Exchange, Queue

from declic.logs import configure as configure_logging
from declic.settings import Settings, get_settings

QUEUES = ("events.critical", "events", "send.critical", "send.transactional", "send.bulk")
# Ingest reads events.critical first: a password reset is never behind a burst of bulk events.
INGEST_QUEUES = QUEUES[:2]
SEND_QUEUES = QUEUES[2:]


def queue_arguments(broker_url: str) -> dict[str, Any]:
    """RabbitMQ: replicated quorum queues, which survive a node's loss; Redis: none."""
    return {"x-queue-type": "quorum"} if broker_url.startswith(("amqp", "pyamqp")) else {}


def celery_config(settings: Settings) -> dict[str, Any]:
    transport_options: dict[str, Any] = {}
    transport: dict[str, Any] = {}
    if settings.broker_url.startswith("redis://"):
        # kombu's Redis transport with the fix that keeps a worker alive through a Redis
        # restart (see the module). rediss:// keeps kombu's own, which checks its TLS options.
        transport = {"broker_transport": "workers.redis_transport:Transport"}
    if settings.broker_url.startswith(("redis", "rediss")):
        transport_options = {
            "visibility_timeout": settings.broker_visibility_timeout_s,
            # kombu sweeps for unacknowledged messages of dead workers every interval×throttle
            # seconds; restore promptly rather than every 100 s.
            "unacked_restore_interval": 5,
            "unacked_restore_throttle": 1,
            # Consume queues in the order the worker lists them: critical first.
            "queue_order_strategy": "priority",
            "socket_timeout": 10,
            "socket_connect_timeout": 5,
        }
    elif settings.broker_url.startswith(("amqp", "pyamqp")):
        # Publisher confirms: apply_async returns only once RabbitMQ has the message.
        transport_options = {"confirm_publish": True}
    return {
        "broker_url": settings.broker_url,
        **transport,
        "broker_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        "task_queues": [Queue(q, Exchange(q), routing_key=q, queue_arguments=queue_arguments(settings.broker_url))
                        for q in QUEUES],
        "task_default_queue": "events",
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "worker_prefetch_multiplier": 1,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "task_time_limit": 300,
        "task_soft_time_limit": 240,
        "timezone": "UTC",
        "beat_schedule": {
            # SES notifications from SQS into reporting.email_events, then the trend tables.
            "report-ingest": {"task": "declic.report.ingest", "schedule": 60.0, "options": {"expires": 55}},
            "report-aggregate": {"task": "declic.report.aggregate", "schedule": 300.0, "options": {"expires": 290}},
        },
    }


app = Celery("declic", set_as_current=False)


@app.on_configure.connect
def _configure(sender: Celery, **_: Any) -> None:
    # Settings are read when Celery first needs its configuration, not at import.
    sender.conf.update(celery_config(get_settings()))


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)


# A worker started with a setting missing would take messages only to retry them forever.
EX_CONFIG = 78  # sysexits.h: "configuration error", so a supervisor can tell it from a crash


@signals.worker_init.connect
def _refuse_to_start_misconfigured(**_: Any) -> None:
    from workers.runtime import preflight

    problems = preflight(get_settings())
    if problems:
        structlog.get_logger("declic").error("worker_cannot_start", problems=problems)
        raise SystemExit(EX_CONFIG)


@signals.task_retry.connect
def _log_retry(sender: Any = None, reason: Any = None, **_: Any) -> None:
    # Celery's own retry line is quiet at INFO (declic.logs); this one names the task and the
    # error's class, never its message, which may quote data or a URL with its password.
    structlog.get_logger("declic").warning(
        "task_retrying", task=getattr(sender, "name", None), error=reason.__class__.__name__
    )


app.autodiscover_tasks(["workers", "reporting"], related_name="tasks", force=True)
