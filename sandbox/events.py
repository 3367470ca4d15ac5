"""EventBridge delivery for the emulation: Lambda and Step Functions targets, AWS-shaped S3 events.

moto 5.2.5 delivers rule matches only to SQS, CloudWatch Logs, archives and buses, ignores
``Input``/``InputPath`` and puts raw (un-encoded) object keys into S3 events sent to every bus
(docs/emulation.md). This module replaces ``Rule.send_to_targets`` and the S3 → EventBridge sender so that:
- every target type LabelLoop uses is delivered (Lambda asynchronously-invoked semantics, Step
  Functions ``StartExecution`` in the executing interpreter, SQS, logs, archives, other buses);
- ``Input``, ``InputPath`` and ``InputTransformer`` are honoured for every event, S3 ones included;
- S3 events go to the default bus only, with the key URL-encoded like AWS (``quote_plus``, ``/``
  kept), ``etag`` spelled as AWS spells it and ``reason`` naming the API call;
- every delivery and every failure is recorded in ``EVENT_LOG`` instead of being swallowed.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import quote_plus

from moto.events import models as events_models
from moto.events.models import Rule, events_backends
from moto.events.utils import EventMessageType
from moto.s3 import notifications as s3_notifications
from moto.utilities.arns import parse_arn

from sandbox import lambda_runtime

_PATCH_STATE: dict[str, Any] = {}

# S3 notification event names → the API call AWS reports in detail.reason.
_S3_REASONS = {
    "s3:ObjectCreated:Put": "PutObject",
    "s3:ObjectCreated:Post": "PostObject",
    "s3:ObjectCreated:Copy": "CopyObject",
    "s3:ObjectCreated:CompleteMultipartUpload": "CompleteMultipartUpload",
    "s3:ObjectRemoved:Delete": "DeleteObject",
    "s3:ObjectRemoved:DeleteMarkerCreated": "DeleteObject",
}


@dataclass
class Delivery:
    """One event offered to one rule target (or to no target, when nothing matched)."""

    bus: str
    rule: str | None
    target_id: str | None
    target_arn: str | None
    event: dict[str, Any]
    payload: Any
    error: str | None = None


@dataclass
class EventLog:
    """Everything the emulated EventBridge saw: emitted events and per-target deliveries."""

    emitted: list[dict[str, Any]] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record_emitted(self, event: dict[str, Any]) -> None:
        with self.lock:
            self.emitted.append(event)

    def record(self, delivery: Delivery) -> None:
        with self.lock:
            self.deliveries.append(delivery)

    def to_target(self, arn_fragment: str) -> list[Delivery]:
        """Deliveries whose target ARN contains ``arn_fragment``."""
        with self.lock:
            return [d for d in self.deliveries if d.target_arn and arn_fragment in d.target_arn]

    def errors(self) -> list[Delivery]:
        with self.lock:
            return [d for d in self.deliveries if d.error]

    def clear(self) -> None:
        with self.lock:
            self.emitted.clear()
            self.deliveries.clear()


EVENT_LOG = EventLog()


def encode_s3_key(key: str) -> str:
    """URL-encode an object key the way S3 event notifications carry it (spaces as ``+``)."""
    return quote_plus(key, safe="/")


def _iso_time(value: Any) -> str:
    if isinstance(value, int | float):
        return datetime.fromtimestamp(float(value), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, str) and value:
        return value
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def aws_event(moto_event: dict[str, Any]) -> dict[str, Any]:
    """The event as AWS delivers it: ISO time, no moto-internal keys."""
    event = {k: copy.deepcopy(v) for k, v in moto_event.items() if k != "ingestion-time"}
    event["time"] = _iso_time(moto_event.get("time"))
    return event


def _json_path(event: Any, path: str) -> Any:
    """Evaluate an EventBridge JSONPath (``$``, dotted names, ``[n]``) against the event."""
    from jsonpath_ng.ext import parse  # moto's own dependency

    matches = parse(path).find(event)
    if not matches:
        return None
    return matches[0].value


_PLACEHOLDER = re.compile(r"<([A-Za-z0-9_.\-]+)>")


def _inside_json_string(template: str, index: int) -> bool:
    """Whether ``index`` lies inside a double-quoted string of the template (escapes honoured)."""
    inside = False
    escaped = False
    for char in template[:index]:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = inside
        elif char == '"':
            inside = not inside
    return inside


def apply_input_transformer(transformer: dict[str, Any], event: dict[str, Any]) -> Any:
    """Render an InputTransformer like EventBridge: quoted placeholders get text, bare ones JSON."""
    values: dict[str, Any] = {}
    for name, path in (transformer.get("InputPathsMap") or {}).items():
        values[name] = _json_path(event, path)
    values.setdefault("aws.events.event.json", event)
    values.setdefault("aws.events.event", event)
    values.setdefault("aws.events.rule-name", None)
    template: str = transformer.get("InputTemplate", "")
    # A template that is not JSON (plain text) gets string values verbatim.
    is_json_template = template.lstrip().startswith(("{", "[", '"'))
    out: list[str] = []
    pos = 0
    for match in _PLACEHOLDER.finditer(template):
        name = match.group(1)
        if name not in values:
            continue
        out.append(template[pos : match.start()])
        value = values[name]
        if not is_json_template:
            out.append(value if isinstance(value, str) else json.dumps(value))
        elif _inside_json_string(template, match.start()):
            text = value if isinstance(value, str) else json.dumps(value)
            out.append(json.dumps(text)[1:-1] if value is not None else "")
        else:
            out.append(json.dumps(value) if value is not None else "null")
        pos = match.end()
    out.append(template[pos:])
    rendered = "".join(out)
    try:
        return json.loads(rendered)
    except json.JSONDecodeError:
        return rendered  # a plain-text template is delivered as a string


def target_payload(target: dict[str, Any], event: dict[str, Any]) -> Any:
    """What a target receives: ``Input`` verbatim, ``InputPath``'s match, a transform, or the event."""
    if "Input" in target and target["Input"] is not None:
        return json.loads(target["Input"])
    if target.get("InputPath"):
        return _json_path(event, target["InputPath"])
    if target.get("InputTransformer"):
        return apply_input_transformer(target["InputTransformer"], event)
    return event


