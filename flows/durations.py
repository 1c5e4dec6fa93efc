"""Durations as flow definitions write them: ``90s``, ``15m``, ``2h``, ``7d``, ``1w``, ``1d12h``."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_PART = re.compile(r"(\d+)([smhdw])")


def parse_duration(text: str) -> timedelta:
    """Parse ``7d`` or ``1h30m``; raise ValueError saying the accepted form otherwise."""
    compact = text.strip().replace(" ", "")
    if not compact or _PART.sub("", compact):
        raise ValueError(f"{text!r} is not a duration; write e.g. '90s', '15m', '2h', '7d', '1d12h'")
    total = timedelta(0)
    for amount, unit in _PART.findall(compact):
        total += timedelta(**{_UNITS[unit]: int(amount)})
    return total
