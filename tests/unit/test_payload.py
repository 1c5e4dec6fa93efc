"""Building SES SendEmail requests and MIME messages, and translating SES errors."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError, ReadTimeoutError

from workers.errors import PermanentSendError, ThrottledError, TransientSendError
from workers.payload import AttachmentBlob, OutgoingEmail, build_send_request
from workers.ses import InMemorySender, translate

TAGS = {"flow": "invoice", "step": "main", "variant": "a", "send_id": "5b1c6f0e-0000-4000-8000-000000000001"}


def outgoing(**overrides: Any) -> OutgoingEmail:
    values: dict[str, Any] = {
        "sender_email": "billing@shop.example.com",
        "sender_name": "Maison Lumière",
        "to": "jeanne@example.org",
        "subject": "Votre facture F-2026-0042",
        "html": "<p>Bonjour Jeanne</p>",
        "text": "Bonjour Jeanne\n",
        "tags": TAGS,
        "configuration_set": "declic",
    }
    values.update(overrides)
    return OutgoingEmail(**values)


def test_simple_request_is_exact() -> None:
    """Without attachments the request uses Simple content, the configuration set and all four tags."""
    request = build_send_request(outgoing(reply_to="help@shop.example.com"))
    assert request == {
        "FromEmailAddress": "=?utf-8?q?Maison_Lumi=C3=A8re?= <billing@shop.example.com>",
        "Destination": {"ToAddresses": ["jeanne@example.org"]},
        "ReplyToAddresses": ["help@shop.example.com"],
        "ConfigurationSetName": "declic",
        "EmailTags": [
            {"Name": "flow", "Value": "invoice"},
            {"Name": "step", "Value": "main"},
            {"Name": "variant", "Value": "a"},
            {"Name": "send_id", "Value": TAGS["send_id"]},
        ],
        "Content": {"Simple": {
            "Subject": {"Data": "Votre facture F-2026-0042", "Charset": "UTF-8"},
            "Body": {"Text": {"Data": "Bonjour Jeanne\n", "Charset": "UTF-8"},
                     "Html": {"Data": "<p>Bonjour Jeanne</p>", "Charset": "UTF-8"}},
        }},
    }


def test_attachments_ride_in_simple_content() -> None:
    """With a PDF the request stays Simple: SES builds the MIME from the text, the HTML and the attachment."""
    pdf = AttachmentBlob("facture-F-2026-0042.pdf", "application/pdf", b"%PDF-1.4 fake")
    request = build_send_request(outgoing(attachments=(pdf,), reply_to="help@shop.example.com"))
    assert "Raw" not in request["Content"]
    assert request["ReplyToAddresses"] == ["help@shop.example.com"]
    assert request["EmailTags"][3] == {"Name": "send_id", "Value": TAGS["send_id"]}
    simple = request["Content"]["Simple"]
    assert simple["Body"]["Html"]["Data"] == "<p>Bonjour Jeanne</p>"
    assert simple["Attachments"] == [{
        "FileName": "facture-F-2026-0042.pdf", "ContentType": "application/pdf", "ContentDisposition": "ATTACHMENT",
        "ContentTransferEncoding": "BASE64", "RawContent": b"%PDF-1.4 fake",
    }]


def test_an_attachment_request_is_one_ses_accepts() -> None:
    """botocore's own validation of SendEmail (the model SES publishes) accepts the attachment request."""
    import botocore.session
    from botocore.validate import ParamValidator

    model = botocore.session.get_session().get_service_model("sesv2").operation_model("SendEmail").input_shape
    pdf = AttachmentBlob("facture.pdf", "application/pdf", b"%PDF-1.4 fake")
    report = ParamValidator().validate(build_send_request(outgoing(attachments=(pdf,))), model)
    assert not report.has_errors(), report.generate_report()


def test_header_injection_is_impossible() -> None:
    """A line break in the subject or a header is refused, never sent as a new header."""
    with pytest.raises(ValueError, match="line break"):
        build_send_request(outgoing(subject="Hello\r\nBcc: victim@example.org"))
    with pytest.raises(ValueError, match="line break"):
        build_send_request(outgoing(headers={"List-Unsubscribe": "<https://x>\nBcc: v@example.org"}))
    with pytest.raises(ValueError, match="line break"):
        pdf = AttachmentBlob("facture.pdf\r\nBcc: v@example.org", "application/pdf", b"%PDF")
        build_send_request(outgoing(attachments=(pdf,)))


def test_tag_values_are_checked() -> None:
    """Tag values SES would refuse are caught before the call."""
    with pytest.raises(ValueError, match="SES tag"):
        build_send_request(outgoing(tags={"flow": "a b"}))


def client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "SendEmail")


def test_errors_are_translated_in_one_place() -> None:
    """Throttling and 5xx are transient, rejections permanent, timeouts transient."""
    assert isinstance(translate(client_error("TooManyRequestsException", 429)), ThrottledError)
    assert isinstance(translate(client_error("InternalFailure", 500)), TransientSendError)
    assert isinstance(translate(client_error("MessageRejected", 400)), PermanentSendError)
    assert isinstance(translate(ReadTimeoutError(endpoint_url="http://x")), TransientSendError)


def test_in_memory_sender_records_and_fails_on_demand() -> None:
    """The in-memory sender raises queued failures first, then records requests."""
    sender = InMemorySender()
    sender.fail_next(ThrottledError("slow down"))
    with pytest.raises(ThrottledError):
        sender.send({"x": 1})
    assert sender.send({"x": 2}) == "mem-000001"
    assert sender.sent == [{"x": 2}]
