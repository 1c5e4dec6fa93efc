"""The fault harness: the real pipeline, a seeded event stream, and a closing reconciliation.

A :class:`Run` is real processes on the run's own Redis and Postgres (:mod:`tests.faults.infra`)
— with a vhost of the machine's RabbitMQ as the broker when the scenario runs on RabbitMQ:
an ingest worker, send workers, the dispatcher, all ``celery worker``/``declic`` processes
speaking to the SES stand-in as SES (``AWS_ENDPOINT_URL_SESV2``). Events come from the
benchmark's seeded workload through the producer SDK. A scenario injects its fault while the
events flow, waits until everything is final, then :meth:`Run.reconcile` checks, against
Postgres and the stand-in's own record of what it accepted:

- **lost** — an event published but never ingested; a (flow, step) its type always causes
  that has no send; a send not in a final state — ``sent``, ``skipped`` with a reason,
  ``failed`` with a reason — when the run ends; a send marked ``sent`` that SES never accepted;
- **duplicated** — SES accepted more than one message for one ``send_id`` tag (each extra
  message counts one).
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from bench.workload import Workload
from declic.processes import ManagedProcess, WorkerProcess
from declic.standin import StandInClient
from events import Publisher, PublishError
from events.outbox import Outbox
from events.publisher import OUTBOX_QUEUES
from flows import Catalogue
from flows.schedules import daytime_zone
from tests.faults.infra import RabbitVhost

FINAL = ("sent", "skipped", "failed")
# Brokers a scenario may run on: ``@pytest.mark.parametrize("broker_kind", BROKERS, indirect=True)``.
BROKERS = ["redis", "rabbitmq"]
# Event types of the workload that need nothing beyond SES (the invoice flow needs S3).
_LEAVE_OUT = {"invoice_issued"}


@dataclass
class Result:
    """One scenario's figures, as the table at the end of the run shows them."""

    scenario: str
    broker: str = "redis"
    events: int = 0
    emails: int = 0
    lost: int = 0
    duplicated: int = 0
    sends: int = 0
    skipped: int = 0
    failed: int = 0
    elapsed_s: float = 0.0
    # Kills: the worst time from a kill until every send claimed at that moment was final.
    # Restarts: from the server going down until SES accepted the next message.
    recover_s: float | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def seeded_events(catalogue: Catalogue, count: int, run: str, seed: int = 6) -> list[dict[str, Any]]:
    """``count`` events of the benchmark's shop mix, the same for the same seed and run name."""
    workload = Workload(catalogue, seed=seed, contacts=max(200, count), zone=daytime_zone())
    events: list[dict[str, Any]] = []
    batch = 0
    while len(events) < count:
        more = workload.events(count, f"{run}-{batch}")
        events += [e for e in more if e["type"] not in _LEAVE_OUT]
        batch += 1
    return events[:count]


def paced(per_s: float) -> Callable[[int], None]:
    """A ``pace`` for :meth:`Run.publish`: ``per_s`` events a second, each publish's own time included.

    A fixed sleep after each publish adds the publish's cost to every interval: on two busy
    cores 75 events/s became about 45, and a scenario took longer than it meant to. A publish
    that took longer than the interval (the broker down) is not made up for with a burst.
    """
    interval = 1 / per_s
    last = time.monotonic()

    def pace(i: int) -> None:
        nonlocal last
        wait = last + interval - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        last = time.monotonic()

    return pace


def expected_steps(catalogue: Catalogue, event_type: str) -> set[tuple[str, str]]:
    """(flow, step) pairs every event of this type causes: flows without a trigger condition."""
    return {(flow.name, step.name) for flow in catalogue.for_event(event_type)
            if flow.trigger.condition is None for step in flow.all_steps}


