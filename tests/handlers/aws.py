"""The moto world handler tests start from: one `mock_aws` context that forgets the handlers' cached
clients and settings, and builders for the data bucket, queues and state machines."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import boto3
import pytest
from moto import mock_aws

from labelloop_core.contract import DEFAULT_WORK_PREFIX, batch_prefix

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
BUCKET = "data-bucket"
DATASET, BATCH_ID = "street", "b1"
#: The batch folder most handler tests work in (``work/batches/street/b1/``).
PREFIX = batch_prefix(DEFAULT_WORK_PREFIX, DATASET, BATCH_ID)
#: A state machine that ends at once (for tests that only start executions).
PASS_DEFINITION = {"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}}


def forget(*handlers: ModuleType) -> None:
    """Drop the cached AWS clients and the given handler modules' cached settings."""
    from adapters.aws import reset_clients

    reset_clients()
    for module in handlers:
        module.settings.cache_clear()


@contextmanager
def moto_world(*handlers: ModuleType, config: Any = None) -> Iterator[None]:
    """`mock_aws` (with ``config``) in which ``handlers`` start without cached clients or settings."""
    with mock_aws(config=config):
        forget(*handlers)
        try:
            yield
        finally:
            forget(*handlers)


def data_bucket(name: str = BUCKET, *, versioned: bool = False) -> Any:
    """Create the bucket; returns an S3 client."""
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=name)
    if versioned:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return s3


def role(name: str) -> str:
    """An IAM role's ARN (moto checks that roles exist, not what they allow)."""
    iam = boto3.client("iam", region_name=REGION)
    return str(iam.create_role(RoleName=name, AssumeRolePolicyDocument="{}")["Role"]["Arn"])


def state_machine(
    definition: Mapping[str, Any] = PASS_DEFINITION, *, name: str = "Workflow", role_name: str = "sfn", **extra: Any
) -> tuple[Any, str]:
    """A state machine; returns the Step Functions client and the machine's ARN."""
    sfn = boto3.client("stepfunctions", region_name=REGION)
    arn = sfn.create_state_machine(name=name, definition=json.dumps(definition), roleArn=role(role_name), **extra)[
        "stateMachineArn"
    ]
    return sfn, str(arn)


def queue(name: str) -> tuple[Any, str]:
    """An SQS queue; returns the SQS client and the queue URL."""
    sqs = boto3.client("sqs", region_name=REGION)
    return sqs, str(sqs.create_queue(QueueName=name)["QueueUrl"])


def set_env(monkeypatch: pytest.MonkeyPatch, values: Mapping[str, str], *, unset: tuple[str, ...] = ()) -> None:
    """Set a handler's environment (and clear ``unset``) for one test."""
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    for name in unset:
        monkeypatch.delenv(name, raising=False)
