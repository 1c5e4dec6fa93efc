"""Consent and suppression: whether a send may go to its contact at all.

Critical and transactional mail ignores marketing opt-in (a receipt must arrive) but never
goes to a suppressed address (hard bounce, complaint). Marketing needs opt-in and no
unsubscribe. The answer is a skip reason, or None to go ahead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flows.model import Category


def consent_skip(category: Category | str, contact: Mapping[str, Any]) -> str | None:
    """The reason this contact must not get mail of this category, or None."""
    if contact.get("suppressed"):
        return "suppressed"
    if category == Category.MARKETING:  # a StrEnum: equal to its plain value, no lookup
        if contact.get("unsubscribed_at") is not None:
            return "unsubscribed"
        if not contact.get("opt_in"):
            return "no_consent"
    return None
