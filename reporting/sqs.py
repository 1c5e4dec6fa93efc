"""Draining the SQS queue subscribed to the configuration set's SNS topic.

Long polling (``WaitTimeSeconds``) so an idle queue costs one request per wait, batches of ten
(SQS's maximum per receive), and a message is deleted only after the transaction holding its
rows has committed: a crash in between means a redelivery, which the SNS-id and event-key
dedupe make harmless. A database error leaves the batch in the queue for its visibility
timeout; it is never deleted unprocessed.

The SQS path does not verify SNS signatures: only principals allowed by the queue's policy
(the SNS topic) can write to it. The HTTPS endpoint, open to the Internet, does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from psycopg_pool import ConnectionPool

from reporting.ingest import IngestResult, Received, ingest

log = structlog.get_logger(__name__)

MAX_BATCH = 10  # SQS ReceiveMessage and DeleteMessageBatch take at most ten


class SqsClient(Protocol):
    """The two calls of boto3's SQS client the drain uses."""

    def receive_message(self, **kwargs: Any) -> dict[str, Any]: ...

    def delete_message_batch(self, **kwargs: Any) -> dict[str, Any]: ...


@dataclass
class DrainResult:
    batches: int = 0
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    suppressed: int = 0
    deleted: int = 0

    def add(self, result: IngestResult, deleted: int) -> None:
        self.batches += 1
        self.received += result.received
        self.stored += result.stored
        self.duplicates += result.duplicates
        self.dead_letters += result.dead_letters
        self.suppressed += result.suppressed
        self.deleted += deleted


def sqs_client(timeout_s: float = 30.0) -> SqsClient:
    """boto3's SQS client from the standard AWS variables, with timeouts longer than the poll."""
    import boto3  # type: ignore[import-untyped,unused-ignore]
    from botocore.config import Config  # type: ignore[import-untyped,unused-ignore]

    client: SqsClient = boto3.client(
        "sqs", config=Config(connect_timeout=5, read_timeout=timeout_s, retries={"max_attempts": 3})
    )
    return client


def drain(
    pool: ConnectionPool[Any],
    client: SqsClient,
    queue_url: str,
    *,
    wait_s: int = 2,
    max_messages: int = 10_000,
    max_seconds: float = 50.0,
    groups: int = 10,
) -> DrainResult:
    """Receive, store and delete until the queue is empty or a limit is reached.

    ``groups`` receives are written in one transaction (up to 100 notifications per COPY): the
    deletes still wait for that commit.
    """
    total = DrainResult()
    deadline = time.monotonic() + max_seconds
    while total.received < max_messages and time.monotonic() < deadline:
        messages: list[dict[str, Any]] = []
        for _ in range(groups):
            response = client.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=MAX_BATCH,
                # Long poll only while the group is empty: once something came, take what is there.
                WaitTimeSeconds=0 if messages else wait_s,
            )
            batch = response.get("Messages", [])
            messages.extend(batch)
            if len(batch) < MAX_BATCH:
                break
        if not messages:
            break
        result = ingest(pool, [Received(m["Body"], m.get("MessageId")) for m in messages], "sqs")
        total.add(result, _delete(client, queue_url, messages))
    log.info("sqs_drained", batches=total.batches, received=total.received, stored=total.stored,
             duplicates=total.duplicates, dead_letters=total.dead_letters, deleted=total.deleted)
    return total


def _delete(client: SqsClient, queue_url: str, messages: list[dict[str, Any]]) -> int:
    deleted = 0
    for start in range(0, len(messages), MAX_BATCH):
        chunk = messages[start:start + MAX_BATCH]
        response = client.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)],
        )
        deleted += len(response.get("Successful", []))
        for failure in response.get("Failed", []):
            # Stored already; it will come back and be recognised as a duplicate.
            log.warning("sqs_delete_failed", code=failure.get("Code"), sender_fault=failure.get("SenderFault"))
    return deleted
