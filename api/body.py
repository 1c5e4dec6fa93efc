"""Reading a request body safely: JSON only, at most 1 MB, however the client sends it.

The size is checked twice: a ``Content-Length`` over the limit is refused before a byte is
read, and the streamed body is counted as it arrives, so a chunked upload (no length) or a
lying length cannot make the process buffer more than the limit.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from api.errors import BadRequest, BodyTooLarge, UnsupportedMedia
from events import MAX_EVENT_BYTES

MAX_BODY_BYTES = MAX_EVENT_BYTES


def is_json_media_type(content_type: str | None) -> bool:
    """``application/json`` or any ``application/*+json``, parameters (charset) ignored."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The raw body, refused with 413 past ``limit`` bytes (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"the body is {declared} bytes; the limit is {limit} bytes (1 MB)")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the body is larger than {limit} bytes (1 MB)")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, limit: int = MAX_BODY_BYTES) -> tuple[bytes, Any]:
    """The raw body and its parsed JSON; 415 unless the content type is JSON, 400 if not JSON."""
    if not is_json_media_type(request.headers.get("content-type")):
        raise UnsupportedMedia("send the body as JSON with 'Content-Type: application/json'")
    raw = await read_body(request, limit)
    return raw, parse_json(raw)


def parse_json(raw: bytes) -> Any:
    """Parse JSON text, refusing it with 400 and the parser's position when it is not JSON."""
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from exc
