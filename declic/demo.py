"""``declic demo``: the whole pipeline on embedded services, one email per catalogue flow.

Starts Postgres, Redis and a moto server (or uses the ``DECLIC_*`` services when set), runs
real ``celery worker`` processes, publishes every flow's sample event through the SDK, waits
for the sends, prints what SES received and writes each email as ``.eml`` and ``.html``.
"""

from __future__ import annotations

import base64
import sys
import time
from datetime import UTC
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from declic.demo_scenario import Scenario, build
from declic.logs import mask_address
from declic.processes import ManagedProcess, WorkerSpec, workers
from declic.services import INVOICE_BUCKET, Services, start_services
from declic.settings import REPO_ROOT
from events import Publisher
from flows import Catalogue, load_catalogue
from workers.app import INGEST_QUEUES, SEND_QUEUES
from workers.migrate import migrate
from workers.store import Store

# Wide enough for the table when the output is a log or a pipe, not a terminal.
console = Console(width=None if sys.stdout.isatty() else 160)
FINAL = ("sent", "skipped", "failed")
FLOW_TIMEOUT_S = 90


def settled(send: dict[str, Any]) -> bool:
    """Sent, skipped or failed, or handed back to the schedule until the contact's morning."""
    return send["state"] in FINAL or (send["state"] == "scheduled" and send["reason"] == "quiet_hours")


def with_pdf_in_s3(events: list[dict[str, Any]], catalogue: Catalogue, services: Services) -> None:
    """Serve invoice PDFs from S3 (the moto bucket), as a shop storing invoices would."""
    for event in events:
        for flow in catalogue.for_event(event["type"]):
            for key in flow.attachments:
                spec = dict(event["data"][key])
                if "content_base64" not in spec:
                    continue
                object_key = f"invoices/{event['id']}/{spec['filename']}"
                services.moto.client("s3").put_object(
                    Bucket=INVOICE_BUCKET, Key=object_key, Body=base64.b64decode(spec.pop("content_base64")),
                    ContentType=spec.get("content_type", "application/pdf"),
                )
                event["data"] = {**event["data"], key: {**spec, "s3_bucket": INVOICE_BUCKET, "s3_key": object_key}}


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
    for attachment in simple.get("Attachments", []):  # as SES will attach them
        maintype, _, subtype = attachment.get("ContentType", "application/octet-stream").partition("/")
        data = attachment["RawContent"]
        message.add_attachment(base64.b64decode(data) if isinstance(data, str) else bytes(data),
                               maintype=maintype, subtype=subtype, filename=attachment["FileName"])
    return message.as_bytes(), simple["Body"]["Html"]["Data"]


def _wait(store: Store, contact_ids: list[str], expected_flows: set[str], timeout_s: float) -> list[dict[str, Any]]:
    """Until every flow has a send and every send is final (follow-ups included)."""
    deadline = time.monotonic() + timeout_s
    rows: list[dict[str, Any]] = []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("sending, following up, waiting for dates", total=len(expected_flows))
        while time.monotonic() < deadline:
            rows = store.sends_for_contacts(contact_ids)
            flows_done = {r["flow"] for r in rows if settled(r)}
            progress.update(task, completed=len(flows_done & expected_flows))
            if expected_flows <= {r["flow"] for r in rows} and all(settled(r) for r in rows):
                break
            time.sleep(0.25)
    return rows


