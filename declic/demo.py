"""``declic demo``: the whole pipeline on embedded services, one email per catalogue flow.

Starts Postgres, Redis and a moto server (or uses the ``DECLIC_*`` services when set), runs
real ``celery worker`` processes, publishes every flow's sample event through the SDK, waits
for the sends, prints what SES received and writes each email as ``.eml`` and ``.html``.
"""

from __future__ import annotations

import base64
import sys
import time
import uuid
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from declic.logs import mask_address
from declic.processes import WorkerSpec, workers
from declic.services import INVOICE_BUCKET, Services, start_services
from declic.settings import REPO_ROOT
from events import Publisher
from flows import Catalogue, load_catalogue
from workers.app import SEND_QUEUES
from workers.migrate import migrate
from workers.store import Store

# Wide enough for the table when the output is a log or a pipe, not a terminal.
console = Console(width=None if sys.stdout.isatty() else 160)
FINAL = ("sent", "skipped", "failed")


def demo_events(catalogue: Catalogue, services: Services) -> list[dict[str, Any]]:
    """Each flow's sample, new id, happening now; the invoice PDF is served from S3."""
    events = []
    for flow in catalogue:
        event = {**flow.sample, "id": f"demo-{flow.name}-{uuid.uuid4().hex[:8]}",
                 "occurred_at": datetime.now(UTC).isoformat()}
        for key in flow.attachments:
            spec = dict(event["data"][key])
            object_key = f"invoices/{event['id']}/{spec['filename']}"
            services.moto.client("s3").put_object(
                Bucket=INVOICE_BUCKET, Key=object_key, Body=base64.b64decode(spec.pop("content_base64")),
                ContentType=spec.get("content_type", "application/pdf"),
            )
            event["data"] = {**event["data"], key: {**spec, "s3_bucket": INVOICE_BUCKET, "s3_key": object_key}}
        events.append(event)
    return events


def eml_from_request(request: dict[str, Any]) -> tuple[bytes, str]:
    """The message SES was asked to send, as .eml bytes, and its HTML part."""
    content = request["Content"]
    if "Raw" in content:
        raw = content["Raw"]["Data"]
        data = base64.b64decode(raw) if isinstance(raw, str) else bytes(raw)
        from email import message_from_bytes, policy

        parsed = message_from_bytes(data, policy=policy.default)
        part = parsed.get_body(("html",))
        return data, part.get_content() if part is not None else ""
    simple = content["Simple"]
    message = EmailMessage(policy=SMTP)
    message["From"] = request["FromEmailAddress"]
    message["To"] = ", ".join(request["Destination"]["ToAddresses"])
    message["Subject"] = simple["Subject"]["Data"]
    for header in simple.get("Headers", []):
        message[header["Name"]] = header["Value"]
    message.set_content(simple["Body"]["Text"]["Data"])
    message.add_alternative(simple["Body"]["Html"]["Data"], subtype="html")
    return message.as_bytes(), simple["Body"]["Html"]["Data"]


def _wait(store: Store, event_ids: list[str], timeout_s: float) -> dict[str, list[dict[str, Any]]]:
    deadline = time.monotonic() + timeout_s
    rows: dict[str, list[dict[str, Any]]] = {}
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("waiting for SES", total=len(event_ids))
        while time.monotonic() < deadline:
            rows = {eid: store.sends_for_event(eid) for eid in event_ids}
            done = sum(1 for sends in rows.values() if sends and all(s["state"] in FINAL for s in sends))
            progress.update(task, completed=done)
            if done == len(event_ids):
                break
            time.sleep(0.2)
    return rows


def run_demo(out: Path) -> int:
    """Run the demo; 0 when every catalogue flow's email reached the SES stand-in."""
    started = time.monotonic()
    catalogue = load_catalogue(REPO_ROOT / "flows" / "catalogue")
    out.mkdir(parents=True, exist_ok=True)
    with start_services(out / ".services", mode="demo") as services:
        console.print(f"[bold]services[/]: {', '.join(f'{k}={v}' for k, v in services.sources.items())}")
        migrate(services.database_url)
        env = {**services.env(), "DECLIC_LOG_FORMAT": "json"}
        specs = [WorkerSpec("ingest", ["events"], concurrency=2), WorkerSpec("send", list(SEND_QUEUES), concurrency=8)]
        with workers(env, out / "logs", specs), Publisher(services.broker_url) as publisher:
            console.print(f"[bold]workers[/]: {len(specs)} celery processes ready (logs in {out / 'logs'})")
            events = demo_events(catalogue, services)
            published: dict[str, float] = {}
            with Progress(console=console) as progress:
                for event in progress.track(events, description="publishing events"):
                    publisher.publish(event)
                    published[event["id"]] = time.time()
            store = Store.connect(services.database_url, max_size=2)
            try:
                rows = _wait(store, list(published), timeout_s=90)
            finally:
                store.close()
            requests = {
                tag["Value"]: r for r in services.moto.send_requests()
                for tag in r.get("EmailTags", []) if tag["Name"] == "send_id"
            }
    return _report(catalogue, events, rows, requests, published, out, time.monotonic() - started)


def _report(
    catalogue: Catalogue, events: list[dict[str, Any]], rows: dict[str, list[dict[str, Any]]],
    requests: dict[str, dict[str, Any]], published: dict[str, float], out: Path, elapsed: float,
) -> int:
    table = Table("flow", "recipient", "subject", "SES message id", "latency", title="Déclic demo: sent emails")
    missing: list[str] = []
    for event in events:
        for send in rows.get(event["id"], []):
            request = requests.get(str(send["id"]))
            if send["state"] != "sent" or request is None:
                missing.append(f"{send['flow']}: {send['state']} {send['reason'] or ''}".strip())
                continue
            eml, html = eml_from_request(request)
            stem = out / f"{send['flow']}.{send['locale']}"
            stem.with_suffix(".eml").write_bytes(eml)
            stem.with_suffix(".html").write_text(html, encoding="utf-8")
            latency = send["sent_at"].timestamp() - published[event["id"]]
            table.add_row(send["flow"], mask_address(event["contact"]["email"]), send["subject"],
                          send["ses_message_id"], f"{latency * 1000:.0f} ms")
        if not rows.get(event["id"]):
            missing.append(f"{event['type']}: no send recorded")
    console.print(table)
    console.print(f"wrote {len(catalogue) - len(missing)} .eml and .html files to {out}; took {elapsed:.1f} s")
    if missing:
        console.print("[red]not sent:[/] " + "; ".join(missing))
        console.print("See the worker logs in " + str(out / "logs"))
        return 1
    console.print(f"[green]✓[/] all {len(catalogue)} catalogue flows reached the SES stand-in")
    return 0
