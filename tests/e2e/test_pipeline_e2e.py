"""The core pipeline end to end: SDK → broker → real worker process → moto SES → Postgres."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from declic.processes import WorkerProcess
from declic.services import Services
from events import Publisher
from flows import Catalogue
from tests.e2e.conftest import final_sends, fresh, wait_for
from workers.store import Store

pytestmark = pytest.mark.e2e


def requests_for(services: Services, send_id: str) -> list[dict[str, Any]]:
    return [
        r for r in services.moto.send_requests()
        if {"Name": "send_id", "Value": send_id} in r.get("EmailTags", [])
    ]


def test_order_event_becomes_the_expected_email(
    worker: WorkerProcess, publisher: Publisher, services: Services, store: Store, catalogue: Catalogue
) -> None:
    """A published order reaches moto as one email to the contact, with subject, tags and configuration set."""
    event = fresh(catalogue["order_confirmation"].sample)
    publisher.publish(event)
    [send] = final_sends(store, event["id"], "order_confirmation")
    assert send["state"] == "sent", send["reason"]
    [request] = requests_for(services, str(send["id"]))
    assert request["Destination"]["ToAddresses"] == [event["contact"]["email"]]
    assert request["ConfigurationSetName"] == "declic"
    tags = {t["Name"]: t["Value"] for t in request["EmailTags"]}
    expected = {"flow": "order_confirmation", "step": "main", "variant": send["variant"], "send_id": str(send["id"])}
    assert tags == expected
    subject = request["Content"]["Simple"]["Subject"]["Data"]
    assert subject == send["subject"] and event["data"]["order_id"] in subject
    stored = [m for m in services.moto.sent_messages() if m.message_id == send["ses_message_id"]]
    assert len(stored) == 1


def test_invoice_arrives_with_its_pdf(
    worker: WorkerProcess, publisher: Publisher, services: Services, store: Store, catalogue: Catalogue
) -> None:
    """An invoice reaches SES with the event's PDF as an attachment of its Simple content."""
    event = fresh(catalogue["invoice"].sample)
    publisher.publish(event)
    [send] = final_sends(store, event["id"], "invoice")
    assert send["state"] == "sent", send["reason"]
    [request] = [r for r in services.moto.send_requests() if r.get("MessageId") == send["ses_message_id"]]
    assert request["Destination"]["ToAddresses"] == [event["contact"]["email"]]
    [attachment] = request["Content"]["Simple"]["Attachments"]
    assert attachment["FileName"] == event["data"]["pdf"]["filename"]
    assert attachment["ContentType"] == "application/pdf"
    assert base64.b64decode(attachment["RawContent"]).startswith(b"%PDF")


def test_same_event_published_twice_sends_once(
    worker: WorkerProcess, publisher: Publisher, services: Services, store: Store, catalogue: Catalogue
) -> None:
    """Publishing the same event id twice yields one send and one SES request."""
    event = fresh(catalogue["welcome"].sample)
    publisher.publish(event)
    publisher.publish(event)
    [send] = final_sends(store, event["id"], "welcome")
    # The second copy is processed too, as a duplicate; wait for the worker to have logged it.
    def duplicate_logged() -> bool:
        lines = [json.loads(line) for line in worker.log_path.read_text().splitlines() if line.startswith("{")]
        return any(line.get("event") == "event_ingested" and line.get("event_id") == event["id"]
                   and line.get("duplicate") is True for line in lines)

    wait_for(duplicate_logged, what="the duplicate ingest")
    assert send["state"] == "sent"
    assert len(requests_for(services, str(send["id"]))) == 1


def test_bad_events_are_dead_lettered_and_the_worker_goes_on(
    worker: WorkerProcess, publisher: Publisher, services: Services, store: Store, catalogue: Catalogue
) -> None:
    """An invalid event and a render failure each leave a dead letter with its reason; later events still flow."""
    invalid = fresh(catalogue["password_reset"].sample)
    invalid["data"] = {"reset_url": "javascript:alert(1)"}
    publisher.publish_json(invalid)  # bypass the SDK's own validation, as a buggy producer would
    unrenderable = fresh(catalogue["generic_notification"].sample)
    unrenderable["data"] = {"unexpected": "shape"}
    publisher.publish(unrenderable)
    [failed] = final_sends(store, unrenderable["id"], "generic_notification")
    assert failed["state"] == "failed" and failed["reason"].startswith("render_error")
    letters = wait_for(lambda: [d for d in store.dead_letters() if d["ref"] == invalid["id"]], what="dead letter")
    assert "data.reset_url" in letters[0]["reason"]
    assert any(d["ref"] == str(failed["id"]) for d in store.dead_letters())

    after = fresh(catalogue["shipping_confirmation"].sample)
    publisher.publish(after)
    [send] = final_sends(store, after["id"], "shipping_confirmation")
    assert send["state"] == "sent"
    assert worker.is_running


def test_worker_logs_are_structured_and_hold_no_address(
    worker: WorkerProcess, publisher: Publisher, store: Store, catalogue: Catalogue
) -> None:
    """The worker logs one JSON line per send with its ids, and never the recipient's address."""
    event = fresh(catalogue["password_reset"].sample)
    publisher.publish(event)
    [send] = final_sends(store, event["id"], "password_reset")
    lines = [json.loads(line) for line in worker.log_path.read_text().splitlines() if line.startswith("{")]
    sent = [line for line in lines if line.get("event") == "email_sent" and line.get("send_id") == str(send["id"])]
    assert len(sent) == 1
    assert sent[0]["flow"] == "password_reset" and sent[0]["ses_message_id"] == send["ses_message_id"]
    text = worker.log_path.read_text()
    assert event["contact"]["email"] not in text
    assert event["data"]["reset_url"] not in text



def test_send_test_command_sends_through_the_configured_ses(worker_env: dict[str, str], services: Services) -> None:
    """`declic send-test FLOW --to ADDRESS` sends the flow's sample once through SES (moto here)."""
    import os
    import subprocess
    import sys

    from declic.settings import REPO_ROOT

    result = subprocess.run(
        [sys.executable, "-m", "declic", "send-test", "shipping_confirmation", "--to", "tester@example.org"],
        capture_output=True, text=True, cwd=REPO_ROOT, env={**os.environ, **worker_env}, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    message_id = result.stdout.strip().rsplit(" ", 1)[-1]
    [request] = [r for r in services.moto.send_requests() if r.get("MessageId") == message_id]
    assert request["Destination"]["ToAddresses"] == ["tester@example.org"]
    assert {"Name": "send_id", "Value": "send-test"} in request["EmailTags"]
