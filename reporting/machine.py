"""Telling machine opens from human ones, from the open's user agent and IP address alone.

Pure and cheap: called once per open at ingest. The third signal — an open within seconds of
its delivery — needs the delivery, which may arrive later (SNS does not keep order), so the
aggregation applies it in SQL (see ``reporting/sql/flow_daily.sql``).

Why each rule:

- **Apple Mail Privacy Protection** prefetches every image of every message through Apple's
  proxies whether or not the person reads it; the fetch carries the bare user agent
  ``Mozilla/5.0`` and comes from Apple's 17.0.0.0/8 network.
  https://support.apple.com/guide/mail/use-mail-privacy-protection-mlhl03be2866/mac
- **Google's image proxy** (``GoogleImageProxy``, via ``ggpht.com``) fetches and caches images for
  Gmail; its fetch time and count do not say that a person looked. Flagged, with its own reason,
  so an analyst who trusts it can count it back in.
- **Yahoo's proxy** behaves like Google's.
- **Security scanners** (Barracuda, Mimecast, Proofpoint, Microsoft Defender "Safe Links" and
  scripts) open and click everything on arrival.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache

# Reasons, stored in ``reporting.email_events.machine_reason``.
APPLE_MPP = "apple_mpp"
GOOGLE_PROXY = "google_proxy"
YAHOO_PROXY = "yahoo_proxy"
SCANNER = "scanner"
TOO_FAST = "too_fast"  # applied by the aggregation, never by this module

_APPLE_NETWORKS = (ipaddress.ip_network("17.0.0.0/8"),)
# Address blocks Google's image proxy is seen fetching from (part of AS15169).
_GOOGLE_NETWORKS = tuple(
    ipaddress.ip_network(n) for n in ("66.249.80.0/20", "66.102.0.0/20", "74.125.0.0/16", "64.233.160.0/19")
)
_SCANNER_AGENTS = re.compile(
    r"barracuda|mimecast|proofpoint|safelinks|microsoft office protection|forcepoint|"
    r"python-requests|curl/|wget/|go-http-client|headlesschrome|\bbot\b|crawler|spider",
    re.IGNORECASE,
)


@lru_cache(maxsize=65536)
def _address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(ip.strip())
    except ValueError:
        return None


def machine_reason(user_agent: str | None, ip_address: str | None) -> str | None:
    """Why this open (or click) was made by a machine, or ``None`` when it looks human."""
    agent = (user_agent or "").strip()
    address = _address(ip_address) if ip_address else None
    if "GoogleImageProxy" in agent or "ggpht.com" in agent:
        return GOOGLE_PROXY
    if "YahooMailProxy" in agent:
        return YAHOO_PROXY
    if _SCANNER_AGENTS.search(agent):
        return SCANNER
    if address is not None and any(address in net for net in _APPLE_NETWORKS):
        return APPLE_MPP
    # MPP's generic agent from a relay outside 17/8 (Apple also fetches through partners' CDNs).
    if agent == "Mozilla/5.0":
        return APPLE_MPP
    if address is not None and any(address in net for net in _GOOGLE_NETWORKS):
        return GOOGLE_PROXY
    return None