def _event_invoke_config(fn: Any) -> dict[str, Any]:
    configs = getattr(fn, "event_invoke_config", None) or []
    return dict(configs[0].config) if configs else {}


def invoke_async(fn: Any, payload: Any) -> str | None:
    """Invoke like Lambda's asynchronous mode: retries, then the on-failure/on-success destination.

    Retries happen immediately (no backoff). Returns the final error text, or None on success.
    """
    config = _event_invoke_config(fn)
    attempts = 1 + int(config.get("MaximumRetryAttempts", 2))
    body: Any = None
    error: str | None = None
    for attempt in range(1, attempts + 1):
        headers: dict[str, Any] = {}
        body = fn.invoke(json.dumps(payload), {"x-amz-invocation-type": "Event"}, headers)
        body = body.decode() if isinstance(body, bytes) else body
        if "x-amz-function-error" not in headers:
            error = None
            break
        error = f"Lambda {fn.function_name} failed (attempt {attempt}/{attempts}): {body}"
    destinations = config.get("DestinationConfig") or {}
    destination = (destinations.get("OnFailure") if error else destinations.get("OnSuccess")) or {}
    if destination.get("Destination"):
        try:
            response = json.loads(body) if body else None
        except json.JSONDecodeError:
            response = body
        record = {
            "version": "1.0",
            "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "requestContext": {
                "requestId": str(lambda_runtime.new_uuid()),
                "functionArn": f"{fn.function_arn}:$LATEST",
                "condition": "RetriesExhausted" if error else "Success",
                "approximateInvokeCount": attempt,
            },
            "requestPayload": payload,
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST"},
            "responsePayload": response,
        }
        if error:
            record["responseContext"]["functionError"] = "Unhandled"
        send_to_destination(destination["Destination"], record)
    return error


