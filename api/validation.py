"""``parse_event`` plus what the API must also refuse: text Postgres cannot store.

Postgres ``text`` and ``jsonb`` reject the NUL character (U+0000). An event carrying one
would pass the envelope's checks, be accepted, and then fail at ingest for ever — so it is
refused here with a 422 naming the field, like any other invalid field.
"""

from __future__ import annotations

from typing import Any

from events import Event, EventInvalid, parse_event


def nul_path(value: Any, path: str = "") -> str | None:
    """The dotted path of the first string (or key) holding U+0000, or None."""
    if isinstance(value, str):
        return path or "(event)" if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if "\x00" in str(key):
                return where
            found = nul_path(item, where)
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = nul_path(item, f"{path}.{index}" if path else str(index))
            if found:
                return found
    return None


def parse_storable_event(raw: Any) -> Event:
    """Validate an envelope as :func:`events.parse_event` does, and refuse NUL characters."""
    where = nul_path(raw)
    if where is not None:
        raise EventInvalid([{"field": where, "message": "contains a NUL character (U+0000), which cannot be stored"}])
    return parse_event(raw)
