"""A property-based fuzz of the API from its own OpenAPI description (schemathesis): no answer is a 5xx."""

from __future__ import annotations

import time
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.serving import ApiProcess
from tests.e2e.test_api_http import MakeKey, api, api_env, key_store, make_key  # noqa: F401 - fixtures

pytestmark = pytest.mark.e2e

EXAMPLES_PER_OPERATION = 80


def test_no_generated_request_gets_a_server_error(api: ApiProcess, make_key: MakeKey) -> None:  # noqa: F811
    """Requests generated from /openapi.json (with a good or a bad key) never get a 5xx back."""
    key = make_key("events:write", "integrations", rate=10_000_000)
    schema = schemathesis.openapi.from_url(api.url + "/openapi.json")
    started = time.monotonic()
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 7
    for operation in operations:
        if operation.path == "/healthz":
            continue  # its 503 is the documented answer when a dependency is down, not a crash

        @given(case=operation.as_strategy(), bearer=st.sampled_from([key, key, "dk_wrong"]))
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case: schemathesis.Case[Any], bearer: str) -> None:
            response = case.call(base_url=api.url, headers={"Authorization": f"Bearer {bearer}"}, timeout=30)
            # Every dependency is up, so even a 503 would be a bug here.
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.path} → {response.status_code}: {response.text[:300]}")
            assert response.status_code < 500

        check()
    assert not failures, failures
    assert time.monotonic() - started < 120
