"""``declic bench``: the whole pipeline against a naive Celery baseline, in one run.

Both systems see the same services (Postgres, Redis), the same SES stand-in run as its own
process at a fixed latency (50 ms by default) and the same seeded workload, one after the
other so they never compete for the two cores. For each:

1. a short warm-up (imports, template compilation, connections), not measured;
2. **saturation**: ``events`` published as fast as the SDK goes, timed from the first publish
   to the last SES acceptance — emails/s, events/s, worker CPU per 1,000 emails, and the
   latency under a backlog (repeated ``repeats`` times; medians are reported);
3. **fixed load**: ``fixed_rate`` events/s for ``fixed_s`` seconds, paced — the latency from
   event accepted (publish returned) to SES accepted (the stand-in's clock; same machine).

Latency joins the stand-in's records (by their ``send_id`` tag) with the system's own table
(send → event) and the publish times (by event id).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import structlog
from rich.table import Table

from bench.measure import cpu_seconds, peak_rss_mb, percentile, pids_running
from bench.systems import System, declic_system, naive_system
from bench.workload import Workload
from declic.services import Services, start_services
from declic.settings import REPO_ROOT
from declic.standin import Faults, StandInClient, StandInProcess
from flows import load_catalogue
from flows.schedules import daytime_zone
from workers.migrate import migrate

log = structlog.get_logger("declic.bench")
FIGURES = ("emails_per_s", "p50_ms", "p95_ms", "p99_ms", "cpu_s_per_1k", "peak_rss_mb")


@dataclass(frozen=True)
class Phase:
    """What one phase measured."""

    name: str
    events: int
    emails: int
    elapsed_s: float
    latencies_ms: list[float]
    worker_cpu_s: float
    standin_cpu_s: float
    standin_requests: int
    complete: bool
    cpu_by_process: dict[str, float] = field(default_factory=dict)
    # CPU of everything else an email costs the machine: Postgres, Redis, the producer.
    service_cpu_s: dict[str, float] = field(default_factory=dict)

    @property
    def machine_cpu_ms_per_email(self) -> dict[str, float]:
        """Every measured process's CPU per email, and their total."""
        parts = {"workers": self.worker_cpu_s, **self.service_cpu_s, "stand-in": self.standin_cpu_s}
        per_email = {name: round(cpu * 1000 / max(1, self.emails), 3) for name, cpu in parts.items()}
        return {**per_email, "total": round(sum(per_email.values()), 3)}

    @property
    def emails_per_s(self) -> float:
        return self.emails / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def events_per_s(self) -> float:
        return self.events / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def cpu_s_per_1k(self) -> float:
        return self.worker_cpu_s * 1000 / self.emails if self.emails else 0.0

    def p(self, q: float) -> float:
        return percentile(self.latencies_ms, q)