def send_to_destination(arn_text: str, record: dict[str, Any]) -> None:
    """Deliver an asynchronous-invocation record to an SQS, SNS, Lambda or EventBridge destination."""
    arn = parse_arn(arn_text)
    if arn.service == "sqs":
        from moto.sqs import sqs_backends

        sqs_backends[arn.account][arn.region].send_message(queue_name=arn.resource_id, message_body=json.dumps(record))
    elif arn.service == "sns":
        from moto.sns import sns_backends

        sns_backends[arn.account][arn.region].publish(message=json.dumps(record), arn=arn_text)
    elif arn.service == "lambda":
        from moto.awslambda.utils import get_backend

        invoke_async(get_backend(arn.account, arn.region).get_function(arn_text), record)
    elif arn.service == "events":
        events_backends[arn.account][arn.region].put_events(
            [
                {
                    "Source": "lambda",
                    "DetailType": "Lambda Function Invocation Result - "
                    + ("Failure" if "functionError" in record["responseContext"] else "Success"),
                    "Detail": json.dumps(record),
                    "EventBusName": arn_text,
                }
            ]
        )
    else:
        raise ValueError(f"unsupported asynchronous invocation destination {arn_text}")


def _deliver_lambda(arn: Any, target_arn: str, payload: Any) -> str | None:
    from moto.awslambda.utils import get_backend

    return invoke_async(get_backend(arn.account, arn.region).get_function(target_arn), payload)


def _deliver_state_machine(arn: Any, target_arn: str, payload: Any) -> str | None:
    from moto.stepfunctions.responses import get_backend

    backend = get_backend(arn.account, arn.region)
    backend.start_execution(target_arn, name=str(lambda_runtime.new_uuid()), execution_input=json.dumps(payload))
    return None


def _deliver_sqs(arn: Any, target: dict[str, Any], payload: Any) -> str | None:
    from moto.sqs import sqs_backends

    backend = sqs_backends[arn.account][arn.region]
    group_id = target.get("SqsParameters", {}).get("MessageGroupId")
    body = payload if isinstance(payload, str) else json.dumps(payload)
    if group_id:
        attrs = backend.get_queue_attributes(arn.resource_id, ["ContentBasedDeduplication"])
        if attrs.get("ContentBasedDeduplication") == "false":
            return "FIFO queue target needs content-based deduplication"
    backend.send_message(queue_name=arn.resource_id, message_body=body, group_id=group_id)
    return None


def _deliver_logs(arn: Any, payload: Any) -> str | None:
    from moto.core.utils import unix_time_millis
    from moto.logs import logs_backends

    backend = logs_backends[arn.account][arn.region]
    stream = str(lambda_runtime.new_uuid())
    backend.create_log_stream(arn.resource_id, stream)
    message = payload if isinstance(payload, str) else json.dumps(payload)
    backend.put_log_events(arn.resource_id, stream, [{"timestamp": unix_time_millis(), "message": message}])
    return None


