"""Done when: an order posted to the API, or a signed Shopify webhook, reaches moto; a tampered one does not."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from api.serving import ApiProcess
from declic.processes import WorkerProcess
from declic.services import Services
from declic.settings import REPO_ROOT
from flows import Catalogue
from tests.e2e.conftest import final_sends, fresh
from tests.e2e.test_api_http import (  # noqa: F401 - fixtures
    SHOPIFY_SECRET,
    MakeKey,
    api,
    api_env,
    key_store,
    make_key,
)
from workers.store import Store

pytestmark = pytest.mark.e2e


def moto_requests(services: Services, send_id: str) -> list[dict[str, object]]:
    return [r for r in services.moto.send_requests()
            if {"Name": "send_id", "Value": send_id} in r.get("EmailTags", [])]


def test_curl_an_order_and_the_confirmation_reaches_ses(
    worker: WorkerProcess, api: ApiProcess, services: Services, store: Store, catalogue: Catalogue,  # noqa: F811
    api_env: dict[str, str],  # noqa: F811
) -> None:
    """A key made with `keys create`, an order posted with curl: the worker sends the order confirmation to moto."""
    import os

    created = subprocess.run([sys.executable, "-m", "api", "keys", "create", "--name", "shop", "--scope",
                              "events:write"], capture_output=True, text=True, cwd=REPO_ROOT,
                             env={**os.environ, **api_env}, timeout=60, check=True)
    key = created.stdout.strip().splitlines()[-1]
    event = fresh(catalogue["order_confirmation"].sample)
    curl = subprocess.run(
        ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "-X", "POST", f"{api.url}/v1/events",
         "-H", f"Authorization: Bearer {key}", "-H", "Content-Type: application/json", "--data-binary", "@-"],
        input=json.dumps(event), capture_output=True, text=True, timeout=60, check=True,
    )
    body, status = curl.stdout.rsplit("\n", 1)
    assert status == "202", body
    [send] = final_sends(store, event["id"], "order_confirmation")
    assert send["state"] == "sent" and send["flow"] == "order_confirmation", send["reason"]
    [request] = moto_requests(services, str(send["id"]))
    assert request["Destination"] == {"ToAddresses": [event["contact"]["email"]]}


def test_a_batch_travels_in_chunks_and_every_event_becomes_its_email(
    worker: WorkerProcess, api: ApiProcess, store: Store, catalogue: Catalogue, make_key: MakeKey,  # noqa: F811
) -> None:
    """60 orders and a password reset in one batch: each is ingested once and its email sent."""
    orders = [fresh(catalogue["order_confirmation"].sample) for _ in range(60)]
    reset = fresh(catalogue["password_reset"].sample)
    events = [*orders[:30], reset, *orders[30:]]
    answer = httpx.post(f"{api.url}/v1/events/batch", json={"events": events},
                        headers={"Authorization": f"Bearer {make_key()}"}, timeout=30)
    assert answer.status_code == 202, answer.text
    assert answer.json()["accepted"] == 61
    [reset_send] = final_sends(store, reset["id"], "password_reset", timeout=60)
    assert reset_send["state"] == "sent", reset_send["reason"]
    for order in orders:
        [send] = final_sends(store, order["id"], "order_confirmation", timeout=60)
        assert send["state"] == "sent", send["reason"]


def test_signed_shopify_order_reaches_ses_and_a_tampered_one_does_not(
    worker: WorkerProcess, api: ApiProcess, services: Services, store: Store,  # noqa: F811
) -> None:
    """A Shopify orders/create signed as Shopify signs it is sent as an order confirmation; a tampered copy gets 401."""
    order = json.loads((REPO_ROOT / "tests/data/shopify/orders_create.json").read_text())
    order["id"] = int(time.time_ns() % 10**15)
    raw = json.dumps(order).encode()
    signature = base64.b64encode(hmac.new(SHOPIFY_SECRET.encode(), raw, hashlib.sha256).digest()).decode()
    headers = {"Content-Type": "application/json", "X-Shopify-Topic": "orders/create",
               "X-Shopify-Hmac-Sha256": signature, "X-Shopify-Webhook-Id": str(uuid.uuid4())}
    tampered_order = {**order, "id": order["id"] + 1, "email": "attacker@example.com"}
    tampered = httpx.post(f"{api.url}/v1/integrations/shopify", content=json.dumps(tampered_order).encode(),
                          headers=headers, timeout=30)
    assert tampered.status_code == 401
    response = httpx.post(f"{api.url}/v1/integrations/shopify", content=raw, headers=headers, timeout=30)
    assert response.status_code == 202, response.text
    event_id = response.json()["event_id"]
    [send] = final_sends(store, event_id, "order_confirmation")
    assert send["state"] == "sent" and send["flow"] == "order_confirmation", send["reason"]
    [request] = moto_requests(services, str(send["id"]))
    assert request["Destination"] == {"ToAddresses": ["claire.dubois@example.org"]}
    subject = request["Content"]["Simple"]["Subject"]["Data"]  # type: ignore[index]
    assert "#10482" in subject
    assert store.sends_for_event(f"shopify:orders/create:{order['id'] + 1}") == []
