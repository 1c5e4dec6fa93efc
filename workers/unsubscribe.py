"""Signed, expiring one-click unsubscribe links (RFC 8058) and the headers that carry them.

The token names the contact and the flow, is signed with ``DECLIC_SECRET_KEY`` through
itsdangerous (HMAC, constant-time check) and expires, so a leaked old link stops working.
``GET`` on the link shows a confirmation page; ``POST`` (what mail clients send for
``List-Unsubscribe-Post: List-Unsubscribe=One-Click``) unsubscribes at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

MAX_AGE_S = 60 * 24 * 3600  # links in old emails keep working for two months
_SALT = "declic.unsubscribe.v1"


class InvalidLink(ValueError):
    """A link that was tampered with, or has expired (``expired`` says which)."""

    def __init__(self, message: str, *, expired: bool) -> None:
        super().__init__(message)
        self.expired = expired


@dataclass(frozen=True)
class Unsubscribe:
    contact_id: str
    flow: str


class UnsubscribeLinks:
    def __init__(self, secret_key: str, public_url: str) -> None:
        self._serializer = URLSafeTimedSerializer(secret_key, salt=_SALT)
        self._base = public_url.rstrip("/")

    def url(self, contact_id: str, flow: str) -> str:
        token = self._serializer.dumps({"c": contact_id, "f": flow})
        return f"{self._base}/v1/unsubscribe/{token}"

    def headers(self, url: str) -> dict[str, str]:
        return {"List-Unsubscribe": f"<{url}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}

    def read(self, token: str, max_age_s: int = MAX_AGE_S) -> Unsubscribe:
        try:
            data = self._serializer.loads(token, max_age=max_age_s)
        except SignatureExpired as exc:
            raise InvalidLink("this unsubscribe link has expired", expired=True) from exc
        except BadSignature as exc:
            raise InvalidLink("this unsubscribe link is not valid", expired=False) from exc
        if not (isinstance(data, dict) and isinstance(data.get("c"), str) and isinstance(data.get("f"), str)):
            raise InvalidLink("this unsubscribe link is not valid", expired=False)
        return Unsubscribe(data["c"], data["f"])
