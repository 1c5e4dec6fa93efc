"""The API's own errors and the one JSON shape every error answer has.

::

    ApiError                 status + machine code + message (+ field errors)
    ├── BodyTooLarge         413  over 1 MB (Content-Length or streamed size)
    ├── UnsupportedMedia     415  not application/json
    ├── BadRequest           400  not JSON at all
    ├── Unprocessable        422  valid JSON, invalid event: ``errors`` names each field
    ├── Unauthorized         401  no key, unknown or revoked key, bad webhook signature
    ├── Forbidden            403  the key lacks the scope
    ├── RateLimited          429  with Retry-After and RateLimit-* headers
    ├── NotFound             404  unknown integration
    └── Unavailable          503  broker or database down: nothing was accepted

Every answer is ``{"error": code, "message": text, "errors": [{"field", "message"}]}`` so a
client can branch on ``error`` and show ``errors`` next to its own fields.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse


class ApiError(Exception):
    """An answer other than success; raised anywhere in a request, rendered in one place."""

    status = 500
    code = "internal"

    def __init__(
        self,
        message: str,
        *,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors or []
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, "errors": self.errors}


class BodyTooLarge(ApiError):
    status, code = 413, "body_too_large"


class UnsupportedMedia(ApiError):
    status, code = 415, "unsupported_media_type"


class BadRequest(ApiError):
    status, code = 400, "bad_request"


class Unprocessable(ApiError):
    status, code = 422, "invalid"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class RateLimited(ApiError):
    status, code = 429, "rate_limited"


class NotFound(ApiError):
    status, code = 404, "not_found"


class Unavailable(ApiError):
    status, code = 503, "unavailable"


async def api_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Render an :class:`ApiError`; FastAPI calls this for every one raised."""
    assert isinstance(exc, ApiError)
    headers = dict(exc.headers)
    if isinstance(exc, Unauthorized):
        # RFC 6750 §3: a 401 for a bearer-protected resource names the scheme.
        headers.setdefault("WWW-Authenticate", 'Bearer realm="declic"')
    extra = getattr(request.state, "ratelimit_headers", None)
    if extra:
        headers = {**extra, **headers}
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)
