"""JSON to bytes: orjson for speed, the standard library for what orjson refuses.

orjson is several times faster on large envelopes but refuses integers beyond 64 bits, which
JSON (and Postgres's jsonb) allow and producers do send; those take the slower path rather
than failing a publication.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def json_bytes(value: Any) -> bytes:
    """Compact UTF-8 JSON of ``value``."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
