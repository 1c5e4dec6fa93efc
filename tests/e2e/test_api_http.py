"""The HTTP API against a real uvicorn process on 127.0.0.1: every status it promises, keys, limits, webhooks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from api.keys import KeyStore, open_pool
from api.serving import ApiProcess
from declic.services import Services
from declic.settings import REPO_ROOT
from flows import Catalogue
from workers.store import Store

pytestmark = pytest.mark.e2e

SHOPIFY_SECRET = "shpss_e2e_secret"
STRIPE_SECRET = "whsec_e2e_secret"
ZENDESK_SECRET = "zd_e2e_secret"
DATA = REPO_ROOT / "tests" / "data"
MakeKey = Callable[..., str]


@pytest.fixture(scope="session")
def api_env(services: Services) -> dict[str, str]:
    return {
        **services.env(), "DECLIC_LOG_FORMAT": "json", "DECLIC_SHOPIFY_SECRET": SHOPIFY_SECRET,
        "DECLIC_STRIPE_SECRET": STRIPE_SECRET, "DECLIC_INTEGRATION_SECRETS": json.dumps({"zendesk": ZENDESK_SECRET}),
        # No key cache in tests, so a revocation is seen by the next request.
        "DECLIC_API_KEY_CACHE_S": "0",
    }


@pytest.fixture(scope="session")
def api(api_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    """One real `declic api` process for the session."""
    with ApiProcess(api_env, tmp_path_factory.mktemp("api") / "api.log") as process:
        yield process


@pytest.fixture(scope="session")
def key_store(services: Services) -> Iterator[KeyStore]:
    pool = open_pool(services.database_url, max_size=2)
    yield KeyStore(pool)
    pool.close()


@pytest.fixture
def make_key(key_store: KeyStore) -> MakeKey:
    def make(*scopes: str, rate: int | None = 100_000) -> str:
        key, _ = key_store.create(f"test-{uuid.uuid4().hex[:6]}", list(scopes or ("events:write",)), rate)
        return key
    return make


@pytest.fixture
def client(api: ApiProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.url, timeout=30) as c:
        yield c


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def new_event(catalogue: Catalogue, flow: str = "order_confirmation") -> dict[str, Any]:
    from datetime import UTC, datetime

    return {**catalogue[flow].sample, "id": f"api-{uuid.uuid4()}", "occurred_at": datetime.now(UTC).isoformat()}


def shopify_post(client: httpx.Client, topic: str, body: bytes, *, webhook_id: str | None = None,
                 secret: str = SHOPIFY_SECRET) -> httpx.Response:
    """POST as Shopify does: base64 HMAC-SHA256 of the raw body, topic and webhook id headers."""
    signature = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    return client.post("/v1/integrations/shopify", content=body, headers={
        "Content-Type": "application/json", "X-Shopify-Topic": topic, "X-Shopify-Hmac-Sha256": signature,
        "X-Shopify-Webhook-Id": webhook_id or str(uuid.uuid4()),
        "X-Shopify-Shop-Domain": "maison-lumiere.myshopify.com",
    })


def stripe_post(
    client: httpx.Client, body: bytes, *, at: int | None = None, secret: str = STRIPE_SECRET
) -> httpx.Response:
    """POST as Stripe does: t=…,v1= hex HMAC-SHA256 of "{t}.{body}"."""
    t = int(time.time()) if at is None else at
    v1 = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return client.post("/v1/integrations/stripe", content=body, headers={
        "Content-Type": "application/json; charset=utf-8", "Stripe-Signature": f"t={t},v1={v1}"})


def with_new_ids(provider: str, name: str) -> tuple[dict[str, Any], bytes]:
    body = json.loads((DATA / provider / f"{name}.json").read_text())
    if provider == "shopify":
        body["id"] = int(time.time_ns() % 10**15)
    else:
        body["id"] = f"evt_{uuid.uuid4().hex}"
        body["data"]["object"]["id"] = f"{body['data']['object']['id']}_{uuid.uuid4().hex[:8]}"
    return body, json.dumps(body).encode()


# -- events ------------------------------------------------------------------------------------

def test_event_is_accepted_then_a_duplicate(client: httpx.Client, make_key: MakeKey, catalogue: Catalogue) -> None:
    """The first post answers 202 with the id, the same id again 200 "duplicate"; both carry RateLimit headers."""
    key, event = make_key(), new_event(catalogue)
    first = client.post("/v1/events", json=event, headers=auth(key))
    assert first.status_code == 202, first.text
    assert first.json() == {"id": event["id"], "status": "accepted", "duplicate": False}
    again = client.post("/v1/events", json=event, headers=auth(key))
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert {"ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"} <= set(first.headers)


def test_invalid_event_is_422_naming_each_field(client: httpx.Client, make_key: MakeKey, catalogue: Catalogue) -> None:
    """An event with a bad email and a bad item quantity answers 422 listing both fields."""
    event = new_event(catalogue)
    event["contact"] = {**event["contact"], "email": "nope"}
    event["data"] = {**event["data"], "items": [{**event["data"]["items"][0], "quantity": 0}]}
    response = client.post("/v1/events", json=event, headers=auth(make_key()))
    assert response.status_code == 422
    fields = {e["field"] for e in response.json()["errors"]}
    assert "contact.email" in fields
    response = client.post("/v1/events", json={**new_event(catalogue), "data": {"items": [{"sku": "x", "name": "y",
                           "quantity": 0, "unit_price": "1"}], "order_id": "o", "currency": "EUR", "total": "1"}},
                           headers=auth(make_key()))
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "data.items.0.quantity"


def test_body_over_one_megabyte_is_413_declared_or_streamed(client: httpx.Client, make_key: MakeKey) -> None:
    """A body over 1 MB is refused with 413 whether Content-Length says so or it arrives chunked."""
    big = b'{"x": "' + b"a" * 1_100_000 + b'"}'
    headers = {**auth(make_key()), "Content-Type": "application/json"}
    assert client.post("/v1/events", content=big, headers=headers).status_code == 413

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(big), 64_000):
            yield big[i:i + 64_000]

    response = client.post("/v1/events", content=chunks(), headers=headers)
    assert response.status_code == 413 and response.json()["error"] == "body_too_large"


def test_non_json_content_type_is_415_and_broken_json_400(client: httpx.Client, make_key: MakeKey) -> None:
    """A form body answers 415; JSON that does not parse answers 400."""
    key = make_key()
    form = client.post("/v1/events", content=b"a=1", headers={**auth(key), "Content-Type": "text/plain"})
    assert form.status_code == 415
    broken = client.post("/v1/events", content=b"{", headers={**auth(key), "Content-Type": "application/json"})
    assert broken.status_code == 400 and broken.json()["error"] == "bad_request"


def test_keys_missing_unknown_revoked_or_without_scope(client: httpx.Client, make_key: MakeKey, key_store: KeyStore,
                                                        catalogue: Catalogue) -> None:
    """No key, an unknown or revoked key answer 401 with WWW-Authenticate; a key without the scope 403."""
    event = new_event(catalogue)
    missing = client.post("/v1/events", json=event)
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
    assert client.post("/v1/events", json=event, headers={"Authorization": "Basic abc"}).status_code == 401
    assert client.post("/v1/events", json=event, headers=auth("dk_unknown")).status_code == 401
    key = make_key()
    key_store.revoke(key)
    assert client.post("/v1/events", json=event, headers=auth(key)).status_code == 401
    response = client.post("/v1/events", json=event, headers=auth(make_key("integrations")))
    assert response.status_code == 403 and "events:write" in response.json()["message"]


def test_batch_answers_per_item(client: httpx.Client, make_key: MakeKey, catalogue: Catalogue) -> None:
    """A batch with a valid, an invalid and a repeated event answers each one by index."""
    good = new_event(catalogue)
    bad = {**new_event(catalogue), "type": "Bad Type"}
    response = client.post("/v1/events/batch", json={"events": [good, bad, good]}, headers=auth(make_key()))
    assert response.status_code == 202, response.text
    body = response.json()
    assert [r["status"] for r in body["results"]] == ["accepted", "invalid", "duplicate"]
    assert body["results"][1]["errors"][0]["field"] == "type"
    assert (body["accepted"], body["invalid"], body["duplicates"]) == (1, 1, 1)


def test_batch_trigger_for_many_contacts(client: httpx.Client, make_key: MakeKey) -> None:
    """One event type for three contacts, each with its own data, is accepted item by item."""
    batch_id = f"b-{uuid.uuid4().hex[:8]}"
    items = [{"contact": {"id": f"c{i}", "email": f"c{i}@example.com"}, "data": {"source": f"s{i}"}} for i in range(3)]
    response = client.post("/v1/events/batch", json={"type": "signup", "batch_id": batch_id, "items": items},
                           headers=auth(make_key()))
    assert response.status_code == 202
    assert [r["id"] for r in response.json()["results"]] == [f"{batch_id}:c{i}" for i in range(3)]
    too_many = {"type": "signup", "items": items * 334}
    refused = client.post("/v1/events/batch", json=too_many, headers=auth(make_key()))
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "items"


def test_rate_limit_is_shared_by_two_api_processes(api: ApiProcess, api_env: dict[str, str], make_key: MakeKey,
                                                    tmp_path: Path, catalogue: Catalogue) -> None:
    """A key allowed 10 requests a minute gets 10 across two processes, then 429 with Retry-After from either."""
    key = make_key(rate=10)
    with ApiProcess(api_env, tmp_path / "api2.log", name="api2") as second:
        statuses = []
        for i in range(10):
            url = (api.url if i % 2 else second.url) + "/v1/events"
            statuses.append(httpx.post(url, json=new_event(catalogue), headers=auth(key), timeout=30).status_code)
        assert statuses == [202] * 10
        for url in (api.url, second.url):
            refused = httpx.post(url + "/v1/events", json=new_event(catalogue), headers=auth(key), timeout=30)
            assert refused.status_code == 429
            assert 1 <= int(refused.headers["retry-after"]) <= 7
            assert refused.headers["ratelimit-limit"] == "10" and refused.headers["ratelimit-remaining"] == "0"
    other = httpx.post(api.url + "/v1/events", json=new_event(catalogue), headers=auth(make_key(rate=10)), timeout=30)
    assert other.status_code == 202  # limits are per key


def test_broker_down_is_503_and_nothing_half_accepted(api: ApiProcess, api_env: dict[str, str], services: Services,
                                                      make_key: MakeKey, tmp_path: Path, catalogue: Catalogue) -> None:
    """With the broker unreachable an event answers 503 and /healthz 503; the same event is accepted later."""
    env = {**api_env, "DECLIC_BROKER_URL": "redis://127.0.0.1:1/0", "DECLIC_REDIS_URL": services.redis_url}
    key, event = make_key(), new_event(catalogue)
    with ApiProcess(env, tmp_path / "api-nobroker.log", name="api-nobroker") as broken:
        response = httpx.post(broken.url + "/v1/events", json=event, headers=auth(key), timeout=30)
        assert response.status_code == 503 and "broker" in response.json()["message"]
        health = httpx.get(broken.url + "/healthz", timeout=30)
        assert health.status_code == 503 and health.json()["checks"]["broker"]["ok"] is False
        assert "redis://" not in broken.log_tail(200)  # URLs may carry passwords
    retried = httpx.post(api.url + "/v1/events", json=event, headers=auth(key), timeout=30)
    assert retried.status_code == 202


def test_health_ok_and_database_down(api: ApiProcess, api_env: dict[str, str], tmp_path: Path) -> None:
    """/healthz is 200 with both checks ok, and 503 naming the database when Postgres is unreachable."""
    ok = httpx.get(api.url + "/healthz", timeout=30)
    assert ok.status_code == 200 and ok.json()["checks"]["database"]["ok"] and ok.json()["checks"]["broker"]["ok"]
    env = {**api_env, "DECLIC_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none"}
    with ApiProcess(env, tmp_path / "api-nodb.log", name="api-nodb") as broken:
        health = httpx.get(broken.url + "/healthz", timeout=30)
        assert health.status_code == 503 and health.json()["checks"]["database"]["ok"] is False
        assert httpx.post(broken.url + "/v1/events", json={}, headers=auth("dk_x"), timeout=30).status_code == 503


def test_metrics_count_outcomes_and_queue_depths(client: httpx.Client, make_key: MakeKey, catalogue: Catalogue) -> None:
    """/metrics exposes accepted and refused counters by reason, latency histograms and queue depths."""
    key = make_key()
    client.post("/v1/events", json=new_event(catalogue), headers=auth(key))
    client.post("/v1/events", json={"id": "x"}, headers=auth(key))
    text = client.get("/metrics").text
    assert 'declic_events_accepted_total{source="api"}' in text
    assert 'declic_events_refused_total{reason="invalid",source="api"}' in text
    assert 'declic_http_request_duration_seconds_bucket{le="0.005",method="POST",route="/v1/events"' in text
    assert 'declic_queue_depth{queue="events"}' in text
    assert 'declic_outbox_pending{queue="events"}' in text
    assert "declic_sends" in text


def test_openapi_and_docs_are_served(client: httpx.Client) -> None:
    """/openapi.json describes every endpoint with the envelope schema, and /docs serves the UI."""
    schema = client.get("/openapi.json").json()
    assert {"/v1/events", "/v1/events/batch", "/v1/integrations/{name}", "/healthz", "/metrics"} <= set(schema["paths"])
    assert "Event" in schema["components"]["schemas"]
    assert client.get("/docs").status_code == 200


# -- keys on the command line ---------------------------------------------------------------

def test_keys_cli_creates_lists_and_revokes(
    api_env: dict[str, str], client: httpx.Client, catalogue: Catalogue
) -> None:
    """`keys create` prints the key alone on its last line; it works until `keys revoke` by prefix."""
    import os

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "api", *args], capture_output=True, text=True, cwd=REPO_ROOT,
                              env={**os.environ, **api_env, "COLUMNS": "200"}, timeout=60, check=False)

    created = cli("keys", "create", "--name", "shop-backend", "--scope", "events:write", "--rate", "50")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("dk_") and len(key) == 46
    assert client.post("/v1/events", json=new_event(catalogue), headers=auth(key)).status_code == 202
    listed = cli("keys", "list")
    assert key[:10] in listed.stdout and key not in listed.stdout and "shop-backend" in listed.stdout
    assert cli("keys", "create", "--name", "x", "--scope", "admin").returncode == 2
    assert cli("keys", "revoke", key[:10]).returncode == 0
    assert client.post("/v1/events", json=new_event(catalogue), headers=auth(key)).status_code == 401


# -- integrations ------------------------------------------------------------------------------

def test_shopify_webhook_accepted_once_per_webhook_id(client: httpx.Client) -> None:
    """A signed orders/create is accepted as order_confirmed; the same X-Shopify-Webhook-Id again is a duplicate."""
    body, raw = with_new_ids("shopify", "orders_create")
    webhook_id = str(uuid.uuid4())
    first = shopify_post(client, "orders/create", raw, webhook_id=webhook_id)
    assert first.status_code == 202, first.text
    assert first.json()["event_id"] == f"shopify:orders/create:{body['id']}"
    assert first.json()["type"] == "order_confirmed"
    again = shopify_post(client, "orders/create", raw, webhook_id=webhook_id)
    assert again.status_code == 200 and again.json()["status"] == "duplicate"


def test_tampered_shopify_webhook_is_401_and_logged_without_body(client: httpx.Client, api: ApiProcess) -> None:
    """A body changed after signing, or signed with another secret, gets 401; the log has the reason, not the body."""
    _, raw = with_new_ids("shopify", "orders_create")
    signature = base64.b64encode(hmac.new(SHOPIFY_SECRET.encode(), raw, hashlib.sha256).digest()).decode()
    tampered = raw.replace(b"112.80", b"0.01")
    response = client.post("/v1/integrations/shopify", content=tampered, headers={
        "Content-Type": "application/json", "X-Shopify-Topic": "orders/create", "X-Shopify-Hmac-Sha256": signature})
    assert response.status_code == 401
    assert shopify_post(client, "orders/create", raw, secret="wrong").status_code == 401
    log = api.log_tail(400)
    assert "webhook_signature_refused" in log
    assert "claire.dubois@example.org" not in log and "Tanneurs" not in log


def test_unmapped_topics_are_acknowledged_and_counted(client: httpx.Client) -> None:
    """A signed topic with no mapping answers 202 ignored and shows in the per-integration counter."""
    response = shopify_post(client, "products/update", b'{"id": 1}')
    assert response.status_code == 202 and response.json() == {
        "status": "ignored", "reason": "unmapped", "event_id": None, "type": None, "errors": []}
    text = client.get("/metrics").text
    assert 'declic_integration_webhooks_total{external_type="products/update",integration="shopify",' \
           'outcome="ignored:unmapped"}' in text


def test_stripe_webhooks_signed_stale_and_duplicate(client: httpx.Client) -> None:
    """A signed Stripe checkout is accepted as a purchase; a replay is a duplicate; a 10-minute-old signature 401."""
    _, raw = with_new_ids("stripe", "checkout_session_completed")
    first = stripe_post(client, raw)
    assert first.status_code == 202 and first.json()["type"] == "purchase", first.text
    assert stripe_post(client, raw).json()["status"] == "duplicate"
    _, other = with_new_ids("stripe", "invoice_paid")
    stale = stripe_post(client, other, at=int(time.time()) - 600)
    assert stale.status_code == 401 and "tolerance" in stale.json()["message"]
    assert stripe_post(client, other, secret="whsec_other").status_code == 401
    for name in ("invoice_paid", "invoice_payment_failed", "customer_created"):
        assert stripe_post(client, with_new_ids("stripe", name)[1]).status_code == 202


def test_generic_zendesk_webhook(client: httpx.Client) -> None:
    """A generic integration configured in YAML verifies its timestamped base64 signature and maps the ticket."""
    ticket = {"id": int(time.time_ns() % 10**9), "subject": "Chipped mug", "agent_name": "Camille"}
    body = json.dumps({"event": "ticket.solved", "ticket": ticket,
                       "requester": {"email": "sophie.martin@example.net", "locale": "en-IE",
                       "first_name": "Sophie"}, "survey_url": "https://shop.example.com/survey/1"}).encode()
    ts = str(int(time.time()))
    digest = hmac.new(ZENDESK_SECRET.encode(), ts.encode() + body, hashlib.sha256).digest()
    signature = base64.b64encode(digest).decode()
    headers = {"Content-Type": "application/json", "X-Zendesk-Webhook-Signature": signature,
               "X-Zendesk-Webhook-Signature-Timestamp": ts}
    response = client.post("/v1/integrations/zendesk", content=body, headers=headers)
    assert response.status_code == 202 and response.json()["type"] == "support_ticket_closed", response.text
    headers["X-Zendesk-Webhook-Signature-Timestamp"] = str(int(ts) + 1)
    assert client.post("/v1/integrations/zendesk", content=body, headers=headers).status_code == 401


def test_unknown_integration_404_and_wrong_content_type_415(client: httpx.Client) -> None:
    """An integration not configured answers 404; a non-JSON webhook 415."""
    assert client.post("/v1/integrations/nope", json={}).status_code == 404
    response = client.post("/v1/integrations/shopify", content=b"a=1",
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 415


def test_webhook_mapping_to_an_invalid_event_is_dead_lettered(client: httpx.Client, store: Store) -> None:
    """A signed order without line items is acknowledged as invalid and kept as a dead letter with the field."""
    body, _ = with_new_ids("shopify", "orders_create")
    body["line_items"] = []
    response = shopify_post(client, "orders/create", json.dumps(body).encode(), webhook_id="wh-invalid")
    assert response.status_code == 202 and response.json()["status"] == "invalid"
    [letter] = [d for d in store.dead_letters() if d["ref"] == "shopify:wh-invalid"]
    assert "data.items" in letter["reason"] and letter["payload"]["external_type"] == "orders/create"


def test_integrations_list_and_preview_need_the_scope(client: httpx.Client, make_key: MakeKey) -> None:
    """With the integrations scope, the list shows each mapping and preview returns the mapped envelope."""
    key = make_key("integrations")
    listed = client.get("/v1/integrations", headers=auth(key)).json()
    assert listed["shopify"]["enabled"] and listed["shopify"]["events"]["orders/create"] == "order_confirmed"
    payload = json.loads((DATA / "stripe" / "customer_created.json").read_text())
    preview = client.post("/v1/integrations/stripe/preview", json={"type": "customer.created", "payload": payload},
                          headers=auth(key))
    assert preview.json()["event"]["type"] == "signup"
    assert client.get("/v1/integrations", headers=auth(make_key())).status_code == 403


def test_redis_keys_expire(services: Services, client: httpx.Client, make_key: MakeKey, catalogue: Catalogue) -> None:
    """Dedupe claims carry a TTL of days, so Redis does not grow forever."""
    event = new_event(catalogue)
    client.post("/v1/events", json=event, headers=auth(make_key()))
    ttl = redis.Redis.from_url(services.redis_url).ttl(f"declic:api:seen:event:{event['id']}")
    assert 6 * 86400 < ttl <= 7 * 86400


def test_one_click_unsubscribe(client: httpx.Client, api_env: dict[str, str], store: Store) -> None:
    """GET shows a page and changes nothing; POST (RFC 8058 one-click) unsubscribes; forged links get 400."""
    from workers.unsubscribe import UnsubscribeLinks

    with store.pool.connection() as conn:
        conn.execute("INSERT INTO contacts (id, email, opt_in, profile_at)"
                     " VALUES ('c-unsub', 'u@example.org', true, now())"
                     " ON CONFLICT (id) DO UPDATE SET opt_in = true, unsubscribed_at = NULL")
    url = UnsubscribeLinks(api_env["DECLIC_SECRET_KEY"], "http://x").url("c-unsub", "survey")
    path = "/" + url.split("/", 3)[3]
    page = client.get(path)
    assert page.status_code == 200 and "<form method='post'" in page.text

    def contact() -> dict[str, Any]:
        with store.pool.connection() as conn:
            row = conn.execute("SELECT opt_in, unsubscribed_at FROM contacts WHERE id = 'c-unsub'").fetchone()
        assert row is not None
        return row

    assert contact()["opt_in"] is True
    done = client.post(path, content=b"List-Unsubscribe=One-Click",
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert done.status_code == 200 and "unsubscribed" in done.text
    assert contact()["opt_in"] is False and contact()["unsubscribed_at"] is not None
    assert client.post(path[:-3] + "abc").status_code == 400
    assert client.get("/v1/unsubscribe/not-a-token").status_code == 400


def test_cancel_pending_sends_over_http(client: httpx.Client, make_key: MakeKey, store: Store) -> None:
    """POST /v1/sends/cancel needs a key, names the bad field, and cancels what a contact has pending."""
    body = {"contact_id": "c-nobody"}
    assert client.post("/v1/sends/cancel", json=body).status_code == 401
    key = make_key("events:write")
    both = client.post("/v1/sends/cancel", json={"contact_id": "a", "event_id": "b"}, headers=auth(key))
    assert both.status_code == 422
    answer = client.post("/v1/sends/cancel", json=body, headers=auth(key))
    assert answer.status_code == 200 and answer.json() == {"cancelled": 0}
    assert "RateLimit-Remaining" in answer.headers
