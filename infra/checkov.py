"""checkov findings LabelLoop answers with a reason instead of a change, written into the template.

checkov reads ``Metadata: checkov: skip: [{id, comment}]`` on a resource. Every such skip comes from
the one table below through the `CheckovSuppressions` aspect: per rule, the resource type it
applies to and the reason — a fixed text, or one built from the resource itself (how a function
is invoked decides why it needs no DLQ). A rule whose finding is fixed for a resource (e.g. a log
group that already has a KMS key) is not skipped there. What checkov reports that is neither fixed
nor listed here fails ``tests/infra/test_checkov.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jsii
from aws_cdk import Aspects, CfnResource, IAspect, Stack
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import IConstruct

from infra.constructs.storage import Storage

Reason = Callable[[IConstruct], str | None]


@dataclass(frozen=True)
class Suppression:
    """One checkov rule LabelLoop does not fix, where it applies, and why (None: nothing to skip)."""

    rule: str
    resource_type: type
    reason: Reason


def _always(text: str) -> Reason:
    return lambda _node: text


def _function(node: IConstruct) -> lambda_.Function | None:
    scope = node.node.scope
    return scope if isinstance(scope, lambda_.Function) else None


def _invoked_by_eventbridge(fn: lambda_.Function) -> bool:
    """Whether a Lambda permission lets EventBridge invoke ``fn`` (it lives under the rule, not the function)."""
    return any(
        isinstance(child, lambda_.CfnPermission)
        and child.principal == "events.amazonaws.com"
        and child.function_name == fn.function_arn
        for child in Stack.of(fn).node.find_all()
    )


def _no_dlq_reason(node: IConstruct) -> str | None:
    """Why a function needs no Lambda DLQ: who invokes it decides where failures go."""
    fn = _function(node)
    if fn is None:
        return None
    if _invoked_by_eventbridge(fn):
        return (
            "Invoked asynchronously by EventBridge: failures go to the alarmed SQS on-failure destination of its "
            "EventInvokeConfig (the Lambda factory gives every such function one), which records the error as "
            "well as the event, unlike a DLQ."
        )
    if any(isinstance(child, lambda_.EventSourceMapping) for child in fn.node.children):
        return (
            "Invoked synchronously by its SQS event source mapping: failed records return to the queue, whose "
            "redrive policy moves them to the alarmed dead-letter queue. A Lambda DLQ would never receive anything."
        )
    return (
        "Invoked synchronously only (a Step Functions task or Ground Truth): the caller sees every error and "
        "retries or records it. A Lambda DLQ only ever receives asynchronous invocations."
    )


def _concurrency_reason(node: IConstruct) -> str | None:
    """Why a function has no reservation (``labelloop.reservedConcurrency`` is off by default)."""
    if isinstance(node, lambda_.CfnFunction) and node.reserved_concurrent_executions is not None:
        return None  # fixed: labelloop.reservedConcurrency reserved it
    return (
        "Bounded by its caller (Step Functions Map maxConcurrency, the SQS event source mapping, Ground Truth's "
        "task rate, a schedule or EventBridge rule), and throttled invocations are retried (state machine Retry "
        "with backoff, Lambda's asynchronous queue for up to 6 hours). A reservation takes capacity out of the "
        "account's pool and Lambda refuses it unless min(100, quota) stays unreserved, so it fails the deploy on "
        "a new account (quota 10); labelloop.reservedConcurrency reserves the export and Label Studio sync "
        "functions where the quota allows."
    )


def _log_group_reason(node: IConstruct) -> str | None:
    if isinstance(node, logs.CfnLogGroup) and node.kms_key_id is not None:
        return None  # fixed: encryption=kms
    return (
        "Encrypted at rest by CloudWatch Logs with service-managed keys; labelloop.encryption=kms encrypts every "
        "log group with the stack's KMS key instead (a key costs a monthly fee, so it is the user's choice)."
    )


def _access_log_bucket(text: str) -> Reason:
    """A reason for the access-log bucket only (the data bucket must pass these rules)."""

    def reason(node: IConstruct) -> str | None:
        scope = node.node.scope
        storage = scope.node.scope if scope is not None else None
        return text if isinstance(storage, Storage) and scope is storage.access_logs else None

    return reason


SUPPRESSIONS: tuple[Suppression, ...] = (
    Suppression(
        "CKV_AWS_117",
        lambda_.CfnFunction,
        _always(
            "No VPC: every call goes to AWS public service endpoints (S3, Step Functions, SageMaker, Rekognition, "
            "EventBridge) over TLS with IAM authentication; there is no private resource to reach, and a VPC "
            "would add NAT gateways or interface endpoints at a fixed monthly cost."
        ),
    ),
    Suppression(
        "CKV_AWS_173",
        lambda_.CfnFunction,
        _always(
            "The environment holds only resource names, prefixes and numeric settings, never a secret; Lambda "
            "encrypts it at rest with an AWS-managed key."
        ),
    ),
    Suppression("CKV_AWS_116", lambda_.CfnFunction, _no_dlq_reason),
    Suppression("CKV_AWS_115", lambda_.CfnFunction, _concurrency_reason),
    Suppression("CKV_AWS_158", logs.CfnLogGroup, _log_group_reason),
    Suppression(
        "CKV_AWS_18",
        s3.CfnBucket,
        _access_log_bucket(
            "This bucket receives the data bucket's server access logs; logging it into itself would loop, and "
            "into another bucket would only move the question."
        ),
    ),
    Suppression(
        "CKV_AWS_21",
        s3.CfnBucket,
        _access_log_bucket(
            "Access logs are append-only records written by the S3 logging service and expire after a year; "
            "versioning would only double what they cost."
        ),
    ),
)


@jsii.implements(IAspect)
class CheckovSuppressions:
    """Write every applicable `SUPPRESSIONS` entry into its resource's ``checkov`` metadata."""

    def __init__(self, table: tuple[Suppression, ...] = SUPPRESSIONS) -> None:
        self._table = table

    def visit(self, node: IConstruct) -> None:
        skips = []
        for entry in self._table:
            if not isinstance(node, entry.resource_type):
                continue
            reason = entry.reason(node)
            if reason is None:
                continue
            if len(reason.strip()) < 20:
                raise ValueError(f"skipping {entry.rule} on {node.node.path} needs a real reason, got {reason!r}")
            skips.append({"id": entry.rule, "comment": reason})
        if skips and isinstance(node, CfnResource):
            existing = node.get_metadata("checkov") or {}
            merged = [s for s in existing.get("skip", []) if s["id"] not in {k["id"] for k in skips}] + skips
            node.add_metadata("checkov", {**existing, "skip": merged})


def add_checkov_suppressions(stack: Stack) -> None:
    """Register the aspect on ``stack`` (called once by the stack)."""
    Aspects.of(stack).add(CheckovSuppressions())
