"""The SES stand-in, driven by the real boto3 ``sesv2`` client and Déclic's own error translation."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ReadTimeoutError

from declic.standin import Faults, StandIn, StandInClient, StandInProcess
from workers.errors import ThrottledError, TransientSendError
from workers.ses import translate


def _request(send_id: str = "s-1", recipients: int = 1) -> dict[str, Any]:
    return {
        "FromEmailAddress": "orders@shop.example.com",
        "Destination": {"ToAddresses": [f"r{i}@example.com" for i in range(recipients)]},
        "Content": {"Simple": {"Subject": {"Data": "Your order"}, "Body": {"Text": {"Data": "Thanks"}}}},
        "EmailTags": [{"Name": "flow", "Value": "purchase_confirmation"}, {"Name": "send_id", "Value": send_id}],
        "ConfigurationSetName": "declic",
    }


def _client(url: str, read_timeout: float = 5) -> Any:
    # As workers.ses configures it: the SDK's own retries off, so every answer is seen.
    return boto3.session.Session().client(
        "sesv2", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1}, read_timeout=read_timeout, connect_timeout=2),
    )


@pytest.fixture
def standin() -> Iterator[StandIn]:
    with StandIn(Faults(seed=7)) as running:
        yield running


def _control(standin: StandIn) -> StandInClient:
    assert standin.client is not None
    return standin.client


def test_send_email_is_accepted_and_recorded_with_its_tags(standin: StandIn) -> None:
    """SendEmail returns an SES-shaped MessageId and the stand-in records its tags and recipients."""
    response = _client(standin.url).send_email(**_request("s-42", recipients=3))
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert response["ResponseMetadata"]["RequestId"]
    accepted = _control(standin).accepted()
    assert [(a["message_id"], a["tags"]["send_id"], a["recipients"]) for a in accepted] == [
        (response["MessageId"], "s-42", 3)
    ]
    stats = _control(standin).stats()
    assert stats["accepted"] == 1 and stats["accepted_recipients"] == 3
    assert sum(stats["per_second"].values()) == 3


def test_get_account_reports_the_quota_like_ses(standin: StandIn) -> None:
    """GetAccount parses in boto3, with the configured sending rate and what was sent."""
    _control(standin).configure(max_rate=14)
    client = _client(standin.url)
    client.send_email(**_request())
    quota = client.get_account()["SendQuota"]
    assert quota == {"Max24HourSend": 1_000_000.0, "MaxSendRate": 14.0, "SentLast24Hours": 1.0}


def test_throttling_reaches_declic_as_a_throttled_error(standin: StandIn) -> None:
    """A throttle is a 429 TooManyRequestsException to botocore, and translate() calls it throttling."""
    _control(standin).configure(throttle=1.0)
    with pytest.raises(ClientError) as caught:
        _client(standin.url).send_email(**_request())
    assert caught.value.response["Error"]["Code"] == "TooManyRequestsException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert isinstance(translate(caught.value), ThrottledError)
    assert _control(standin).stats()["accepted"] == 0


def test_a_5xx_is_transient_and_not_throttling(standin: StandIn) -> None:
    """An injected 500 InternalFailure translates to a transient, non-throttle send error."""
    _control(standin).configure(error_5xx=1.0)
    with pytest.raises(ClientError) as caught:
        _client(standin.url).send_email(**_request())
    assert caught.value.response["Error"]["Code"] == "InternalFailure"
    error = translate(caught.value)
    assert isinstance(error, TransientSendError) and not isinstance(error, ThrottledError)


def test_timeout_is_not_accepted_but_accept_then_hang_is(standin: StandIn) -> None:
    """Both leave the client waiting; only accept-then-hang records the message (the ambiguous case)."""
    control = _control(standin)
    client = _client(standin.url, read_timeout=0.3)
    control.configure(timeout=1.0, hang_s=5)
    with pytest.raises(ReadTimeoutError) as first:
        client.send_email(**_request("s-timeout"))
    assert isinstance(translate(first.value), TransientSendError)
    control.configure(timeout=0.0, accept_hang=1.0)
    with pytest.raises(ReadTimeoutError):
        client.send_email(**_request("s-hang"))
    accepted = control.accepted()
    assert [(a["tags"]["send_id"], a["hung"]) for a in accepted] == [("s-hang", True)]
    assert control.stats()["timeouts"] == 1


def test_the_enforced_rate_refuses_recipients_beyond_the_bucket(standin: StandIn) -> None:
    """At max_rate 5 recipients/s, a burst of 12 single sends gets the bucket's 5 through — plus what
    refilled while the burst lasted, on a loaded machine — and the rest 'Maximum sending rate' 429s."""
    _control(standin).configure(max_rate=5)
    client = _client(standin.url)
    refused: list[str] = []
    started = time.monotonic()
    for n in range(12):
        try:
            client.send_email(**_request(f"s-{n}"))
        except ClientError as exc:
            refused.append(exc.response["Error"]["Message"])
            assert isinstance(translate(exc), ThrottledError)
    refilled = int((time.monotonic() - started) * 5)
    assert 5 <= 12 - len(refused) <= 5 + refilled and refused  # the bucket, never more than it refilled
    assert set(refused) == {"Maximum sending rate exceeded."}
    time.sleep(0.5)  # half a second refills 2.5 tokens
    client.send_email(**_request("s-later"))
    assert _control(standin).stats()["rate_limited"] == len(refused)


def test_fault_ratios_are_seeded_and_duplicates_are_counted_per_send_id(standin: StandIn) -> None:
    """With throttle 0.5 the same seed refuses the same requests, and a send_id accepted twice is reported."""
    control = _control(standin)
    client = _client(standin.url)

    def outcomes() -> list[bool]:
        control.configure(throttle=0.5, seed=3)
        results = []
        for _ in range(20):
            try:
                client.send_email(**_request("same"))
                results.append(True)
            except ClientError:
                results.append(False)
        return results

    first = outcomes()
    control.reset()
    assert outcomes() == first and 0 < sum(first) < 20
    assert control.stats()["duplicates"] == {"same": sum(first)}


def test_unknown_fault_settings_are_refused_by_name(standin: StandIn) -> None:
    """A typo in a fault name is a 400 naming it, not a silent no-op."""
    with pytest.raises(Exception, match="400"):
        _control(standin).configure(throtle=1.0)


def test_the_standin_runs_as_its_own_process(tmp_path: Path) -> None:
    """``python -m declic.standin`` says where it listens, answers boto3 and reports its own CPU."""
    process = StandInProcess(tmp_path / "standin.log", Faults(latency_ms=1))
    with process:
        client = _client(process.url)
        for n in range(20):
            client.send_email(**_request(f"p-{n}"))
        assert process.client is not None
        stats = process.client.stats()
    assert stats["accepted"] == 20 and stats["faults"]["latency_ms"] == 1.0
    assert stats["cpu_s"] > 0
