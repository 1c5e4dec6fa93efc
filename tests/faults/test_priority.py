"""Priority: password resets published behind a 20,000-email bulk backlog still go out at once."""

from __future__ import annotations

import statistics
import time

import pytest

from bench.measure import percentile
from declic.standin import StandInClient
from flows import Catalogue
from tests.faults.backlog import BULK_FLOW, push_events, push_messages, write_ledger
from tests.faults.harness import Result, Run, seeded_events
from tests.faults.infra import RestartablePostgres, RestartableRedis
from tests.faults.report import Results
from workers.app import INGEST_QUEUES, QUEUES

pytestmark = pytest.mark.faults
BACKLOG = 20_000
RESETS = 20


def test_password_resets_overtake_a_bulk_backlog(
    run: Run, catalogue: Catalogue, fault_postgres: RestartablePostgres, fault_redis: RestartableRedis,
    standin_client: StandInClient, results: Results,
) -> None:
    """Resets published behind 20,000 queued legal_update emails reach SES in a small fraction of the drain time."""
    run.env["DECLIC_SES_MAX_RATE"] = "200"  # bulk drains at the account's rate; resets use the reserve
    backlog = write_ledger(fault_postgres.url, catalogue, BACKLOG)
    push_messages(fault_redis.url, backlog)  # before any worker, which would take the template message
    # The default deployment: one `declic worker` on every queue, critical listed before bulk.
    run.worker("all", list(QUEUES), concurrency=8)
    run.wait_ready()
    time.sleep(3.0)  # the backlog is draining at full speed
    resets = [e for e in seeded_events(catalogue, 400, "priority") if e["type"] == "password_reset"][:RESETS]
    assert len(resets) == RESETS
    with fault_redis.client() as client:
        queued = [int(client.llen("send.bulk"))]
    run.publish(resets, pace=lambda i: time.sleep(0.25))
    with fault_redis.client() as client:
        queued.append(int(client.llen("send.bulk")))
    deadline = time.monotonic() + 60
    latencies: list[float] = []
    while time.monotonic() < deadline:
        latencies = _reset_latencies(run, standin_client)
        if len(latencies) == RESETS:
            break
        time.sleep(0.25)
    bulk_rate = _bulk_rate(run, standin_client, window_s=5.0)
    drain_s = statistics.mean(queued) / bulk_rate if bulk_rate else float("inf")
    result = Result("priority: resets behind 20k bulk", events=RESETS + BACKLOG, emails=len(latencies),
                    lost=RESETS - len(latencies))
    result.notes.update(reset_p50_ms=round(percentile(latencies, 50) * 1000), reset_p95_ms=round(
        percentile(latencies, 95) * 1000), reset_max_ms=round(max(latencies, default=0) * 1000),
        bulk_per_s=round(bulk_rate, 1), bulk_queued=queued, backlog_drain_s=round(drain_s))
    result.elapsed_s = round(time.time() - run.started, 1)
    results.add(result)
    assert len(latencies) == RESETS, "every reset reached SES while the backlog was still queued"
    assert queued[-1] > BACKLOG / 2, "the backlog was still there when the last reset was published"
    # Relative, not timed: a reset queued behind the bulk would wait the backlog's drain time.
    assert max(latencies) < 0.02 * drain_s, result.notes


def _reset_latencies(run: Run, standin: StandInClient) -> list[float]:
    """Seconds from publish to SES acceptance, for each reset that reached SES."""
    with run.db() as conn:
        rows = conn.execute("SELECT id::text AS id, event_id FROM sends WHERE flow = 'password_reset'").fetchall()
    event_of = {r["id"]: r["event_id"] for r in rows}
    return [float(a["t"]) - run.publish_times[event_of[a["tags"]["send_id"]]]
            for a in standin.accepted() if a["tags"].get("send_id") in event_of]


def _bulk_rate(run: Run, standin: StandInClient, window_s: float) -> float:
    """Bulk emails per second SES accepted over the last ``window_s`` seconds of acceptances."""
    times = sorted(float(a["t"]) for a in standin.accepted() if a["tags"].get("flow") == BULK_FLOW)
    if len(times) < 2:
        return 0.0
    recent = [t for t in times if t >= times[-1] - window_s]
    return (len(recent) - 1) / max(1e-3, recent[-1] - recent[0])


def test_password_resets_behind_a_bulk_event_burst(
    run: Run, catalogue: Catalogue, fault_redis: RestartableRedis, standin_client: StandInClient,
    results: Results,
) -> None:
    """Resets published behind 20,000 queued legal_update events reach SES before the events are ingested."""
    push_events(fault_redis.url, catalogue, BACKLOG)  # a producer announcing a policy change to everyone
    run.worker("ingest", list(INGEST_QUEUES))
    run.worker("send", ["send.critical", "send.transactional", "send.bulk"])
    run.wait_ready()
    time.sleep(3.0)
    resets = [e for e in seeded_events(catalogue, 400, "burst") if e["type"] == "password_reset"][:RESETS]
    with fault_redis.client() as client:
        queued = int(client.llen("events"))
    run.publish(resets, pace=lambda i: time.sleep(0.1))
    started = time.monotonic()
    latencies: list[float] = []
    while time.monotonic() - started < 30 and len(latencies) < RESETS:
        time.sleep(0.5)
        latencies = _reset_latencies(run, standin_client)
    with fault_redis.client() as client:
        ingest_rate = (queued - int(client.llen("events"))) / (time.monotonic() - started + 2.0)
    drain_s = queued / ingest_rate if ingest_rate > 0 else float("inf")
    result = Result("priority: resets behind 20k bulk events", events=RESETS + BACKLOG, emails=len(latencies))
    result.notes.update(resets_through_in_30s=len(latencies), events_queued=queued,
                        ingest_per_s=round(ingest_rate, 1), backlog_drain_s=round(drain_s),
                        reset_max_ms=round(max(latencies, default=0) * 1000))
    result.elapsed_s = round(time.time() - run.started, 1)
    results.add(result)
    assert len(latencies) == RESETS, f"resets still queued behind {queued} bulk events after 30 s"
    assert max(latencies) < 0.02 * drain_s, result.notes
