"""Verifying Amazon SNS message signatures (SignatureVersion 1 = SHA1, 2 = SHA256).

https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html

A message is authentic when its ``Signature`` verifies, with the public key of the X.509
certificate at ``SigningCertURL``, over the canonical string built from its fields. The
certificate is only ever fetched from an ``https://sns.<region>.amazonaws.com/…pem`` URL
(anything else could be an attacker's certificate, or a request to an internal address), and
is cached so a busy endpoint fetches it once. The fetcher is injected: tests sign with a
locally generated key and never touch the network.

Errors::

    SnsVerificationError        the message is not provably from SNS → 401
    └── CertificateUrlRefused   SigningCertURL or SubscribeURL is not an SNS HTTPS URL
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

CertFetcher = Callable[[str], bytes]

_SNS_HOST = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")

# The fields signed, in order, per message type ("Subject" only when present).
_SIGNED_FIELDS: dict[str, tuple[str, ...]] = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}


class SnsVerificationError(Exception):
    """The message is not provably from Amazon SNS; the message says why."""


class CertificateUrlRefused(SnsVerificationError):
    """A certificate or subscription URL outside ``https://sns.<region>.amazonaws.com``."""


def check_sns_url(url: str, *, pem: bool) -> str:
    """``url`` if it is an HTTPS URL on an SNS regional host (and a .pem when ``pem``)."""
    parts = urlsplit(url)
    if (parts.scheme != "https" or not parts.hostname or not _SNS_HOST.match(parts.hostname)
            or parts.port not in (None, 443) or parts.username or parts.password):
        raise CertificateUrlRefused(f"not an SNS HTTPS URL: {parts.scheme}://{parts.hostname}")
    if pem and not parts.path.endswith(".pem"):
        raise CertificateUrlRefused("the signing certificate URL is not a .pem file")
    return url


def string_to_sign(message: Mapping[str, Any]) -> bytes:
    """The canonical string SNS signs: ``name\\nvalue\\n`` for each signed field present."""
    kind = message.get("Type")
    fields = _SIGNED_FIELDS.get(kind) if isinstance(kind, str) else None
    if fields is None:
        raise SnsVerificationError(f"unknown SNS message type {kind!r}")
    out = []
    for name in fields:
        value = message.get(name)
        if value is None:
            if name == "Subject":
                continue
            raise SnsVerificationError(f"signed field {name} is missing")
        out.append(f"{name}\n{value}\n")
    return "".join(out).encode()


def https_fetcher(timeout_s: float = 5.0) -> CertFetcher:
    """Fetch a certificate over HTTPS with a timeout, never following redirects."""
    import httpx

    def fetch(url: str) -> bytes:
        response = httpx.get(check_sns_url(url, pem=True), timeout=timeout_s, follow_redirects=False)
        response.raise_for_status()
        return response.content

    return fetch


class CertificateCache:
    """Certificates by URL, fetched once, kept ``ttl_s`` seconds; thread-safe."""

    def __init__(self, fetch: CertFetcher, *, ttl_s: float = 24 * 3600, max_entries: int = 64) -> None:
        self._fetch = fetch
        self._ttl_s = ttl_s
        self._max = max_entries
        self._lock = threading.Lock()
        self._certs: dict[str, tuple[float, x509.Certificate]] = {}
        self.fetches = 0

    def get(self, url: str) -> x509.Certificate:
        check_sns_url(url, pem=True)  # before anything leaves this process
        now = time.monotonic()
        with self._lock:
            cached = self._certs.get(url)
            if cached and now - cached[0] < self._ttl_s:
                return cached[1]
        try:
            cert = x509.load_pem_x509_certificate(self._fetch(url))
        except ValueError as exc:
            raise SnsVerificationError(f"the signing certificate could not be read: {exc}") from None
        with self._lock:
            self.fetches += 1
            if len(self._certs) >= self._max:
                self._certs.pop(next(iter(self._certs)))
            self._certs[url] = (now, cert)
        return cert


class SnsVerifier:
    """Checks the signature of an SNS message (as a dict parsed from the POST body)."""

    def __init__(self, certificates: CertificateCache) -> None:
        self.certificates = certificates

    def verify(self, message: Mapping[str, Any]) -> None:
        """Return if authentic; raise :class:`SnsVerificationError` saying why not."""
        version = message.get("SignatureVersion")
        signature = message.get("Signature")
        cert_url = message.get("SigningCertURL") or message.get("SigningCertUrl")
        if not signature or not cert_url:
            raise SnsVerificationError("the message is not signed")
        hash_class = _HASHES.get(str(version))
        if hash_class is None:
            raise SnsVerificationError(f"unsupported SignatureVersion {version!r}")
        if not isinstance(cert_url, str) or not isinstance(signature, str):
            raise SnsVerificationError("malformed signature fields")
        try:
            raw_signature = base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError):
            raise SnsVerificationError("the signature is not base64") from None
        signed = string_to_sign(_with_message_text(message))
        cert = self.certificates.get(cert_url)
        now = datetime.now(UTC)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise SnsVerificationError("the signing certificate is not valid now")
        key = cert.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise SnsVerificationError("the signing certificate does not hold an RSA key")
        try:
            key.verify(raw_signature, signed, padding.PKCS1v15(), hash_class())
        except InvalidSignature:
            raise SnsVerificationError("the signature does not match the message") from None


def _with_message_text(message: Mapping[str, Any]) -> Mapping[str, Any]:
    """SNS signs ``Message`` as the string it sent; a relay that parsed it gives an object."""
    body = message.get("Message")
    if isinstance(body, str) or body is None:
        return message
    import json

    return {**message, "Message": json.dumps(body, separators=(",", ":"))}