def run_demo(out: Path) -> int:
    """Run the demo; 0 when every catalogue flow's email reached the SES stand-in."""
    started = time.monotonic()
    catalogue = load_catalogue(REPO_ROOT / "flows" / "catalogue")
    scenario = build(catalogue)
    out.mkdir(parents=True, exist_ok=True)
    with start_services(out / ".services", mode="demo") as services:
        console.print(f"[bold]services[/]: {', '.join(f'{k}={v}' for k, v in services.sources.items())}")
        migrate(services.database_url)
        # A day of delay lasts a second, so the onboarding series and the survey play out live.
        env = {**services.env(), "DECLIC_LOG_FORMAT": "json", "DECLIC_DELAY_SCALE": str(1 / 86400)}
        specs = [WorkerSpec("ingest", list(INGEST_QUEUES), concurrency=8),
                 WorkerSpec("send", list(SEND_QUEUES), concurrency=8)]
        dispatcher = ManagedProcess(
            [sys.executable, "-m", "declic", "dispatcher", "--interval", "0.2", "--scan-every", "2"],
            env, out / "logs" / "dispatcher.log", ready_line="dispatcher_started", name="dispatcher",
        )
        with workers(env, out / "logs", specs), dispatcher, Publisher(services.broker_url) as publisher:
            console.print(f"[bold]workers[/]: {len(specs)} celery processes and a dispatcher ready "
                          f"(logs in {out / 'logs'})")
            with_pdf_in_s3(scenario.events, catalogue, services)
            published: dict[str, float] = {}
            with Progress(console=console) as progress:
                for event in progress.track(scenario.events, description="publishing events"):
                    publisher.publish(event)
                    published[event["id"]] = time.time()
            store = Store.connect(services.database_url, max_size=2)
            try:
                rows = _wait(store, scenario.contact_ids, set(catalogue.flows), timeout_s=FLOW_TIMEOUT_S)
            finally:
                store.close()
            requests = {
                tag["Value"]: r for r in services.moto.send_requests()
                for tag in r.get("EmailTags", []) if tag["Name"] == "send_id"
            }
        status = _report(catalogue, scenario, rows, requests, published, out, time.monotonic() - started)
        # Reporting: SES notifications for these emails (and four weeks of history) through SQS.
        from reporting.demo import play_engagement

        with console.status("simulating SES engagement, draining SQS, aggregating"):
            engagement = play_engagement(services, out)
    console.print(engagement.table)
    console.print(f"wrote {engagement.html} ({engagement.insights} insights) from "
                  f"{engagement.notifications} SES notifications received through SQS")
    console.print(f"demo finished in {time.monotonic() - started:.1f} s")
    return status


def _latency(send: dict[str, Any], published: dict[str, float]) -> str:
    if send["event_id"] in published and send["step"] == "main":
        return f"{(send['sent_at'].timestamp() - published[send['event_id']]) * 1000:.0f} ms after the event"
    return f"{(send['sent_at'] - send['due_at']).total_seconds() * 1000:.0f} ms after due"


def _report(
    catalogue: Catalogue, scenario: Scenario, rows: list[dict[str, Any]], requests: dict[str, dict[str, Any]],
    published: dict[str, float], out: Path, elapsed: float,
) -> int:
    table = Table("flow", "step", "recipient", "subject", "SES message id", "latency", title="Déclic demo: sent emails")
    skipped = Table("flow", "step", "recipient", "state", "reason", title="Sends not made, and why")
    emails = {r["contact_id"]: r for r in rows}
    addresses = {e["contact"]["id"]: e["contact"]["email"] for e in scenario.events}
    sent_flows: set[str] = set()
    written = 0
    for send in rows:
        recipient = mask_address(addresses.get(send["contact_id"], "?"))
        request = requests.get(str(send["id"]))
        if send["state"] != "sent" or request is None:
            reason = send["reason"] or ""
            if reason == "quiet_hours":
                morning = send["due_at"].astimezone(UTC)
                reason = f"quiet hours: waits until {morning:%Y-%m-%d %H:%M} UTC, the contact's morning"
            skipped.add_row(send["flow"], send["step"], recipient, send["state"], reason)
            continue
        sent_flows.add(send["flow"])
        eml, html = eml_from_request(request)
        stem = out / f"{send['flow']}.{send['step']}.{send['locale']}"
        stem.with_suffix(".eml").write_bytes(eml)
        stem.with_suffix(".html").write_text(html, encoding="utf-8")
        written += 1
        table.add_row(send["flow"], send["step"], recipient, send["subject"], send["ses_message_id"],
                      _latency(send, published))
    console.print(table)
    console.print(skipped)
    console.print(f"wrote {written} .eml and .html files to {out}; took {elapsed:.1f} s")
    missing = sorted(set(catalogue.flows) - sent_flows)
    unexpected = [r for r in rows if r["state"] == "failed"]
    if missing or unexpected or not emails:
        console.print(f"[red]flows without a sent email:[/] {', '.join(missing) or 'none'}; "
                      f"failed sends: {len(unexpected)}. See the logs in {out / 'logs'}")
        return 1
    console.print(f"[green]✓[/] all {len(catalogue)} catalogue flows reached the SES stand-in")
    return 0
