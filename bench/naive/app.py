"""The naive baseline: what a straightforward Celery implementation of triggered email does.

``celery -A bench.naive.app worker --pool prefork --concurrency 2``: Celery's defaults
(prefork, early acknowledgement, prefetch of four per process), one task per event that
renders its emails with plain Jinja2 and enqueues one task per email, which calls boto3
``sesv2.send_email`` and writes a row to Postgres. No ledger, no claim, no dedupe, no consent —
which is the point: it measures what the plain approach costs, not a strawman. Only the queue
name differs from the defaults, so it cannot take Déclic's messages on a shared broker.

Configured from ``BENCH_NAIVE_BROKER_URL`` and ``BENCH_NAIVE_DATABASE_URL``; SES through boto3's
own variables (``AWS_ENDPOINT_URL_SESV2`` points it at the stand-in).
"""

from __future__ import annotations

import base64
import threading
import uuid
from email.message import EmailMessage
from typing import Any

import boto3
import psycopg
from celery import Celery
from jinja2 import DictLoader, Environment, select_autoescape
from pydantic_settings import BaseSettings, SettingsConfigDict

QUEUE = "bench.naive"
TABLE = "bench_naive_sends"
CREATE_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} (id uuid PRIMARY KEY, event_id text NOT NULL, kind text NOT NULL,"
    " ses_message_id text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
)

# Which emails each event type causes: the same immediate emails as Déclic's catalogue.
EMAILS: dict[str, tuple[str, ...]] = {
    "purchase": ("receipt",),
    "order_confirmed": ("order",),
    "order_shipped": ("shipped",),
    "signup": ("welcome", "onboarding"),
    "password_reset": ("reset",),
    "invoice_issued": ("invoice",),
    "account_updated": ("security",),
}

_LAYOUT = """<html><body style="font-family:Georgia,serif"><h1>{% block title %}{% endblock %}</h1>
{% block body %}{% endblock %}<p style="color:#777">Maison Lumière, 12 rue des Lilas, 75011 Paris</p></body></html>"""
_TEMPLATES = {
    "layout.html": _LAYOUT,
    "receipt.html": """{% extends "layout.html" %}{% block title %}Thank you, {{ name }}{% endblock %}
{% block body %}<table>{% for i in data["items"] %}<tr><td>{{ i.name }}</td><td>{{ i.quantity }}</td>
<td>{{ i.unit_price }} {{ data.currency }}</td></tr>{% endfor %}</table><p>Total: {{ data.total }}</p>
{% endblock %}""",
    "order.html": """{% extends "layout.html" %}{% block title %}Order {{ data.order_id }} confirmed{% endblock %}
{% block body %}<p>{{ data["items"]|length }} item(s), total {{ data.total }} {{ data.currency }}.</p>{% endblock %}""",
    "shipped.html": """{% extends "layout.html" %}{% block title %}On its way, {{ name }}{% endblock %}
{% block body %}<p>Order {{ data.order_id }} shipped with {{ data.carrier }}.</p>{% endblock %}""",
    "welcome.html": """{% extends "layout.html" %}{% block title %}Welcome, {{ name }}{% endblock %}
{% block body %}<p>Thank you for joining us.</p>{% endblock %}""",
    "onboarding.html": """{% extends "layout.html" %}{% block title %}Our workshop{% endblock %}
{% block body %}<p>The story of Maison Lumière.</p>{% endblock %}""",
    "reset.html": """{% extends "layout.html" %}{% block title %}Reset your password{% endblock %}
{% block body %}<p><a href="{{ data.reset_url }}">Choose a new password</a></p>{% endblock %}""",
    "invoice.html": """{% extends "layout.html" %}{% block title %}Invoice {{ data.invoice_number }}{% endblock %}
{% block body %}<p>Total {{ data.total }} {{ data.currency }}; the PDF is attached.</p>{% endblock %}""",
    "security.html": """{% extends "layout.html" %}{% block title %}Your account changed{% endblock %}
{% block body %}<p>Changed: {{ data.changes|join(", ") }}.</p>{% endblock %}""",
}
_SUBJECTS = {"receipt": "Your order", "order": "Order confirmed", "shipped": "Your order has shipped",
             "welcome": "Welcome", "onboarding": "Our workshop", "reset": "Reset your password",
             "invoice": "Your invoice", "security": "Your account changed"}


class NaiveSettings(BaseSettings):
    """Where the baseline's broker and database are."""

    model_config = SettingsConfigDict(env_prefix="BENCH_NAIVE_", extra="ignore")

    broker_url: str = "redis://127.0.0.1:6379/0"
    database_url: str = "postgresql://postgres@127.0.0.1:5432/declic"


app = Celery("naive_baseline", set_as_current=False)


@app.on_configure.connect
def _configure(sender: Celery, **_: Any) -> None:
    sender.conf.update(broker_url=NaiveSettings().broker_url, task_default_queue=QUEUE)


_env = Environment(loader=DictLoader(_TEMPLATES), autoescape=select_autoescape())
_local = threading.local()


def _resources() -> tuple[Any, psycopg.Connection[Any]]:
    """One boto3 client and one Postgres connection per worker process, made after the fork."""
    if getattr(_local, "client", None) is None:
        _local.client = boto3.client("sesv2")
        _local.conn = psycopg.connect(NaiveSettings().database_url, autocommit=True)
    return _local.client, _local.conn


@app.task(name="naive.handle_event")
def handle_event(event: dict[str, Any]) -> None:
    """Render each email the event causes and enqueue one send task per email."""
    name = (event["contact"].get("attributes") or {}).get("first_name") or "there"
    for kind in EMAILS.get(event["type"], ()):
        html = _env.get_template(f"{kind}.html").render(data=event["data"], name=name)
        pdf = event["data"].get("pdf") if kind == "invoice" else None
        send_email.delay(event["id"], kind, event["contact"]["email"], _SUBJECTS[kind], html, pdf)


@app.task(name="naive.send_email")
def send_email(event_id: str, kind: str, to: str, subject: str, html: str, pdf: dict[str, Any] | None) -> None:
    """One SES call and one row per email."""
    client, conn = _resources()
    send_id = str(uuid.uuid4())
    request: dict[str, Any] = {
        "FromEmailAddress": "Maison Lumière <orders@shop.example.com>",
        "Destination": {"ToAddresses": [to]},
        "EmailTags": [{"Name": "send_id", "Value": send_id}, {"Name": "kind", "Value": kind}],
    }
    if pdf:
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = request["FromEmailAddress"], to, subject
        message.set_content("Your invoice is attached.")
        message.add_alternative(html, subtype="html")
        message.add_attachment(base64.b64decode(pdf["content_base64"]), maintype="application", subtype="pdf",
                               filename=pdf["filename"])
        request["Content"] = {"Raw": {"Data": message.as_bytes()}}
    else:
        request["Content"] = {"Simple": {"Subject": {"Data": subject},
                                         "Body": {"Html": {"Data": html}, "Text": {"Data": subject}}}}
    message_id = client.send_email(**request)["MessageId"]
    conn.execute(f"INSERT INTO {TABLE} (id, event_id, kind, ses_message_id) VALUES (%s, %s, %s, %s)",
                 (send_id, event_id, kind, message_id))
