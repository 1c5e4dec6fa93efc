"""The SES sender's own SendEmail call: the body boto3 would send, signed, and every answer translated."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse

from declic.standin import Faults, StandIn
from workers.errors import AmbiguousSendError, PermanentSendError, ThrottledError, TransientSendError
from workers.ses import SesSender, answer_error, encode_send_email, translate


def _request(send_id: str = "s-1", raw: bytes | None = None) -> dict[str, Any]:
    content: dict[str, Any] = {"Raw": {"Data": raw}} if raw is not None else {"Simple": {
        "Subject": {"Data": "Votre commande « Figuier »", "Charset": "UTF-8"},
        "Body": {"Text": {"Data": "Merci", "Charset": "UTF-8"}, "Html": {"Data": "<p>Merci</p>", "Charset": "UTF-8"}},
    }}
    return {
        "FromEmailAddress": "Maison Lumière <orders@shop.example.com>",
        "Destination": {"ToAddresses": ["customer@example.com"]},
        "EmailTags": [{"Name": "flow", "Value": "purchase_confirmation"}, {"Name": "send_id", "Value": send_id}],
        "ConfigurationSetName": "declic",
        "Content": content,
    }


@pytest.fixture
def standin(monkeypatch: pytest.MonkeyPatch) -> Iterator[StandIn]:
    with StandIn(Faults(seed=3)) as running:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SESV2", running.url)
        monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        yield running


def _boto3_body(sender: SesSender, request: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """What boto3's own ``send_email`` puts on the wire for the same arguments, captured before sending."""
    captured: dict[str, Any] = {}

    def capture(request: Any, **_: Any) -> AWSResponse:
        captured["request"] = request
        return AWSResponse(request.url, 200, {}, None)

    sender.client.meta.events.register_first("before-send.sesv2.SendEmail", capture)
    with pytest.raises(Exception):  # noqa: B017 - the stub answer has no body to parse
        sender.client.send_email(**request)
    return json.loads(captured["request"].body), captured["request"]


def _with_attachment() -> dict[str, Any]:
    request = _request()
    request["Content"]["Simple"]["Attachments"] = [
        {"FileName": "facture-F-2026-0042.pdf", "ContentType": "application/pdf", "ContentDisposition": "ATTACHMENT",
         "ContentTransferEncoding": "BASE64", "RawContent": b"%PDF-1.4\n\xe2\xe3\xcf\xd3"},
    ]
    return request


def test_the_body_is_the_one_boto3_sends(standin: StandIn) -> None:
    """Simple (with and without attachments) and Raw requests encode to the JSON boto3 serialises
    (blobs base64), non-ASCII intact."""
    sender = SesSender(timeout_s=5)
    for request in (_request(), _with_attachment(), _request(raw=b"From: a@b\r\n\r\n\xc3\xa9t\xc3\xa9")):
        expected, _ = _boto3_body(sender, request)
        assert json.loads(encode_send_email(request)) == expected


class _Recording:
    """The sender's HTTP session, keeping each prepared request it sends."""

    def __init__(self, http: Any) -> None:
        self.http, self.sent = http, []

    def send(self, prepared: Any) -> Any:
        self.sent.append(prepared)
        return self.http.send(prepared)


def _auth(request: Any) -> dict[str, str]:
    value = next(v for k, v in request.headers.items() if k.lower() == "authorization")
    scheme, _, fields = (value.decode() if isinstance(value, bytes) else value).partition(" ")
    parts = dict(part.strip().split("=", 1) for part in fields.split(","))
    return {"scheme": scheme, "scope": parts["Credential"].split("/", 1)[1].split("/", 1)[1],
            "headers": parts["SignedHeaders"]}


def test_a_send_is_signed_like_boto3s_and_accepted(standin: StandIn) -> None:
    """SigV4 for ses in the configured region, over the same headers as boto3's; the stand-in records the message."""
    sender = SesSender(timeout_s=5)
    _, boto3_request = _boto3_body(sender, _request())
    sender.client  # resolves the route  # noqa: B018
    assert sender._route is not None
    recording = _Recording(sender._route.http)
    sender._route = dataclasses.replace(sender._route, http=recording)
    message_id = sender.send(_request("s-42"))
    assert standin.client is not None
    assert [(a["message_id"], a["tags"]["send_id"]) for a in standin.client.accepted()] == [(message_id, "s-42")]
    ours, theirs = _auth(recording.sent[0]), _auth(boto3_request)
    assert ours["scheme"] == "AWS4-HMAC-SHA256" and ours["scope"] == "eu-west-3/ses/aws4_request"
    assert ours["scope"] == theirs["scope"]
    assert set(ours["headers"].split(";")) >= {"host", "x-amz-date", "content-type"}
    assert recording.sent[0].url == standin.url.rstrip("/") + "/v2/email/outbound-emails" == boto3_request.url


def test_answers_translate_to_the_error_tree(standin: StandIn) -> None:
    """429 is throttling, 500 transient, a timeout after the request left ambiguous."""
    assert standin.client is not None
    sender = SesSender(timeout_s=0.5)
    standin.client.configure(throttle=1.0)
    with pytest.raises(ThrottledError):
        sender.send(_request())
    standin.client.configure(throttle=0.0, error_5xx=1.0)
    with pytest.raises(TransientSendError) as failed:
        sender.send(_request())
    assert not isinstance(failed.value, ThrottledError | AmbiguousSendError)
    standin.client.configure(error_5xx=0.0, accept_hang=1.0, hang_s=2)
    with pytest.raises(AmbiguousSendError):
        sender.send(_request("s-hang"))
    assert [a["hung"] for a in standin.client.accepted()] == [True]


def test_error_answers_are_read_as_botocore_reads_them() -> None:
    """The code comes from x-amzn-ErrorType (before any ':'), else the body; the message from the body."""
    error = answer_error(400, {"x-amzn-ErrorType": "MessageRejected:http://internal"}, b'{"message": "bad address"}')
    assert error.response["Error"] == {"Code": "MessageRejected", "Message": "bad address"}
    body_only = answer_error(400, {}, b'{"__type": "com.amazon#BadRequestException", "Message": "no"}')
    assert body_only.response["Error"]["Code"] == "BadRequestException"
    assert answer_error(502, {}, b"<html>bad gateway</html>").response["Error"]["Code"] == "502"
    assert isinstance(translate(error), PermanentSendError)
    assert isinstance(translate(answer_error(502, {}, b"")), TransientSendError)
