"""Turning one outgoing email into SES v2 ``SendEmail`` parameters: pure, no network.

Always Simple content: SES builds the MIME, attachments included (``Content.Simple.Attachments``,
https://docs.aws.amazon.com/ses/latest/dg/attachments.html), so no MIME is written here (an
invoice spent about 3 ms of CPU in ``email.policy`` writing its own). Every send carries the
configuration set and the tags ``flow``, ``step``, ``variant`` and ``send_id`` so each SES
notification joins back to its send.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.utils import formataddr
from typing import Any

_TAG_VALUE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_UNSAFE_HEADER = re.compile(r"[\r\n\x00]")


@dataclass(frozen=True)
class AttachmentBlob:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class OutgoingEmail:
    sender_email: str
    sender_name: str | None
    to: str
    subject: str
    html: str
    text: str
    tags: dict[str, str]
    reply_to: str | None = None
    configuration_set: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    attachments: tuple[AttachmentBlob, ...] = ()

    @property
    def from_header(self) -> str:
        # RFC 2047-encodes a non-ASCII display name ("Maison Lumière").
        return formataddr((self.sender_name or "", self.sender_email), charset="utf-8")


def _check_header(name: str, value: str) -> None:
    # Header injection is impossible by construction: no value may carry a line break.
    if _UNSAFE_HEADER.search(name) or _UNSAFE_HEADER.search(value):
        raise ValueError(f"header {name!r} contains a line break")


def _attachment(blob: AttachmentBlob) -> dict[str, Any]:
    _check_header("FileName", blob.filename)  # SES writes both into the attachment's headers
    _check_header("ContentType", blob.content_type)
    return {"FileName": blob.filename, "ContentType": blob.content_type, "ContentDisposition": "ATTACHMENT",
            "ContentTransferEncoding": "BASE64", "RawContent": blob.data}


def build_send_request(email: OutgoingEmail) -> dict[str, Any]:
    """The keyword arguments of ``sesv2.send_email`` for this email."""
    _check_header("Subject", email.subject)
    for name, value in email.tags.items():
        if not (_TAG_VALUE.match(name) and _TAG_VALUE.match(value)):
            raise ValueError(f"SES tag {name}={value!r} may use only letters, digits, _ and -")
    request: dict[str, Any] = {
        "FromEmailAddress": email.from_header,
        "Destination": {"ToAddresses": [email.to]},
        "EmailTags": [{"Name": k, "Value": v} for k, v in email.tags.items()],
    }
    if email.configuration_set:
        request["ConfigurationSetName"] = email.configuration_set
    if email.reply_to:
        request["ReplyToAddresses"] = [email.reply_to]
    simple: dict[str, Any] = {
        "Subject": {"Data": email.subject, "Charset": "UTF-8"},
        "Body": {
            "Text": {"Data": email.text, "Charset": "UTF-8"},
            "Html": {"Data": email.html, "Charset": "UTF-8"},
        },
    }
    if email.headers:
        for name, value in email.headers.items():
            _check_header(name, value)
        simple["Headers"] = [{"Name": k, "Value": v} for k, v in email.headers.items()]
    if email.attachments:
        simple["Attachments"] = [_attachment(blob) for blob in email.attachments]
    request["Content"] = {"Simple": simple}
    return request
