"""The benchmark's workload: a seeded, realistic mix of shop events built from catalogue samples.

Each event starts from the sample of a catalogue flow (so it is valid for that flow's
templates) and gets a fresh id, ``occurred_at`` of now (a password reset older than 15 minutes
would be dropped), a contact from a pool (returning customers, so contact upserts contend as in
a shop) and, for purchases, a basket of one to five line items with exact totals. Contacts live
in a zone where it is day, so marketing flows' quiet hours do not hold mail back and the
number of emails does not depend on the hour the benchmark runs.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from flows import Catalogue

# (flow whose sample is the template, share of events). Purchases dominate a shop's traffic.
MIX: tuple[tuple[str, float], ...] = (
    ("purchase_confirmation", 0.35),
    ("order_confirmation", 0.10),
    ("shipping_confirmation", 0.15),
    ("welcome", 0.12),  # a signup: the welcome email and onboarding's first step
    ("password_reset", 0.15),
    ("invoice", 0.08),  # a PDF attachment: a raw MIME message
    ("account_updated", 0.05),
)

_PRODUCTS = (
    ("BOU-FIG-220", 'Scented candle "Figuier", 220 g', "34.00"),
    ("LIN-SER-ARG-4", "Washed linen napkins, set of 4 — Clay", "39.00"),
    ("CER-TAS-SAB", 'Stoneware mug "Sable", 30 cl', "18.50"),
    ("LIN-NAP-LIN-160", "Nappe en lin lavé « Naturel », 160 × 250 cm", "89.00"),
    ("BOU-AMB-180", "Bougie parfumée « Ambre & Cèdre », 180 g", "19.90"),
    ("CER-ASS-GRS", "Assiette plate en grès, 27 cm", "24.00"),
    ("LIN-TAB-ROU", "Tablier en lin « Rouille »", "45.00"),
)


@dataclass(frozen=True)
class Workload:
    """Builds events on demand (so ``occurred_at`` is fresh when each one is published)."""

    catalogue: Catalogue
    seed: int = 1
    contacts: int = 2000
    zone: str = "UTC"

    def events(self, count: int, run: str) -> list[dict[str, Any]]:
        """``count`` events with ids ``bench-<run>-<n>``; the same seed gives the same mix."""
        rng = random.Random(f"{self.seed}-{run}")  # noqa: S311 - a repeatable workload, not a secret
        flows, weights = zip(*MIX, strict=True)
        now = datetime.now(UTC).isoformat()
        return [self._event(rng, rng.choices(flows, weights)[0], f"bench-{run}-{n}", now) for n in range(count)]

    def _event(self, rng: random.Random, flow: str, event_id: str, now: str) -> dict[str, Any]:
        event = copy.deepcopy(self.catalogue[flow].sample)
        contact_n = rng.randrange(self.contacts)
        event.update(id=event_id, occurred_at=now)
        event["contact"] = {
            **event["contact"], "id": f"bench-c{contact_n}", "email": f"customer{contact_n}@example.com",
            "timezone": self.zone, "locale": rng.choice(("en", "fr-FR", "en-GB", "fr")), "opt_in": True,
        }
        if event["type"] == "purchase":
            data = {k: v for k, v in event["data"].items() if k != "discount"}  # the basket has none
            event["data"] = {**data, **_basket(rng), "order_id": f"MLM-{event_id}"}
        return event


def _basket(rng: random.Random) -> dict[str, Any]:
    """One to five distinct line items with a subtotal equal to their sum, as the envelope checks."""
    items: list[dict[str, Any]] = []
    for sku, name, price in rng.sample(_PRODUCTS, rng.randint(1, 5)):
        items.append({"sku": sku, "name": name, "quantity": rng.randint(1, 3), "unit_price": price})
    subtotal = sum((Decimal(i["unit_price"]) * i["quantity"] for i in items), Decimal("0.00"))
    shipping = Decimal("0.00") if subtotal >= 100 else Decimal("4.90")
    tax = (subtotal / 6).quantize(Decimal("0.01"))  # 20 % VAT included in the prices
    return {"items": items, "subtotal": str(subtotal), "shipping": str(shipping), "tax": str(tax),
            "total": str(subtotal + shipping)}
