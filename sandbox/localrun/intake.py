"""The intake side of a local run: the SQS event source mappings and their dead-letter queues, read through the API.

Delivery itself is the harness's one SQS poller (`sandbox.event_sources`), run with
``retry="immediate"``: after each upload wave a flush delivers what the queue holds in batches of
``BatchSize`` and retries failed records at once, until the queue's redrive policy moves them to the
dead-letter queue, so every image is accounted for before the run ends.
"""

from __future__ import annotations

import json
from typing import Any

from sandbox.cloud_api import CloudApi
from sandbox.event_sources import PolledBatch


def sqs_mappings(cloud: CloudApi) -> list[dict[str, Any]]:
    """The deployed SQS event source mappings (the intake queue's, on a LabelLoop stack)."""
    lam = cloud.client("lambda")
    return [
        mapping
        for page in lam.get_paginator("list_event_source_mappings").paginate()
        for mapping in page["EventSourceMappings"]
        if str(mapping.get("EventSourceArn", "")).startswith("arn:aws:sqs:")
    ]


def _queue_url(cloud: CloudApi, arn: str) -> str:
    return str(cloud.client("sqs").get_queue_url(QueueName=arn.rsplit(":", 1)[-1])["QueueUrl"])


def delivery_problems(batches: list[PolledBatch], warnings: list[str]) -> list[str]:
    """What went wrong delivering upload events to the batch starter, one line each."""
    problems: list[str] = []
    for batch in batches:
        if batch.error:
            problems.append(f"batch starter failed: {batch.error}")
        elif batch.failed_ids:
            problems.append(f"batch starter reported {len(batch.failed_ids)} failed record(s); retried")
        elif batch.ignored_failure_ids:
            problems.append(
                f"the batch starter reported {len(batch.ignored_failure_ids)} failed record(s) but its event source "
                "mapping lacks ReportBatchItemFailures, so Lambda deletes them as processed"
            )
    return problems + list(warnings)


def dead_letters(cloud: CloudApi, mappings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages in the mapped queues' dead-letter queues (received once each, with a visibility
    timeout that outlasts the run, so none is counted twice)."""
    sqs = cloud.client("sqs")
    found: list[dict[str, Any]] = []
    for mapping in mappings:
        url = _queue_url(cloud, mapping["EventSourceArn"])
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"]).get("Attributes", {})
        if "RedrivePolicy" not in attrs:
            continue
        dlq_url = _queue_url(cloud, json.loads(attrs["RedrivePolicy"])["deadLetterTargetArn"])
        while True:
            got = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=600).get(
                "Messages", []
            )
            if not got:
                break
            found += got
    return found
