"""SES misbehaving: throttling and server errors, and timeouts after it accepted the message.

Each runs on Redis and, smaller, on RabbitMQ: a send retried after a throttle or an ambiguous
answer is a Celery retry with a countdown, which the two brokers carry differently.
"""

from __future__ import annotations

import pytest

from declic.standin import StandInClient
from flows import Catalogue
from tests.faults.harness import BROKERS, Result, Run, assert_promises, seeded_events, settle
from tests.faults.report import Results
from workers.app import INGEST_QUEUES, SEND_QUEUES

pytestmark = pytest.mark.faults


def _start(run: Run) -> None:
    run.worker("ingest", list(INGEST_QUEUES))
    run.worker("send", list(SEND_QUEUES), concurrency=16)
    run.dispatcher()
    run.wait_ready()


@pytest.mark.parametrize("broker_kind", BROKERS, indirect=True)
def test_ses_throttling_and_server_errors(run: Run, catalogue: Catalogue, standin_client: StandInClient,
                                          results: Results, broker_kind: str) -> None:
    """With 20% of calls throttled and 5% failing with a 5xx, every email still goes out exactly once."""
    standin_client.configure(throttle=0.20, error_5xx=0.05)
    _start(run)
    run.publish(seeded_events(catalogue, 250 if broker_kind == "redis" else 150, "throttle"))
    result = settle(run, Result("SES 20% throttled, 5% 5xx"), timeout=90)
    stats = standin_client.stats()
    result.notes.update(throttled=stats["throttled"], errors_5xx=stats["errors_5xx"], requests=stats["requests"])
    results.add(result)
    assert stats["throttled"] > 0 and stats["errors_5xx"] > 0
    assert_promises(result)


@pytest.mark.parametrize("broker_kind", BROKERS, indirect=True)
def test_ses_timeout_after_accepting(run: Run, catalogue: Catalogue, standin_client: StandInClient,
                                     results: Results, broker_kind: str) -> None:
    """When SES accepts a message but the answer never comes, the send is resolved without a second message."""
    standin_client.configure(accept_hang=0.03, timeout=0.02)
    _start(run)
    run.publish(seeded_events(catalogue, 200 if broker_kind == "redis" else 150, "hang"))
    result = settle(run, Result("SES timeout after accepting (3%)"), timeout=90)
    stats = standin_client.stats()
    result.notes.update(accepted_then_hung=stats["hung"], timeouts_not_accepted=stats["timeouts"])
    results.add(result)
    assert stats["hung"] > 0 and stats["timeouts"] > 0
    assert_promises(result)
