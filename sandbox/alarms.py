"""CloudWatch alarm evaluation for the emulation: the stack's dead-letter-queue alarms, on request.

moto stores alarms but never evaluates them. `evaluate_alarms` reads every ``AWS::CloudWatch::Alarm``
of the deployed template and, for SQS queue-depth metrics (``AWS/SQS`` with a ``QueueName``
dimension: the DLQ alarms), compares the queue's current depth with the alarm's threshold the way
CloudWatch would at its next period. Alarms on other metrics are reported ``INSUFFICIENT_DATA``
(listed in ``sandbox.gaps.GAPS``).
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sandbox.cloud_api import CloudApi

__all__ = ["AlarmState", "alarms_and_faults", "dead_letter_reason", "evaluate_alarms"]

_SQS_METRICS = {
    "ApproximateNumberOfMessagesVisible": "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible": "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed": "ApproximateNumberOfMessagesDelayed",
}
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "GreaterThanOrEqualToThreshold": operator.ge,
    "GreaterThanThreshold": operator.gt,
    "LessThanThreshold": operator.lt,
    "LessThanOrEqualToThreshold": operator.le,
}


@dataclass(frozen=True)
class AlarmState:
    """One alarm's state now: ``ALARM``, ``OK`` or ``INSUFFICIENT_DATA`` (not evaluated)."""

    logical_id: str
    description: str
    state: str
    reason: str
    queue_url: str | None = None


def _queue_url(dimension: Any, deployment: Any) -> str | None:
    """The physical queue (URL) a ``QueueName`` dimension points at (``Fn::GetAtt`` or a literal name)."""
    if isinstance(dimension, dict) and "Fn::GetAtt" in dimension:
        return deployment.resources.get(dimension["Fn::GetAtt"][0])
    if isinstance(dimension, str):
        return next((url for url in deployment.resources.values() if url.endswith(f"/{dimension}")), None)
    return None


def evaluate_alarms(deployment: Any, sqs: Any) -> list[AlarmState]:
    """Every alarm of the deployed template with its state now (see the module doc)."""
    states = []
    for logical_id, resource in deployment.template.get("Resources", {}).items():
        if resource.get("Type") != "AWS::CloudWatch::Alarm":
            continue
        props = resource.get("Properties", {})
        description = str(props.get("AlarmDescription") or logical_id)
        dims = {d.get("Name"): d.get("Value") for d in props.get("Dimensions") or []}
        attribute = _SQS_METRICS.get(str(props.get("MetricName")))
        compare = _COMPARE.get(str(props.get("ComparisonOperator")))
        url = _queue_url(dims.get("QueueName"), deployment) if props.get("Namespace") == "AWS/SQS" else None
        if attribute is None or compare is None or url is None:
            reason = f"{props.get('Namespace')}/{props.get('MetricName')} is not evaluated by the emulation"
            states.append(AlarmState(logical_id, description, "INSUFFICIENT_DATA", reason))
            continue
        names = [attribute]
        if attribute == "ApproximateNumberOfMessages":
            # Nobody consumes a DLQ but the emulation's own report, which hides what it read: count those too.
            names.append("ApproximateNumberOfMessagesNotVisible")
        values = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
        depth = float(sum(int(values.get(n, 0)) for n in names))
        threshold = float(props.get("Threshold", 0))
        firing = compare(depth, threshold)
        queue = url.rsplit("/", 1)[-1]
        reason = f"{props.get('MetricName')} of {queue} is {depth:g} ({props.get('ComparisonOperator')} {threshold:g})"
        states.append(AlarmState(logical_id, description, "ALARM" if firing else "OK", reason, url))
    return states


def alarms_and_faults(result: Any, cloud: CloudApi, injector: Any, say: Callable[[str], None]) -> None:
    """Add a local run's firing alarms (and the dead letters behind them) and injected faults to its report.

    Dead letters the report does not list yet (the intake DLQ's were read as rejected images, which
    hid them) are work that was lost: each becomes a problem of the run, with its reason.
    """
    sqs = cloud.client("sqs")
    firing = [a for a in evaluate_alarms(cloud.deployment, sqs) if a.state == "ALARM"]
    result.report["alarms"] = [
        {"alarm": a.logical_id, "description": a.description, "reason": a.reason} for a in firing
    ]
    for alarm in firing:
        say(f"ALARM {alarm.logical_id}: {alarm.description} ({alarm.reason})")
        if not alarm.queue_url:
            continue
        got = sqs.receive_message(QueueUrl=alarm.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0)
        for message in got.get("Messages", []):
            reason = dead_letter_reason(message.get("Body", ""))
            say(f"  {reason}")
            result.problems.append(f"dead-letter queue {alarm.queue_url.rsplit('/', 1)[-1]}: {reason}")
    result.report["problems"] = result.problems
    if injector is not None:
        result.report["faults"] = injector.summary()
        say(f"faults injected: {result.report['faults']['injected']}; crashes: {injector.crashed or 'none'}")


def dead_letter_reason(body: str) -> str:
    """One line from a dead letter: a failed invocation's error, or the undelivered event's type."""
    try:
        record = json.loads(body)
    except json.JSONDecodeError:
        return body[:500]
    if not isinstance(record, dict):
        return body[:500]
    response = record.get("responsePayload")
    if isinstance(response, dict) and response.get("errorMessage"):
        function = str((record.get("requestContext") or {}).get("functionArn", "")).split(":function:")[-1]
        return f"{function} failed: {response.get('errorType')}: {str(response['errorMessage'])[:500]}"
    error = record.get("error")
    if isinstance(record.get("reason"), str) and isinstance(error, dict):  # a state machine's failure message
        failure = record.get("failure")
        if isinstance(failure, dict) and isinstance(failure.get("reason"), str):
            return f"{record['reason']}: {failure['reason'][:500]}"
        return f"{record['reason']}: {error.get('Error')}: {str(error.get('Cause'))[:500]}"
    return f"undelivered event {record.get('detail-type') or record.get('source') or body[:200]}"