@dataclass
class SystemReport:
    """One system's phases and the figures drawn from them."""

    name: str
    saturation: list[Phase] = field(default_factory=list)
    fixed: Phase | None = None
    peak_rss_mb: float = 0.0

    def figures(self, fixed_rate: float) -> dict[str, Any]:
        sat = self.saturation
        med = statistics.median
        fixed = self.fixed
        cpus = os.cpu_count() or 1
        standin_cpu = sum(p.standin_cpu_s for p in sat)
        return {
            "emails_per_s": round(med(p.emails_per_s for p in sat), 1),
            "events_per_s": round(med(p.events_per_s for p in sat), 1),
            # The latency contract is at a fixed offered load; under saturation it is queueing.
            "p50_ms": round(fixed.p(50), 1) if fixed else None,
            "p95_ms": round(fixed.p(95), 1) if fixed else None,
            "p99_ms": round(fixed.p(99), 1) if fixed else None,
            "max_ms": round(fixed.p(100), 1) if fixed else None,
            "fixed_load_events_per_s": fixed_rate,
            "fixed_load_p99_ms": round(fixed.p(99), 1) if fixed else None,
            "saturation_p50_ms": round(med(p.p(50) for p in sat), 1),
            "saturation_p95_ms": round(med(p.p(95) for p in sat), 1),
            "saturation_p99_ms": round(med(p.p(99) for p in sat), 1),
            "saturation_max_ms": round(med(p.p(100) for p in sat), 1),
            "cpu_s_per_1k": round(med(p.cpu_s_per_1k for p in sat), 3),
            # Which worker the CPU went to (ingest versus send), per 1,000 emails.
            "cpu_s_per_1k_by_process": {
                name: round(med(p.cpu_by_process.get(name, 0.0) * 1000 / max(1, p.emails) for p in sat), 3)
                for name in (sat[0].cpu_by_process if sat else {})
            },
            # Where an email's CPU goes on the whole machine, and the throughput that leaves on
            # these cores: the ceiling a CPU-bound pipeline reaches at best.
            "machine_cpu_ms_per_email": _median_parts([p.machine_cpu_ms_per_email for p in sat]),
            "cpu_ceiling_emails_per_s": round(
                cpus * 1000 / med(p.machine_cpu_ms_per_email["total"] for p in sat), 1) if sat else None,
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            # The stand-in's CPU as a share of the machine (all cores) while it was measured.
            "standin_cpu_share": round(standin_cpu / (sum(p.elapsed_s for p in sat) * cpus), 4) if sat else None,
            "standin_cpu_ms_per_request": round(standin_cpu * 1000 / max(1, sum(p.standin_requests for p in sat)), 4),
            "saturation_events": sat[0].events if sat else 0,
            "saturation_emails": sat[0].emails if sat else 0,
            "complete": all(p.complete for p in [*sat, *([fixed] if fixed else [])]),
        }


@dataclass
class BenchReport:
    pipeline: SystemReport
    baseline: SystemReport | None
    fixed_rate: float
    latency_ms: float
    elapsed_s: float = 0.0
    publish_batch: int = 1  # Déclic's events per publication (the baseline publishes one at a time)

    def as_json(self) -> dict[str, Any]:
        result: dict[str, Any] = {"pipeline": self.pipeline.figures(self.fixed_rate)}
        if self.baseline is not None:
            result["baseline"] = self.baseline.figures(self.fixed_rate)
            result["ratios"] = _ratios(result["pipeline"], result["baseline"])
        result["setup"] = {"standin_latency_ms": self.latency_ms, "cpus": os.cpu_count(),
                           "publish_batch": self.publish_batch,
                           "elapsed_s": round(self.elapsed_s, 1)}
        return result

    def table(self) -> Table:
        data = self.as_json()
        pipe, base = data["pipeline"], data.get("baseline") or {}
        ratios = data.get("ratios", {})
        table = Table("figure", "Déclic", "naive baseline", "ratio",
                      title=f"declic bench — SES stand-in at {self.latency_ms:g} ms, {os.cpu_count()} CPUs")
        rows = [("emails/s (saturation)", "emails_per_s"), ("events/s (saturation)", "events_per_s"),
                (f"p50 ms at {self.fixed_rate:g} events/s", "p50_ms"), (f"p95 ms at {self.fixed_rate:g} events/s",
                                                                        "p95_ms"),
                (f"p99 ms at {self.fixed_rate:g} events/s", "p99_ms"), (f"max ms at {self.fixed_rate:g} events/s",
                                                                        "max_ms"),
                ("p50 ms at saturation", "saturation_p50_ms"), ("p99 ms at saturation", "saturation_p99_ms"),
                ("worker CPU s per 1,000 emails", "cpu_s_per_1k"),
                ("machine CPU ms per email", "machine_cpu_ms_per_email"),
                ("CPU ceiling emails/s on these cores", "cpu_ceiling_emails_per_s"),
                ("… of which, by worker", "cpu_s_per_1k_by_process"), ("worker peak RSS MB", "peak_rss_mb"),
                ("stand-in CPU share of the machine", "standin_cpu_share"),
                ("stand-in CPU ms per request", "standin_cpu_ms_per_request")]
        for label, key in rows:
            ratio = ratios.get(key)
            table.add_row(label, _fmt(pipe.get(key)), _fmt(base.get(key)), f"{ratio:.2f}×" if ratio else "")
        return table


