"""Test helpers that ship with the package: a local SNS signer, and emptying the schema.

:class:`LocalSns` makes a key and a self-signed certificate with :mod:`cryptography` and signs
envelopes exactly as SNS does, so the real :class:`~reporting.sns_verify.SnsVerifier` can be
driven end to end with its certificate fetcher pointed at :meth:`LocalSns.fetch` — no network.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from reporting.sns_verify import string_to_sign

CERT_URL = "https://sns.eu-west-3.amazonaws.com/SimpleNotificationService-local.pem"
TOPIC_ARN = "arn:aws:sns:eu-west-3:123456789012:declic-ses-events"

RESET_REPORTING = (
    "TRUNCATE reporting.email_events, reporting.sns_messages, reporting.pending_days, reporting.flow_daily,"
    " reporting.flow_trends, reporting.insights, reporting.ingest_dead_letters,"
    " reporting.password_resets_daily, reporting.watermarks"
)


class LocalSns:
    """An SNS stand-in for signatures: its own RSA key and self-signed certificate."""

    def __init__(self, *, valid_days: int = 30) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
        now = datetime.now(UTC)
        self.cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=valid_days))
            .sign(self.key, hashes.SHA256())
        )
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)
        self.fetched: list[str] = []

    def fetch(self, url: str) -> bytes:
        """The certificate fetcher to inject: records the URL, returns the PEM."""
        self.fetched.append(url)
        return self.pem

    def sign(self, message: Mapping[str, Any], version: str = "1", cert_url: str = CERT_URL) -> dict[str, Any]:
        """``message`` with SignatureVersion, SigningCertURL and a valid Signature."""
        signed = {**message, "SignatureVersion": version, "SigningCertURL": cert_url}
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()  # noqa: S303 - SNS v1 is SHA1
        signature = self.key.sign(string_to_sign(signed), padding.PKCS1v15(), algorithm)
        signed["Signature"] = base64.b64encode(signature).decode()
        return signed

    def notification(
        self, record: Mapping[str, Any], *, version: str = "1", message_id: str | None = None
    ) -> dict[str, Any]:
        """A signed ``Notification`` carrying an SES record as its Message string."""
        return self.sign({
            "Type": "Notification", "MessageId": message_id or str(uuid.uuid4()), "TopicArn": TOPIC_ARN,
            "Message": json.dumps(record), "Timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "UnsubscribeURL": "https://sns.eu-west-3.amazonaws.com/?Action=Unsubscribe",
        }, version)

    def subscription_confirmation(self, *, version: str = "1") -> dict[str, Any]:
        token = uuid.uuid4().hex
        return self.sign({
            "Type": "SubscriptionConfirmation", "MessageId": str(uuid.uuid4()), "Token": token,
            "TopicArn": TOPIC_ARN, "Message": f"You have chosen to subscribe to the topic {TOPIC_ARN}.",
            "SubscribeURL": f"https://sns.eu-west-3.amazonaws.com/?Action=ConfirmSubscription&Token={token}",
            "Timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }, version)
