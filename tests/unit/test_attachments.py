"""Attachments come from the event inline or from S3 (moto in-process)."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from flows import Catalogue
from workers.attachments import S3ObjectStore, collect_attachments
from workers.errors import AttachmentError

PDF = b"%PDF-1.4\n% tiny\n"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="invoices")
        client.put_object(Bucket="invoices", Key="2026/F-1.pdf", Body=PDF)
        yield


def test_pdf_is_read_from_s3(s3: None, catalogue: Catalogue) -> None:
    """An invoice whose PDF is an S3 object gets the object's bytes attached."""
    data = {"pdf": {"filename": "F-1.pdf", "s3_bucket": "invoices", "s3_key": "2026/F-1.pdf"}}
    [blob] = collect_attachments(catalogue["invoice"], data, S3ObjectStore())
    assert (blob.filename, blob.content_type, blob.data) == ("F-1.pdf", "application/pdf", PDF)


def test_missing_s3_object_is_permanent(s3: None, catalogue: Catalogue) -> None:
    """A PDF that is not in S3 is a permanent error, so the send fails with a reason instead of retrying."""
    data = {"pdf": {"filename": "F-2.pdf", "s3_bucket": "invoices", "s3_key": "missing.pdf"}}
    with pytest.raises(AttachmentError) as exc:
        collect_attachments(catalogue["invoice"], data, S3ObjectStore())
    assert not exc.value.transient and "NoSuchKey" in str(exc.value)


def test_inline_pdf_and_missing_key(catalogue: Catalogue) -> None:
    """Inline base64 is decoded; a flow naming an attachment the event lacks fails clearly."""
    data = {"pdf": {"filename": "F-1.pdf", "content_base64": base64.b64encode(PDF).decode()}}
    [blob] = collect_attachments(catalogue["invoice"], data, S3ObjectStore())
    assert blob.data == PDF
    with pytest.raises(AttachmentError, match="no attachment 'pdf'"):
        collect_attachments(catalogue["invoice"], {}, S3ObjectStore())
