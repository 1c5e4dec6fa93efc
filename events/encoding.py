"""JSON to bytes: orjson for speed, the standard library for what orjson refuses.

orjson is several times faster on large envelopes but refuses integers beyond 64 bits, which
JSON (and Postgres's jsonb) allow and producers do send; those take the slower path rather
than failing a publication.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson


def json_bytes(value: Any, default: Callable[[Any], Any] | None = None) -> bytes:
    """Compact UTF-8 JSON of ``value``; ``default`` turns what JSON has no type for into what it has."""
    try:
        return orjson.dumps(value, default=default)
    except orjson.JSONEncodeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=default).encode()
