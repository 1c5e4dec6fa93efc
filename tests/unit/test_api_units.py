"""Pure parts of the API: batch expansion, rate-limit answers, keys, media types."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from api.batch import MAX_BATCH, expand_batch
from api.body import is_json_media_type
from api.errors import Unprocessable
from api.keys import KeyError_, check_scopes, hash_key, new_key, same_hash
from api.ratelimit import decision_from_reply
from declic.settings import REPO_ROOT
from flows import load_catalogue

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def sample() -> dict[str, Any]:
    return dict(load_catalogue(REPO_ROOT / "flows" / "catalogue")["welcome"].sample)


def test_batch_of_envelopes_validates_each_item_alone(sample: dict[str, Any]) -> None:
    """One bad envelope in a batch is reported at its index with its field; the others stay valid."""
    bad = {**sample, "id": "b", "contact": {**sample["contact"], "email": "not-an-address"}}
    items = expand_batch({"events": [sample, bad]}, NOW)
    assert items[0].event is not None and items[0].errors == []
    assert items[1].event is None and items[1].errors[0]["field"] == "contact.email"


def test_batch_trigger_gives_each_contact_its_own_data(sample: dict[str, Any]) -> None:
    """A type for many contacts merges shared data under each item's, ids default to batch_id:contact."""
    body = {"type": "signup", "batch_id": "b1", "data": {"source": "import"},
            "items": [{"contact": {"id": "c1", "email": "a@example.com"}, "data": {"confirm_url": "https://x.example/1"}},
                      {"id": "own", "contact": {"id": "c2", "email": "b@example.com"}}]}
    first, second = expand_batch(body, NOW)
    assert first.event is not None and first.event.id == "b1:c1"
    assert first.event.data == {"source": "import", "confirm_url": "https://x.example/1"}
    assert first.event.occurred_at == NOW
    assert second.event is not None and second.event.id == "own" and second.event.data == {"source": "import"}


@pytest.mark.parametrize(("body", "field"), [
    ([], "(batch)"), ({}, "(batch)"), ({"events": []}, "events"), ({"events": {}}, "events"),
    ({"events": [{}] * (MAX_BATCH + 1)}, "events"), ({"events": [], "x": 1}, "x"),
    ({"items": [{}]}, "type"), ({"type": "signup", "items": [{}], "data": []}, "data"),
])
def test_batch_shape_errors_are_422_naming_the_field(body: Any, field: str) -> None:
    """A batch that is not a list of up to 1,000 items is refused as a whole, naming the field."""
    with pytest.raises(Unprocessable) as caught:
        expand_batch(body, NOW)
    assert caught.value.errors[0]["field"] == field


def test_rate_limit_headers_follow_the_draft() -> None:
    """An allowed request gets RateLimit-* headers; a refused one adds Retry-After of at least 1 s."""
    ok = decision_from_reply([1, 7, 0, 12_001], 10)
    assert ok.headers() == {"RateLimit-Limit": "10", "RateLimit-Remaining": "7", "RateLimit-Reset": "13",
                            "RateLimit-Policy": "10;w=60"}
    refused = decision_from_reply([0, 0, 150, 60_000], 10)
    assert not refused.allowed and refused.headers()["Retry-After"] == "1"


def test_keys_are_random_and_only_their_hash_is_compared() -> None:
    """Keys carry 256 random bits after their prefix; hashes compare equal only for the same key."""
    a, b = new_key(), new_key()
    assert a.startswith("dk_") and len(a) == 46 and a != b
    assert len(hash_key(a)) == 64 and same_hash(hash_key(a), hash_key(a)) and not same_hash(hash_key(a), hash_key(b))


def test_scopes_are_checked() -> None:
    """Unknown or missing scopes are refused; repeats collapse."""
    assert check_scopes(["events:write", "events:write"]) == ("events:write",)
    with pytest.raises(KeyError_):
        check_scopes([])
    with pytest.raises(KeyError_, match="admin"):
        check_scopes(["admin"])


@pytest.mark.parametrize(("value", "ok"), [
    ("application/json", True), ("application/json; charset=utf-8", True), ("Application/JSON", True),
    ("application/cloudevents+json", True), ("text/plain", False), ("application/x-www-form-urlencoded", False),
    (None, False), ("", False),
])
def test_json_media_types(value: str | None, ok: bool) -> None:
    """JSON and +json media types are accepted whatever their parameters; others are not."""
    assert is_json_media_type(value) is ok


def test_nul_characters_are_refused_naming_the_field(sample: dict[str, Any]) -> None:
    """A NUL anywhere (value or key) is an invalid field, since Postgres cannot store it."""
    from events import EventInvalid, parse_event

    parse_event(sample)
    with pytest.raises(EventInvalid) as caught:
        parse_event({**sample, "data": {"a": [{"b": "x\x00"}]}})
    assert caught.value.errors[0]["field"] == "data.a.0.b"
    with pytest.raises(EventInvalid) as caught:
        parse_event({**sample, "data": {"k\x00": 1}})
    assert "NUL" in caught.value.errors[0]["message"]
    with pytest.raises(EventInvalid) as caught:
        parse_event({**sample, "contact": {**sample["contact"], "id": "\x00"}})
    assert caught.value.errors[0]["field"] == "contact.id"