class Run:
    """One scenario's processes, publisher and bookkeeping; use :func:`pipeline`."""

    def __init__(self, env: Mapping[str, str], log_dir: Path, database_url: str, broker_url: str,
                 standin: StandInClient, catalogue: Catalogue, rabbit: RabbitVhost | None = None) -> None:
        self.env = dict(env)
        self.log_dir = log_dir
        self.database_url = database_url
        self.broker_url = broker_url
        self.rabbit = rabbit
        self.broker = "rabbitmq" if rabbit is not None else "redis"
        self.standin = standin
        self.catalogue = catalogue
        self.processes: dict[str, ManagedProcess] = {}
        self.published: dict[str, dict[str, Any]] = {}
        self.publish_times: dict[str, float] = {}
        self.publisher = Publisher(broker_url, retries=20)
        self.publish_errors = 0
        self.restarts: Counter[str] = Counter()
        self._stopping = threading.Event()
        self._supervising: threading.Thread | None = None
        self.started = time.time()

    # -- processes --------------------------------------------------------------------------

    def worker(self, name: str, queues: list[str], concurrency: int = 8) -> WorkerProcess:
        """Start a ``celery worker`` (threads) and wait until it consumes."""
        process = WorkerProcess(self.env, queues, concurrency=concurrency, name=name,
                                log_path=self.log_dir / f"{name}.log")
        process.start()
        self.processes[name] = process
        return process

    def dispatcher(self) -> ManagedProcess:
        process = ManagedProcess([sys.executable, "-m", "declic", "dispatcher", "--interval", "0.2"], self.env,
                                 self.log_dir / "dispatcher.log", ready_line="dispatcher_started", name="dispatcher")
        process.start()
        self.processes["dispatcher"] = process
        return process

    def wait_ready(self) -> None:
        for process in self.processes.values():
            process.wait_ready(90)

    def supervise(self) -> None:
        """Restart any process that exits, as ``restart: unless-stopped`` does in docker-compose.yml."""
        self._supervising = threading.Thread(target=self._supervise, name="supervisor", daemon=True)
        self._supervising.start()

    def _supervise(self) -> None:
        while not self._stopping.wait(0.5):
            for name, process in list(self.processes.items()):
                if process.returncode is not None and not self._stopping.is_set():
                    self.restarts[name] += 1
                    again = ManagedProcess(process.argv, self.env, process.log_path, ready_line=process.ready_line,
                                           name=name)
                    self.processes[name] = again.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._supervising is not None:
            self._supervising.join(5)
        self.publisher.close()
        # All at once, with a short grace: a worker in warm shutdown may wait out its grace period
        # (on RabbitMQ, a thread holding a retry until its ETA), and the scenario's results are
        # already taken. What a killed process leaves (an unacknowledged message, a transaction
        # rolled back) is in servers the next scenario empties (``clean``) or a vhost deleted.
        stopping = [threading.Thread(target=process.stop, args=(1,), name=f"stop-{name}")
                    for name, process in self.processes.items()]
        for thread in stopping:
            thread.start()
        for thread in stopping:
            thread.join()

    # -- events -----------------------------------------------------------------------------

    def publish(self, events: list[dict[str, Any]], *, pace: Callable[[int], None] | None = None) -> None:
        """Publish through the SDK, each with a fresh ``occurred_at``; ``pace(i)`` between events."""
        from datetime import UTC, datetime

        for i, event in enumerate(events):
            event = {**event, "occurred_at": datetime.now(UTC).isoformat()}
            while True:
                try:
                    self.publisher.publish(event)
                    break
                except PublishError:
                    # "Not accepted; safe to publish again" — what a producer does with it.
                    self.publish_errors += 1
                    time.sleep(0.5)
            self.published[event["id"]] = event
            self.publish_times[event["id"]] = time.time()
            if pace is not None:
                pace(i)

    def db(self) -> psycopg.Connection[dict[str, Any]]:
        return psycopg.connect(self.database_url, autocommit=True, row_factory=dict_row, connect_timeout=5)

    def unfinished(self) -> int:
        """Published events not yet ingested, plus their sends not yet final (-1: Postgres down)."""
        progress = self._progress()
        return -1 if progress is None else sum(progress)

    def _progress(self) -> tuple[int, int] | None:
        """(published events not yet ingested, their sends not yet final); None while Postgres is down."""
        try:
            with self.db() as conn:
                row = conn.execute(
                    "SELECT (SELECT count(*) FROM events WHERE id = ANY(%(ids)s)) AS ingested,"
                    " (SELECT count(*) FROM sends WHERE event_id = ANY(%(ids)s)"
                    "   AND state NOT IN ('sent', 'skipped', 'failed')) AS open",
                    {"ids": list(self.published)},
                ).fetchone()
        except psycopg.OperationalError:
            return None
        assert row is not None
        return len(self.published) - int(row["ingested"]), int(row["open"])

    def wait_final(self, timeout: float = 180.0) -> bool:
        """Block until every published event is ingested and all its sends are final.

        Gives up before ``timeout`` only when waiting cannot change the outcome: events are
        missing, every send is final, and for 5 s the Redis broker has held no message at
        all — no queue, nothing unacknowledged, nothing in the outbox, so no restore to come. Those events are lost
        (the reconciliation counts them); waiting out the timeout would only cost time.
        """
        deadline = time.monotonic() + timeout
        empty_since: float | None = None
        while time.monotonic() < deadline:
            progress = self._progress()
            if progress == (0, 0):
                return True
            if progress is not None and progress[1] == 0 and self._broker_empty():
                empty_since = empty_since or time.monotonic()
                if time.monotonic() - empty_since >= 5.0:
                    return False
            else:
                empty_since = None
            time.sleep(0.25)
        return False

    def _broker_empty(self) -> bool:
        """Whether the Redis broker holds no message: no non-empty list, empty ``unacked`` (never on RabbitMQ)."""
        if self.rabbit is not None:
            return False
        import redis

        try:
            with redis.Redis.from_url(self.broker_url, socket_timeout=5) as client:
                if client.hlen("unacked") or Outbox(client, OUTBOX_QUEUES).pending():
                    return False
                return not any(client.llen(key) for key in client.scan_iter(_type="list"))
        except redis.RedisError:
            return False

    def sending_now(self) -> list[str]:
        """Sends claimed at this moment (``sending``): what a worker killed now holds."""
        with self.db() as conn:
            return [str(r["id"]) for r in conn.execute("SELECT id FROM sends WHERE state = 'sending'")]

    def finished_at(self, send_ids: list[str]) -> float | None:
        """When the last of these sends reached its final state (epoch seconds), None if one has not."""
        if not send_ids:
            return None
        with self.db() as conn:
            rows = conn.execute("SELECT state, extract(epoch FROM updated_at)::float8 AS at FROM sends"
                                " WHERE id = ANY(%s::uuid[])", (send_ids,)).fetchall()
        if any(r["state"] not in FINAL for r in rows):
            return None
        return max((float(r["at"]) for r in rows), default=None)

    def flowing_again(self, since: float) -> float | None:
        """Seconds from ``since`` (epoch) to the first message SES accepted after it."""
        after = [float(r["t"]) for r in self.standin.accepted() if float(r["t"]) >= since]
        return min(after) - since if after else None

    # -- the reconciliation -----------------------------------------------------------------

    def reconcile(self, result: Result) -> Result:
        """Fill ``result`` from Postgres and the stand-in: emails, lost, duplicated, and why."""
        ids = list(self.published)
        result.broker = self.broker
        with self.db() as conn:
            ingested = {r["id"] for r in conn.execute("SELECT id FROM events WHERE id = ANY(%s)", (ids,))}
            sends = conn.execute(
                "SELECT id::text AS id, event_id, flow, step, state, reason FROM sends WHERE event_id = ANY(%s)",
                (ids,),
            ).fetchall()
        accepted = Counter(str(r["tags"].get("send_id")) for r in self.standin.accepted())
        problems: list[str] = []
        lost = 0
        missing_events = [i for i in ids if i not in ingested]
        lost += len(missing_events)
        problems += [f"event never ingested: {i}" for i in missing_events[:5]]
        by_event: dict[str, Counter[tuple[str, str]]] = {}
        for s in sends:
            by_event.setdefault(s["event_id"], Counter())[(s["flow"], s["step"])] += 1
            if s["state"] not in FINAL:
                lost += 1
                problems.append(f"send {s['id']} ({s['flow']}/{s['step']}) ended {s['state']}: {s['reason']}")
            elif s["state"] != "sent" and not s["reason"]:
                lost += 1
                problems.append(f"send {s['id']} {s['state']} without a reason")
            elif s["state"] == "sent" and accepted[s["id"]] == 0:
                lost += 1
                problems.append(f"send {s['id']} marked sent but SES never accepted it")
        for event_id in ingested:
            seen = by_event.get(event_id, Counter())
            expected = expected_steps(self.catalogue, self.published[event_id]["type"])
            for pair in expected - set(seen):
                lost += 1
                problems.append(f"event {event_id}: no send for {pair}")
            problems += [f"event {event_id}: {n} sends for {pair}" for pair, n in seen.items() if n > 1]
        ours = {s["id"] for s in sends}
        duplicated = sum(n - 1 for send_id, n in accepted.items() if send_id in ours and n > 1)
        result.events = len(ids)
        result.emails = sum(n for send_id, n in accepted.items() if send_id in ours)
        result.sends = len(sends)
        result.skipped = sum(1 for s in sends if s["state"] == "skipped")
        result.failed = sum(1 for s in sends if s["state"] == "failed")
        result.lost, result.duplicated = lost, duplicated
        result.elapsed_s = round(time.time() - self.started, 1)
        result.problems = problems[:20]
        result.notes["republished"] = self.republished()
        reasons = Counter(str(s["reason"]).split(":")[0] for s in sends if s["state"] != "sent")
        result.notes["not_sent"] = dict(reasons)
        if lost:
            result.notes.update(self.broker_state())
        return result

    def republished(self) -> int:
        """Events the dispatcher published again from the outbox (their message was lost)."""
        import json

        log = self.log_dir / "dispatcher.log"
        lines = log.read_text(errors="replace").splitlines() if log.exists() else []
        return sum(int(json.loads(line).get("count", 0)) for line in lines if '"events_republished"' in line)

    def broker_state(self) -> dict[str, Any]:
        """What the broker still holds: RabbitMQ's queues, or kombu's Redis unacked hash and restore lock."""
        if self.rabbit is not None:
            try:
                return {"broker_queues": self.rabbit.queues()}
            except (RuntimeError, OSError) as exc:
                return {"broker_state": f"unreadable: {exc}"}
        import redis

        try:
            with redis.Redis.from_url(self.broker_url, socket_timeout=5) as client:
                return {"broker_unacked": int(client.hlen("unacked")),
                        "restore_mutex_ttl_s": int(client.ttl("unacked_mutex"))}
        except redis.RedisError as exc:
            return {"broker_state": f"unreadable: {exc.__class__.__name__}"}


