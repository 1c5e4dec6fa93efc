"""Flow loading, conditions, variants and send planning."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from declic.settings import REPO_ROOT
from events import parse_event
from flows import CatalogueInvalid, load_catalogue, plan_sends
from flows.conditions import ConditionError, evaluate
from flows.durations import parse_duration
from flows.loader import Catalogue
from flows.model import Flow
from flows.planning import choose_variant

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def flow_dict(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "thanks",
        "category": "transactional",
        "trigger": {"event": "purchase"},
        "sender": {"email": "orders@shop.example.com", "name": "Shop"},
        "locales": ["en", "fr"],
        "sample": {
            "id": "s-1",
            "type": "purchase",
            "occurred_at": "2026-11-27T08:59:00+00:00",
            "contact": {"id": "c-1", "email": "a@example.org"},
            "data": {"order_id": "1", "currency": "EUR", "total": "150",
                     "items": [{"sku": "a", "name": "A", "quantity": 1, "unit_price": "150"}]},
        },
    }
    base.update(overrides)
    return base


def write_flow(directory: Path, data: dict[str, Any], name: str | None = None) -> Path:
    path = directory / f"{name or data['name']}.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


def catalogue_of(*flows: dict[str, Any]) -> Catalogue:
    catalogue = Catalogue()
    for data in flows:
        catalogue.add(Flow.model_validate(data))
    return catalogue


def test_shipped_catalogue_loads() -> None:
    """Every flow shipped in flows/catalogue loads without a problem."""
    catalogue = load_catalogue(REPO_ROOT / "flows" / "catalogue")
    assert {"password_reset", "order_confirmation", "invoice", "welcome"} <= set(catalogue.flows)


def test_problems_name_file_and_field(tmp_path: Path) -> None:
    """A broken flow is reported with its file name and the dotted field path."""
    write_flow(tmp_path, flow_dict(category="urgent"))
    write_flow(tmp_path, flow_dict(name="other", freshness="soon"))
    with pytest.raises(CatalogueInvalid) as exc:
        load_catalogue(tmp_path)
    found = {(p.file, p.field) for p in exc.value.problems}
    assert ("thanks.yaml", "category") in found
    assert ("other.yaml", "freshness") in found


def test_name_must_match_file_and_sample_must_be_valid(tmp_path: Path) -> None:
    """The flow name is its file stem, and its sample event must itself be valid."""
    sample = flow_dict()["sample"]
    sample["data"]["items"] = []
    write_flow(tmp_path, flow_dict(sample=sample), name="renamed")
    with pytest.raises(CatalogueInvalid) as exc:
        load_catalogue(tmp_path)
    fields = {p.field for p in exc.value.problems}
    assert "name" in fields
    assert "sample.data.items" in fields


def test_bad_condition_and_yaml_are_reported(tmp_path: Path) -> None:
    """A condition that does not compile and a file that is not YAML are both named."""
    write_flow(tmp_path, flow_dict(trigger={"event": "purchase", "condition": "data.total >"}))
    (tmp_path / "broken.yaml").write_text("name: [unclosed")
    with pytest.raises(CatalogueInvalid) as exc:
        load_catalogue(tmp_path)
    found = {(p.file, p.field) for p in exc.value.problems}
    assert ("thanks.yaml", "trigger.condition") in found
    assert ("broken.yaml", "(file)") in found


def test_conditions_are_sandboxed() -> None:
    """Conditions read plain values but cannot reach Python internals."""
    values = {"data": {"total": 150}, "contact": {"purchases": 5}}
    assert evaluate("data.total > 100 and contact.purchases >= 5", values)
    assert not evaluate("data.total > 200", values)
    with pytest.raises(ConditionError):
        evaluate("data.__class__.__mro__[1].__subclasses__()", values)
    with pytest.raises(ConditionError):
        evaluate("data.clear() or true", values)  # mutation is refused by the immutable sandbox
    with pytest.raises(ConditionError):
        evaluate("missing.field > 1", values)


def test_durations() -> None:
    """Flow durations read as written, and a wrong one says the accepted form."""
    assert parse_duration("1d12h") == timedelta(days=1, hours=12)
    assert parse_duration("15m") == timedelta(minutes=15)
    with pytest.raises(ValueError, match="'90s'"):
        parse_duration("soon")


def test_variant_is_deterministic_and_spread() -> None:
    """A contact always gets the same variant; many contacts spread across variants."""
    flow = Flow.model_validate(flow_dict(variants=[{"name": "a"}, {"name": "b"}]))
    assert choose_variant(flow, "c-1") == choose_variant(flow, "c-1")
    counts: dict[str, int] = {}
    for i in range(2000):
        variant = choose_variant(flow, f"c-{i}")
        counts[variant] = counts.get(variant, 0) + 1
    assert set(counts) == {"a", "b"}
    assert 800 < counts["a"] < 1200


def test_planning_matches_conditions_and_keys() -> None:
    """Only flows whose trigger and condition match plan a send, keyed by event, flow and step."""
    catalogue = catalogue_of(
        flow_dict(),
        flow_dict(name="big_spender", trigger={"event": "purchase", "condition": "data.total|float > 500"}),
        flow_dict(name="welcome", trigger={"event": "signup"},
                  sample={**flow_dict()["sample"], "type": "signup", "data": {}}),
    )
    event = parse_event(flow_dict()["sample"])
    planned = plan_sends(catalogue, event, {}, NOW)
    assert [(p.flow, p.step, p.state, p.queue) for p in planned] == [
        ("thanks", "main", "pending", "send.transactional")
    ]
    assert planned[0].send_key == "s-1:thanks:main"


def test_freshness_skips_stale_events_and_steps_are_scheduled() -> None:
    """An event older than the flow's freshness is recorded as skipped: stale; later steps are scheduled."""
    fresh = flow_dict(name="reset", category="critical", freshness="15m")
    series = flow_dict(name="series", steps=[{"name": "now"}, {"name": "later", "after": "2d"}])
    catalogue = catalogue_of(fresh, series)
    event = parse_event(flow_dict()["sample"])
    planned = {p.flow + "/" + p.step: p for p in plan_sends(catalogue, event, {}, NOW + timedelta(hours=1))}
    assert planned["reset/main"].state == "skipped"
    assert planned["reset/main"].reason == "stale"
    assert planned["series/now"].state == "pending"
    assert planned["series/later"].state == "scheduled"
    assert planned["series/later"].due_at == NOW + timedelta(hours=1, days=2)