def _median_parts(runs: list[dict[str, float]]) -> dict[str, float]:
    return {name: round(statistics.median(r.get(name, 0.0) for r in runs), 3) for name in (runs[0] if runs else {})}


def service_roots(services: Services) -> dict[str, list[int]]:
    """The embedded Postgres (postmaster and its backends) and Redis of this run, by name.

    Shared local services also serve other programs, so they are not measured.
    """
    roots: dict[str, list[int]] = {}
    if services.sources.get("postgres") == "embedded" and services.directory is not None:
        # The postmaster is started with its data directory (-D), inside the services' folder.
        roots["postgres"] = pids_running(" -D ", str(services.directory))
    if services.sources.get("redis") == "embedded":
        # redis-server names itself after its address: "redis-server 127.0.0.1:<port>".
        roots["redis"] = pids_running("redis-server", f"127.0.0.1:{urlsplit(services.redis_url).port}")
    return roots


def _ratios(pipe: dict[str, Any], base: dict[str, Any]) -> dict[str, float]:
    """Pipeline over baseline for throughput; baseline over pipeline for costs (so >1 is better)."""
    out: dict[str, float] = {}
    for key in ("emails_per_s", "events_per_s"):
        if pipe.get(key) and base.get(key):
            out[key] = round(pipe[key] / base[key], 2)
    for key in ("p50_ms", "p95_ms", "p99_ms", "max_ms", "saturation_p50_ms", "saturation_p99_ms",
                "cpu_s_per_1k", "peak_rss_mb"):
        if pipe.get(key) and base.get(key):
            out[key] = round(base[key] / pipe[key], 2)
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v:g}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:,.4f}" if abs(value) < 1 else f"{value:,.1f}"
    return str(value)


def run_phase(system: System, standin: StandInClient, events: list[dict[str, Any]], *, name: str,
              rate: float | None = None, timeout_s: float = 300.0,
              services: dict[str, list[int]] | None = None, batch: int = 1) -> Phase:
    """Publish ``events`` (paced at ``rate`` per second, or flat out) and wait until all are final.

    With ``batch`` above 1 they are published ``batch`` at a time, as the HTTP API's batch
    endpoint and the SDK's ``publish_many`` do.
    """
    standin.reset()
    mark = system.mark()
    cpu0 = {name: cpu_seconds([pid]) for name, pid in system.pids.items()}
    services = services or {}
    service0 = {name: cpu_seconds(roots) for name, roots in services.items()}
    producer0 = time.process_time()
    published: dict[str, float] = {}
    start = time.time()
    for n in range(0, len(events), batch):
        if rate:
            wait = start + n / rate - time.time()
            if wait > 0:
                time.sleep(wait)
        chunk = events[n:n + batch]
        if batch > 1:
            system.publish_many(chunk)
        else:
            system.publish(chunk[0])
        taken_at = time.time()
        published.update((event["id"], taken_at) for event in chunk)
    deadline = time.monotonic() + timeout_s
    complete = False
    while time.monotonic() < deadline:
        if system.done(mark, len(events)):
            complete = True
            break
        time.sleep(0.1)
    cpu_by = {name: cpu_seconds([pid]) - cpu0.get(name, 0.0) for name, pid in system.pids.items()}
    # The producer is this process: publishing, and the few completion queries above.
    service_cpu = {"producer": time.process_time() - producer0,
                   **{name: cpu_seconds(roots) - service0[name] for name, roots in services.items()}}
    stats = standin.stats()
    accepted = standin.accepted()
    event_of = system.send_events(mark)
    latencies = []
    for record in accepted:
        event_id = event_of.get(record["tags"].get("send_id", ""))
        if event_id in published:
            latencies.append((record["t"] - published[event_id]) * 1000)
    end = max((r["t"] for r in accepted), default=time.time())
    phase = Phase(name, len(events), len(accepted), end - start, latencies, sum(cpu_by.values()), stats["cpu_s"],
                  stats["requests"], complete, cpu_by, service_cpu)
    log.info("bench_phase_done", phase=name, events=phase.events, emails=phase.emails,
             elapsed_s=round(phase.elapsed_s, 2), emails_per_s=round(phase.emails_per_s, 1),
             p99_ms=round(phase.p(99), 1), cpu_s_per_1k=round(phase.cpu_s_per_1k, 3), complete=complete)
    return phase


