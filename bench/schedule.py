"""``declic bench schedule``: a million future sends held in Postgres, and what the workers pay.

Follow-ups (day 2, day 7 of onboarding; surveys a week later) wait in Postgres as ``scheduled``
sends, not in the broker or in a worker's memory. This fills the schedule with ``--sends`` rows
(one contact and one signup per ten sends, due over the next 60 days), makes ``--due`` of them
fall due a few seconds after the workers start, and measures, with a real worker and the real
dispatcher against the SES stand-in:

- the peak resident memory of the worker and of the dispatcher;
- how late the due sends went out (``sent_at - due_at``: p50, p99, max), due at 200 a second
  from a few seconds after the workers are ready;
- the dispatcher's claim query on the full table (median of repeated runs, nothing due);
- the table's size on disk.
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import psycopg
import structlog
from psycopg.types.json import Jsonb
from rich.progress import Progress
from rich.table import Table

from bench.measure import peak_rss_mb, percentile
from declic.processes import ManagedProcess, WorkerProcess
from declic.services import start_services
from declic.settings import REPO_ROOT
from declic.standin import Faults, StandInProcess
from flows import load_catalogue
from flows.schedules import daytime_zone
from workers.app import QUEUES
from workers.migrate import migrate
from workers.store import Store

log = structlog.get_logger("declic.bench.schedule")

SENDS_PER_CONTACT = 10
_CHUNK = 100_000  # rows per INSERT, so progress shows and no statement runs for minutes


@dataclass
class ScheduleReport:
    sends: int
    due: int
    sent: int
    fill_s: float
    table_mb: float
    worker_peak_rss_mb: float
    dispatcher_peak_rss_mb: float
    late_p50_ms: float
    late_p99_ms: float
    late_max_ms: float
    claim_query_ms: float
    complete: bool

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> Table:
        table = Table(title=f"declic bench schedule — {self.sends:,} scheduled sends, {self.due:,} falling due")
        table.add_column("figure")
        table.add_column("value", justify="right")
        rows = [
            ("sends held in Postgres", f"{self.sends:,} ({self.table_mb:,.0f} MB with indexes)"),
            ("time to fill the schedule", f"{self.fill_s:.1f} s"),
            ("worker peak memory (RSS)", f"{self.worker_peak_rss_mb:.0f} MB"),
            ("dispatcher peak memory (RSS)", f"{self.dispatcher_peak_rss_mb:.0f} MB"),
            ("due sends sent", f"{self.sent:,} of {self.due:,}"),
            ("sent after due: p50 / p99 / max", f"{self.late_p50_ms:,.0f} / {self.late_p99_ms:,.0f} / "
                                                 f"{self.late_max_ms:,.0f} ms"),
            ("dispatcher claim query on the full table", f"{self.claim_query_ms:.2f} ms"),
        ]
        for label, value in rows:
            table.add_row(label, value)
        return table


def _sample_envelope(zone: str) -> dict[str, Any]:
    sample = dict(load_catalogue(REPO_ROOT / "flows" / "catalogue")["onboarding"].sample)
    sample["contact"] = {**sample["contact"], "timezone": zone}
    return sample


DUE_PER_S = 200.0


def fill_schedule(conn: psycopg.Connection[Any], sends: int, zone: str) -> float:
    """Contacts, signups and ``sends`` scheduled onboarding sends, due over the next 60 days."""
    started = time.monotonic()
    contacts = max(1, -(-sends // SENDS_PER_CONTACT))
    envelope = _sample_envelope(zone)
    with Progress(transient=True) as progress:
        task = progress.add_task("filling the schedule", total=contacts + sends)
        for low in range(0, contacts, _CHUNK):
            high = min(contacts, low + _CHUNK)
            conn.execute(
                "INSERT INTO contacts (id, email, locale, timezone, opt_in, profile_at)"
                " SELECT 'bc-' || i, 'bench' || i || '@example.com', 'en', %(zone)s, true, now()"
                "   FROM generate_series(%(low)s, %(high)s - 1) i",
                {"zone": zone, "low": low, "high": high},
            )
            conn.execute(
                "INSERT INTO events (id, type, occurred_at, contact_id, payload)"
                " SELECT 'be-' || i, 'signup', now(), 'bc-' || i,"
                "        jsonb_set(jsonb_set(%(env)s, '{id}', to_jsonb('be-' || i)),"
                "                  '{contact}', %(env)s->'contact' || jsonb_build_object("
                "                      'id', 'bc-' || i, 'email', 'bench' || i || '@example.com'))"
                "   FROM generate_series(%(low)s, %(high)s - 1) i",
                {"env": Jsonb(envelope), "low": low, "high": high},
            )
            progress.advance(task, high - low)
        for low in range(0, sends, _CHUNK):
            high = min(sends, low + _CHUNK)
            conn.execute(
                "INSERT INTO sends (id, send_key, event_id, contact_id, flow, step, variant, category, queue,"
                "                   state, due_at)"
                " SELECT gen_random_uuid(), 'bench:' || i, 'be-' || (i / %(per)s), 'bc-' || (i / %(per)s),"
                "        'onboarding', CASE WHEN i %% 2 = 0 THEN 'day2' ELSE 'day7' END, 'default',"
                "        'marketing', 'send.bulk', 'scheduled',"
                "        now() + interval '1 day' + random() * interval '60 days'"
                "   FROM generate_series(%(low)s, %(high)s - 1) i",
                {"per": SENDS_PER_CONTACT, "low": low, "high": high},
            )
            progress.advance(task, high - low)
    conn.execute("ANALYZE contacts, events, sends")
    return time.monotonic() - started


def bring_forward(conn: psycopg.Connection[Any], due: int, in_s: float) -> None:
    """Make ``due`` of the sends fall due ``in_s`` from now, :data:`DUE_PER_S` a second."""
    conn.execute(
        "UPDATE sends s SET due_at = now() + make_interval(secs => %(in_s)s + picked.n / %(rate)s)"
        "  FROM (SELECT id, row_number() OVER () - 1 AS n FROM sends WHERE state = 'scheduled'"
        "         ORDER BY due_at LIMIT %(due)s) picked"
        " WHERE s.id = picked.id",
        {"in_s": in_s, "rate": DUE_PER_S, "due": due},
    )


def _claim_query_ms(database_url: str, runs: int = 20) -> float:
    store = Store.connect(database_url, max_size=1)
    try:
        timings = []
        for _ in range(runs):
            started = time.perf_counter()
            store.dispatch_due(limit=500)
            timings.append((time.perf_counter() - started) * 1000)
        return statistics.median(timings)
    finally:
        store.close()


def run_schedule_bench(
    *, sends: int = 1_000_000, due: int = 2_000, latency_ms: float = 50.0, workdir: Path | None = None,
    services_mode: Literal["demo", "test"] = "demo", timeout_s: float = 300.0,
) -> ScheduleReport:
    work = workdir or REPO_ROOT / "out" / "bench-schedule"
    due = min(due, sends)
    with start_services(work / ".services", mode=services_mode) as services, \
            StandInProcess(work / "logs" / "standin.log", Faults(latency_ms=latency_ms)) as standin:
        migrate(services.database_url)
        env = {**services.env(), "AWS_ENDPOINT_URL_SESV2": standin.url, "DECLIC_LOG_FORMAT": "json"}
        with psycopg.connect(services.database_url, autocommit=True) as conn:
            fill_s = fill_schedule(conn, sends, zone=daytime_zone())
            row = conn.execute("SELECT pg_total_relation_size('sends') / 1048576.0").fetchone()
            table_mb = float(row[0]) if row else 0.0
            worker = WorkerProcess(env, list(QUEUES), concurrency=32, pool="threads", name="worker",
                                   log_path=work / "logs" / "worker.log")
            dispatcher = ManagedProcess([sys.executable, "-m", "declic", "dispatcher"], env,
                                        work / "logs" / "dispatcher.log", ready_line="dispatcher_started",
                                        name="dispatcher")
            with worker, dispatcher:
                worker.wait_ready(90)
                dispatcher.wait_ready(60)
                bring_forward(conn, due, in_s=3.0)
                deadline = time.monotonic() + timeout_s
                sent = 0
                while time.monotonic() < deadline:
                    row = conn.execute("SELECT count(*) FROM sends"
                                       " WHERE state IN ('sent', 'skipped', 'failed')").fetchone()
                    sent = int(row[0]) if row else 0
                    if sent >= due:
                        break
                    time.sleep(0.5)
                assert worker.pid is not None and dispatcher.pid is not None
                worker_rss, dispatcher_rss = peak_rss_mb([worker.pid]), peak_rss_mb([dispatcher.pid])
            late = [float(r[0]) * 1000 for r in conn.execute(
                "SELECT extract(epoch FROM sent_at - due_at) FROM sends WHERE state = 'sent'").fetchall()]
        claim_ms = _claim_query_ms(services.database_url)
    return ScheduleReport(
        sends=sends, due=due, sent=len(late), fill_s=round(fill_s, 1), table_mb=round(table_mb, 1),
        worker_peak_rss_mb=round(worker_rss, 1), dispatcher_peak_rss_mb=round(dispatcher_rss, 1),
        late_p50_ms=round(percentile(late, 50), 1), late_p99_ms=round(percentile(late, 99), 1),
        late_max_ms=round(max(late, default=0.0), 1), claim_query_ms=round(claim_ms, 2), complete=sent >= due,
    )
