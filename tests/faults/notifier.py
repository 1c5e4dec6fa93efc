"""SES event publishing for the stand-in: a ``Send`` notification for every accepted message.

Real SES, sending with a configuration set whose event destination includes ``Send``, publishes
one notification per accepted message, carrying the message's tags — ``send_id`` among them —
to SNS and on to SQS, where Déclic's reporting consumer stores it in
``reporting.email_events``. This thread plays that part for the fault run: it reads the
stand-in's record of accepted messages (``GET /_standin/accepted``), builds each notification
from the documented sample (``tests/data/ses/event_send.json``) and hands it, ``delay_s`` later,
to the same ingestion the SQS consumer uses (:func:`reporting.ingest.ingest`). It keeps trying
while Postgres is down, as SQS would keep the messages.

It is what lets a worker tell, after an ambiguous SES call (a timeout after SES accepted), that
the message already went — without sending it again.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from datetime import UTC, datetime
from typing import Any

import psycopg
import psycopg_pool
import structlog
from psycopg.rows import dict_row

from declic.settings import REPO_ROOT
from declic.standin import StandInClient
from reporting.ingest import Received, ingest

log = structlog.get_logger("declic.faults")
_SAMPLE: dict[str, Any] = json.loads((REPO_ROOT / "tests/data/ses/event_send.json").read_text())


def send_notification(record: dict[str, Any]) -> str:
    """The SES ``Send`` event for one message the stand-in accepted (raw delivery, no SNS envelope)."""
    event = copy.deepcopy(_SAMPLE)
    mail = event["mail"]
    stamp = datetime.fromtimestamp(record["t"], UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    mail["timestamp"] = stamp
    mail["messageId"] = mail["commonHeaders"]["messageId"] = record["message_id"]
    mail["destination"] = mail["commonHeaders"]["to"] = ["customer@example.com"]
    mail["tags"] = {**{k: v for k, v in mail["tags"].items() if k.startswith("ses:")},
                    **{name: [value] for name, value in record["tags"].items()}}
    return json.dumps(event)


class SendNotifier:
    """Polls the stand-in and stores a Send notification for each accepted message."""

    def __init__(self, standin: StandInClient, database_url: str, *, delay_s: float = 0.5) -> None:
        self.standin = standin
        self.delay_s = delay_s
        self.stored = 0
        self._seen = 0
        self._waiting: list[tuple[float, dict[str, Any]]] = []
        self._pool: psycopg_pool.ConnectionPool[Any] = psycopg_pool.ConnectionPool(
            database_url, min_size=0, max_size=1, timeout=5, open=True, kwargs={"row_factory": dict_row},
            check=psycopg_pool.ConnectionPool.check_connection,
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ses-send-notifier", daemon=True)

    def start(self) -> SendNotifier:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._pool.close()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.tick()

    def tick(self) -> None:
        """Pick up new acceptances; store those older than ``delay_s``."""
        fresh = self.standin.accepted(after=self._seen)
        self._seen += len(fresh)
        self._waiting += [(time.time(), record) for record in fresh]
        due = [record for at, record in self._waiting if at + self.delay_s <= time.time()]
        if not due:
            return
        try:
            ingest(self._pool, [Received(send_notification(r), r["message_id"]) for r in due], "standin")
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            log.warning("send_notifications_deferred", count=len(due), reason=exc.__class__.__name__)
            return
        self.stored += len(due)
        self._waiting = self._waiting[len(due):]
