"""Hostile input at the envelope and flow boundaries: a clear refusal, never a crash."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from events import EventInvalid, parse_event
from flows.conditions import ConditionError, evaluate

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
ENVELOPE_KEYS = st.sampled_from(["id", "type", "occurred_at", "contact", "data", "extra"])
TYPES = st.sampled_from(["purchase", "order_shipped", "invoice_issued", "password_reset", "custom_thing"])


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(ENVELOPE_KEYS, JSON, max_size=6), TYPES)
def test_fuzzed_envelopes_are_accepted_or_refused_with_fields(raw: dict[str, Any], kind: str) -> None:
    """Any JSON object is either a valid event or an EventInvalid naming at least one field."""
    raw = {**raw, "type": raw.get("type", kind)}
    try:
        parse_event(raw)
    except EventInvalid as exc:
        assert exc.errors and all(e["field"] and e["message"] for e in exc.errors)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_fuzzed_bytes_never_crash(raw: bytes) -> None:
    """Arbitrary bytes (invalid UTF-8 included) give EventInvalid, never another exception."""
    with contextlib.suppress(EventInvalid):
        parse_event(raw)


def test_deeply_nested_json_is_refused() -> None:
    """JSON nested a hundred thousand levels deep is refused instead of blowing the stack."""
    deep = "[" * 100_000 + "]" * 100_000
    raw = '{"id": "x", "type": "custom", "occurred_at": "2026-11-27T10:00:00Z",' \
          ' "contact": {"id": "c", "email": "a@example.org"}, "data": {"deep": ' + deep + "}}"
    try:
        parse_event(raw)
    except EventInvalid as exc:
        assert "nest" in str(exc) or "JSON" in str(exc)
    else:
        raise AssertionError("a 100,000-deep document must not be accepted")


def test_nesting_within_reason_is_fine() -> None:
    """Ordinary nesting (a few dozen levels) in custom data is accepted."""
    nested: Any = "leaf"
    for _ in range(30):
        nested = {"n": nested}
    raw = {"id": "x", "type": "custom", "occurred_at": "2026-11-27T10:00:00Z",
           "contact": {"id": "c", "email": "a@example.org"}, "data": nested}
    assert parse_event(json.dumps(raw)).data == nested


ESCAPES = [
    "''.__class__.__mro__[1].__subclasses__()",
    "data.__class__.__init__.__globals__",
    "cycler.__init__.__globals__.os.popen('id').read()",
    "lipsum.__globals__['os'].system('id')",
    "data.update({'x': 1})",
    "range(10**12)|list|length",
]


def test_condition_sandbox_escapes_are_refused() -> None:
    """Known Jinja2 sandbox escapes in a flow condition raise ConditionError and run nothing."""
    for source in ESCAPES:
        try:
            evaluate(source, {"data": {}, "contact": {}, "event": {}})
        except ConditionError:
            continue
        raise AssertionError(f"{source!r} was evaluated")


def test_nul_characters_are_refused_with_their_field() -> None:
    """A NUL character (which Postgres cannot store) is refused at the door, naming the field."""
    raw = {"id": "x", "type": "custom", "occurred_at": "2026-11-27T10:00:00Z",
           "contact": {"id": "c", "email": "a@example.org"}, "data": {"items": [{"name": "bad\x00name"}]}}
    try:
        parse_event(raw)
    except EventInvalid as exc:
        assert exc.errors == [{"field": "data.items.0.name", "message": "contains a NUL character"}]
    else:
        raise AssertionError("a NUL character must be refused")