def measure_system(system: System, standin: StandInClient, workload: Workload, *, events: int, repeats: int,
                   fixed_rate: float, fixed_s: float, timeout_s: float, warmup: int = 40,
                   services: dict[str, list[int]] | None = None, batch: int = 1) -> SystemReport:
    """Warm up, then the saturation runs and the fixed-load run of one system."""
    tag = system.name[:4]
    run_phase(system, standin, workload.events(warmup, f"{tag}-warm"), name="warm-up", timeout_s=timeout_s)
    report = SystemReport(system.name)
    for n in range(repeats):
        report.saturation.append(run_phase(system, standin, workload.events(events, f"{tag}-sat{n}"),
                                           name=f"saturation {n + 1}", timeout_s=timeout_s,
                                           services=services, batch=batch))
    if fixed_s > 0:
        count = max(1, round(fixed_rate * fixed_s))
        report.fixed = run_phase(system, standin, workload.events(count, f"{tag}-fixed"), name="fixed load",
                                 rate=fixed_rate, timeout_s=timeout_s, batch=batch)
    report.peak_rss_mb = peak_rss_mb(system.pids.values())
    return report


def run_pipeline_bench(
    *, events: int = 2000, baseline_events: int | None = None, repeats: int = 1, latency_ms: float = 50.0,
    fixed_rate: float = 300.0, fixed_s: float = 5.0, baseline: bool = True, workdir: Path | None = None,
    services_mode: Literal["demo", "test"] = "demo", timeout_s: float = 300.0, seed: int = 1,
    publish_batch: int = 1,
) -> BenchReport:
    """Run the benchmark; ``baseline_events`` defaults to a third of ``events`` (the baseline is slow)."""
    started = time.monotonic()
    work = workdir or REPO_ROOT / "out" / "bench"
    catalogue = load_catalogue(REPO_ROOT / "flows" / "catalogue")
    workload = Workload(catalogue, seed=seed, zone=daytime_zone())
    with start_services(work / ".services", mode=services_mode) as services, \
            StandInProcess(work / "logs" / "standin.log", Faults(latency_ms=latency_ms, seed=seed)) as standin:
        assert standin.client is not None
        migrate(services.database_url)
        # The shared SES rate far above the 1,000 emails/s target: the governor still takes a
        # token per email, as in production, but never decides the throughput measured here.
        env = {**services.env(), "AWS_ENDPOINT_URL_SESV2": standin.url, "DECLIC_LOG_FORMAT": "json",
               "DECLIC_SES_MAX_RATE": "5000"}
        roots = service_roots(services)
        with declic_system(env, services.broker_url, services.database_url, work / "logs") as declic:
            pipeline = measure_system(declic, standin.client, workload, events=events, repeats=repeats,
                                      fixed_rate=fixed_rate, fixed_s=fixed_s, timeout_s=timeout_s,
                                      services=roots, batch=publish_batch)
        naive = None
        if baseline:
            with naive_system(env, services.broker_url, services.database_url, work / "logs") as system:
                naive = measure_system(system, standin.client, workload,
                                       events=baseline_events or max(1, events // 3), repeats=1,
                                       fixed_rate=fixed_rate, fixed_s=fixed_s, timeout_s=timeout_s,
                                       services=roots)
    return BenchReport(pipeline, naive, fixed_rate, latency_ms, time.monotonic() - started, publish_batch)


def write_json(report: BenchReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.as_json(), indent=2) + "\n", encoding="utf-8")