def _deliver(rule: Rule, target: dict[str, Any], moto_event: dict[str, Any], event: dict[str, Any]) -> None:
    arn = parse_arn(target["Arn"])
    payload: Any = None
    error: str | None = None
    try:
        payload = target_payload(target, event)
        if arn.service == "lambda":
            # Asynchronous: a handler that caused this event finishes before the target starts.
            lambda_runtime.defer(lambda: _deliver_lambda_and_record(rule, target, arn, event, payload))
            return
        if arn.service == "states":
            error = _deliver_state_machine(arn, target["Arn"], payload)
        elif arn.service == "sqs":
            error = _deliver_sqs(arn, target, payload)
        elif arn.service == "logs" and arn.resource_type == "log-group":
            error = _deliver_logs(arn, payload)
        elif arn.service == "events" and arn.resource_type == "event-bus":
            backend = events_backends[arn.account][arn.region]
            backend.put_events(
                [
                    {
                        "Source": event["source"],
                        "DetailType": event["detail-type"],
                        "Detail": json.dumps(event["detail"]),
                        "Resources": event.get("resources", []),
                        "EventBusName": arn.resource_id,
                    }
                ]
            )
        elif arn.service == "events" and not arn.resource_type:
            archive_arn = parse_arn(moto_event["archive-arn"])
            rule._send_to_events_archive(archive_arn.resource_id, cast(EventMessageType, moto_event))
        else:
            error = f"target type {arn.service}:{arn.resource_type} is not delivered by the emulation"
    except Exception as exc:  # EventBridge could not deliver: record it and use the target's DLQ
        error = f"{type(exc).__name__}: {exc}"
        error += _dead_letter(target, event)
    EVENT_LOG.record(
        Delivery(
            bus=rule.event_bus_name,
            rule=rule.name,
            target_id=target.get("Id"),
            target_arn=target["Arn"],
            event=event,
            payload=payload,
            error=error,
        )
    )


def _dead_letter(target: dict[str, Any], event: dict[str, Any]) -> str:
    """Send an undeliverable event to the target's dead-letter queue; return a note for the log."""
    dead_letter = (target.get("DeadLetterConfig") or {}).get("Arn")
    if not dead_letter:
        return ""
    try:
        from moto.sqs import sqs_backends

        dlq = parse_arn(dead_letter)
        sqs_backends[dlq.account][dlq.region].send_message(queue_name=dlq.resource_id, message_body=json.dumps(event))
        return f" (event sent to dead-letter queue {dlq.resource_id})"
    except Exception as exc:
        return f" (dead-letter queue failed too: {exc})"


def _deliver_lambda_and_record(
    rule: Rule, target: dict[str, Any], arn: Any, event: dict[str, Any], payload: Any
) -> None:
    try:
        error = _deliver_lambda(arn, target["Arn"], payload)
    except Exception as exc:  # the function is gone or unreadable: EventBridge's own delivery failure
        error = f"{type(exc).__name__}: {exc}"
        _dead_letter(target, event)
    EVENT_LOG.record(Delivery(rule.event_bus_name, rule.name, target.get("Id"), target["Arn"], event, payload, error))


def _send_to_targets(self: Rule, original_event: dict[str, Any], transform_input: bool = True) -> None:
    """Replacement for ``Rule.send_to_targets`` delivering to every target type LabelLoop uses.

    A scheduled rule matches no event (moto's empty pattern would match every one); schedules
    themselves never fire in the emulation.
    """
    if getattr(self, "scheduled_expression", None):
        return
    if self.state != "ENABLED" or not self.event_pattern.matches_event(cast(EventMessageType, original_event)):
        return
    event = aws_event(original_event)
    for target in list(self.targets):
        _deliver(self, target, original_event, event)


