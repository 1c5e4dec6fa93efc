"""Fetching a flow's attachments from the event data: inline base64 or an S3 object."""

from __future__ import annotations

import base64
import threading
from collections.abc import Mapping
from typing import Any, Protocol

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from events.types import Attachment
from flows.model import Flow
from workers.errors import AttachmentError
from workers.payload import AttachmentBlob

MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024  # SES allows 40 MB per message; invoices are small


class ObjectStore(Protocol):
    def get(self, bucket: str, key: str) -> bytes: ...


class S3ObjectStore:
    """Reads objects from S3 with one client per process and bounded time and size."""

    def __init__(self, *, timeout_s: float = 10.0) -> None:
        self._config = Config(connect_timeout=timeout_s, read_timeout=timeout_s, retries={"max_attempts": 2})
        self._client: Any = None
        self._lock = threading.Lock()

    def get(self, bucket: str, key: str) -> bytes:
        if self._client is None:
            with self._lock:
                self._client = self._client or boto3.session.Session().client("s3", config=self._config)
        try:
            head = self._client.get_object(Bucket=bucket, Key=key)
            if int(head.get("ContentLength", 0)) > MAX_ATTACHMENT_BYTES:
                raise AttachmentError(f"s3://{bucket}/{key} is larger than 10 MB", transient=False)
            return bytes(head["Body"].read())
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            missing = code in {"NoSuchKey", "NoSuchBucket", "AccessDenied", "404", "403"}
            raise AttachmentError(f"s3://{bucket}/{key}: {code}", transient=not missing) from exc
        except BotoCoreError as exc:
            raise AttachmentError(f"s3://{bucket}/{key}: {exc}", transient=True) from exc


def collect_attachments(flow: Flow, data: Mapping[str, Any], objects: ObjectStore) -> tuple[AttachmentBlob, ...]:
    """The attachments the flow names, read from the event's data."""
    blobs: list[AttachmentBlob] = []
    for key in flow.attachments:
        if key not in data:
            raise AttachmentError(f"event data has no attachment {key!r}", transient=False)
        try:
            spec = Attachment.model_validate(data[key])
        except ValidationError as exc:
            raise AttachmentError(f"data.{key}: {exc.errors()[0]['msg']}", transient=False) from exc
        if spec.content_base64 is not None:
            content = base64.b64decode(spec.content_base64)
        else:
            content = objects.get(spec.s3_bucket or "", spec.s3_key or "")
        if len(content) > MAX_ATTACHMENT_BYTES:
            raise AttachmentError(f"data.{key} is larger than 10 MB", transient=False)
        blobs.append(AttachmentBlob(spec.filename, spec.content_type, content))
    return tuple(blobs)