@contextlib.contextmanager
def pipeline(env: Mapping[str, str], log_dir: Path, database_url: str, broker_url: str, standin: StandInClient,
             catalogue: Catalogue, rabbit: RabbitVhost | None = None) -> Iterator[Run]:
    """A :class:`Run` whose processes are all stopped on exit, even when the scenario fails."""
    run = Run(env, log_dir, database_url, broker_url, standin, catalogue, rabbit)
    try:
        yield run
    finally:
        run.stop()


def settle(run: Run, result: Result, timeout: float = 180.0) -> Result:
    """Wait for the run to finish, reconcile it, and check what every scenario promises."""
    finished = run.wait_final(timeout)
    run.reconcile(result)
    if not finished:
        result.problems.insert(0, f"not final after {timeout:.0f} s")
    return result


def assert_promises(result: Result) -> None:
    """Nothing lost and nothing sent twice.

    On Redis, kombu pops a message (BRPOP) before recording it as unacknowledged, so a worker
    that dies in between drops an event not yet in Postgres; the outbox publishes it again
    (``events_republished`` in the dispatcher's log, ``republished`` in the table's notes).
    """
    assert result.lost == 0, "\n".join(result.problems)
    assert result.events > 0 and result.emails > 0
    assert result.duplicated == 0, "\n".join(result.problems)