def _put_events(self: Any, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Record every PutEvents entry before moto routes it to rules."""
    original = _PATCH_STATE["put_events"]
    result = original(self, entries)
    for entry, outcome in zip(entries, result, strict=False):
        if "EventId" not in outcome:
            continue
        detail: Any
        try:
            detail = json.loads(entry.get("Detail", "{}"))
        except json.JSONDecodeError:
            detail = entry.get("Detail")
        EVENT_LOG.record_emitted(
            {
                "id": outcome["EventId"],
                "source": entry.get("Source"),
                "detail-type": entry.get("DetailType"),
                "resources": entry.get("Resources", []),
                "detail": detail,
                "bus": entry.get("EventBusName") or "default",
            }
        )
    return result


def s3_event(account_id: str, bucket: Any, event_name: str, key: Any) -> dict[str, Any]:
    """The S3 → EventBridge event exactly as AWS documents it, with the key URL-encoded."""
    detail_object: dict[str, Any] = {
        "key": encode_s3_key(key.name),
        "size": key.size,
        "etag": key.etag.replace('"', ""),
        "sequencer": f"{lambda_runtime.new_uuid().int % 10**18:018X}",
    }
    if getattr(key, "version_id", None) and key.version_id != "null":
        detail_object["version-id"] = key.version_id
    kind = event_name.split(":")[1] if event_name.count(":") >= 1 else event_name
    detail_type = {"ObjectCreated": "Object Created", "ObjectRemoved": "Object Deleted"}.get(
        kind, s3_notifications._detail_type(event_name)
    )
    return {
        "version": "0",
        "id": str(lambda_runtime.new_uuid()),
        "detail-type": detail_type,
        "source": "aws.s3",
        "account": account_id,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": bucket.region_name,
        "resources": [f"arn:aws:s3:::{bucket.name}"],
        "detail": {
            "version": "0",
            "bucket": {"name": bucket.name},
            "object": detail_object,
            "request-id": lambda_runtime.new_uuid().hex[:16].upper(),
            "requester": account_id,
            "source-ip-address": "127.0.0.1",
            "reason": _S3_REASONS.get(event_name, kind),
        },
    }


_OBJECT_WRITE = threading.local()


def _writing_object(method: Any) -> Any:
    """Mark a PutObject/CopyObject request: moto re-applies tags inside it, AWS emits no tag event."""

    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        depth = getattr(_OBJECT_WRITE, "depth", 0)
        _OBJECT_WRITE.depth = depth + 1
        try:
            return method(self, *args, **kwargs)
        finally:
            _OBJECT_WRITE.depth = depth

    return wrapper


def _send_event_bridge_message(account_id: str, bucket: Any, event_name: str, key: Any) -> None:
    """S3 sends bucket events to the account's *default* bus only."""
    name = str(getattr(event_name, "value", event_name))
    if name.startswith("s3:ObjectTagging:") and int(getattr(_OBJECT_WRITE, "depth", 0)) > 0:
        return  # tags set as part of writing the object are not a separate "Object Tags Added" event
    try:
        event = s3_event(account_id, bucket, name, key)
    except Exception as exc:  # S3 delivers asynchronously: never fail the PutObject, but record why
        EVENT_LOG.record(Delivery("default", None, None, None, {"s3-event": name}, None, repr(exc)))
        return
    EVENT_LOG.record_emitted({**event, "bus": "default"})
    backend = events_backends[account_id][bucket.region_name]
    default_bus = backend.event_buses.get("default")
    if default_bus is None:
        return
    for rule in list(default_bus.rules.values()):
        rule.send_to_targets(cast(EventMessageType, event))


def install() -> None:
    """Patch moto's EventBridge and S3 notification delivery (idempotent)."""
    if "send_to_targets" in _PATCH_STATE:
        return
    _PATCH_STATE["send_to_targets"] = Rule.send_to_targets
    _PATCH_STATE["put_events"] = events_models.EventsBackend.put_events
    _PATCH_STATE["s3_send"] = s3_notifications._send_event_bridge_message
    Rule.send_to_targets = _send_to_targets  # type: ignore[method-assign,assignment]
    events_models.EventsBackend.put_events = _put_events  # type: ignore[method-assign,assignment]
    s3_notifications._send_event_bridge_message = _send_event_bridge_message
    from moto.s3.responses import S3Response

    for method in ("put_object", "copy_object"):
        _PATCH_STATE[f"s3_{method}"] = S3Response.__dict__[method]
        setattr(S3Response, method, _writing_object(S3Response.__dict__[method]))


def uninstall() -> None:
    """Restore moto's original EventBridge behaviour."""
    if "send_to_targets" not in _PATCH_STATE:
        return
    Rule.send_to_targets = _PATCH_STATE.pop("send_to_targets")  # type: ignore[method-assign]
    events_models.EventsBackend.put_events = _PATCH_STATE.pop("put_events")  # type: ignore[method-assign]
    s3_notifications._send_event_bridge_message = _PATCH_STATE.pop("s3_send")
    from moto.s3.responses import S3Response

    for method in ("put_object", "copy_object"):
        setattr(S3Response, method, _PATCH_STATE.pop(f"s3_{method}"))
