"""The Export construct in the synthesized template: function, rules, DLQ, alarm, least privilege."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template


@pytest.fixture(scope="module")
def template(template_json: dict[str, Any]) -> Template:
    return Template.from_json(template_json)


def _logical_id(template_json: dict[str, Any], prefix: str, kind: str) -> str:
    found = [k for k, v in template_json["Resources"].items() if k.startswith(prefix) and v["Type"] == kind]
    assert len(found) == 1, found
    return found[0]


def _function_id(template_json: dict[str, Any]) -> str:
    found = [
        k
        for k, v in template_json["Resources"].items()
        if v["Type"] == "AWS::Lambda::Function" and v["Properties"].get("Handler") == "handlers.export_yolo.handler"
    ]
    assert len(found) == 1, found
    return found[0]


def test_export_function_has_time_memory_and_environment_for_large_datasets(template_json: dict[str, Any]) -> None:
    props = template_json["Resources"][_function_id(template_json)]["Properties"]
    assert props["Timeout"] == 900
    assert props["MemorySize"] >= 2048
    env = props["Environment"]["Variables"]
    assert json.loads(env["LABELS"]) == ["object"]
    assert float(env["VAL_FRACTION"]) == pytest.approx(0.2)
    assert env["WORK_PREFIX"] == "work/" and env["EXPORTS_PREFIX"] == "exports/"
    assert int(env["COPY_THREADS"]) >= 16
    assert "DATA_BUCKET" in env
    assert props["Architectures"] == ["arm64"]


def test_both_rules_target_the_function_with_retries_and_a_dead_letter_queue(
    template: Template, template_json: dict[str, Any]
) -> None:
    function_id = _function_id(template_json)
    dlq_id = _logical_id(template_json, "ExportDeadLetters", "AWS::SQS::Queue")
    target = {
        "Arn": {"Fn::GetAtt": [function_id, "Arn"]},
        "DeadLetterConfig": {"Arn": {"Fn::GetAtt": [dlq_id, "Arn"]}},
        "RetryPolicy": Match.object_like({"MaximumRetryAttempts": Match.any_value()}),
    }
    template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "EventPattern": {"source": ["labelloop.workflow"], "detail-type": ["Batch Labeled"]},
            "Targets": [Match.object_like(target)],
        },
    )
    template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "EventPattern": {
                "source": ["aws.sagemaker"],
                "detail-type": ["SageMaker Ground Truth Labeling Job State Change"],
                "detail": {"LabelingJobStatus": ["Completed"]},
            },
            "Targets": [Match.object_like(target)],
        },
    )
    template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "EventPattern": {"source": ["labelloop.export"], "detail-type": ["Export Continuation"]},
            "Targets": [Match.object_like(target)],
        },
    )
    permissions = [
        v["Properties"]
        for v in template_json["Resources"].values()
        if v["Type"] == "AWS::Lambda::Permission"
        and v["Properties"].get("FunctionName") == {"Fn::GetAtt": [function_id, "Arn"]}
    ]
    assert sorted(p["Principal"] for p in permissions) == ["events.amazonaws.com"] * 3


def test_failed_async_invocations_go_to_the_same_alarmed_dlq(template: Template, template_json: dict[str, Any]) -> None:
    function_id = _function_id(template_json)
    dlq_id = _logical_id(template_json, "ExportDeadLetters", "AWS::SQS::Queue")
    template.has_resource_properties(
        "AWS::Lambda::EventInvokeConfig",
        {
            "FunctionName": {"Ref": function_id},
            "DestinationConfig": {"OnFailure": {"Destination": {"Fn::GetAtt": [dlq_id, "Arn"]}}},
        },
    )
    dimension = {"Name": "QueueName", "Value": {"Fn::GetAtt": [dlq_id, "QueueName"]}}
    alarms = [
        v["Properties"]
        for v in template_json["Resources"].values()
        if v["Type"] == "AWS::CloudWatch::Alarm" and dimension in v["Properties"].get("Dimensions", [])
    ]
    assert len(alarms) == 1
    assert alarms[0]["Threshold"] == 1 and alarms[0]["AlarmActions"]


def test_dead_letter_queue_enforces_tls_and_is_encrypted(template_json: dict[str, Any]) -> None:
    dlq_id = _logical_id(template_json, "ExportDeadLetters", "AWS::SQS::Queue")
    assert "Fn::GetAtt" in template_json["Resources"][dlq_id]["Properties"]["KmsMasterKeyId"]  # the stack's key
    policies = [
        v["Properties"]["PolicyDocument"]["Statement"]
        for v in template_json["Resources"].values()
        if v["Type"] == "AWS::SQS::QueuePolicy" and {"Ref": dlq_id} in v["Properties"]["Queues"]
    ]
    assert len(policies) == 1
    assert any(
        s["Effect"] == "Deny" and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}} for s in policies[0]
    )


def _statements(template_json: dict[str, Any]) -> list[dict[str, Any]]:
    role_id = template_json["Resources"][_function_id(template_json)]["Properties"]["Role"]["Fn::GetAtt"][0]
    found = []
    for value in template_json["Resources"].values():
        if value["Type"] == "AWS::IAM::Policy" and {"Ref": role_id} in value["Properties"]["Roles"]:
            found.extend(value["Properties"]["PolicyDocument"]["Statement"])
    return found


def _actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else list(action)


def _suffixes(statement: dict[str, Any]) -> set[str]:
    resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
    out = set()
    for resource in resources:
        if isinstance(resource, dict) and "Fn::Join" in resource:
            out.add(resource["Fn::Join"][1][-1])
        else:
            out.add(json.dumps(resource))
    return out


def test_least_privilege_writes_only_exports_and_the_index(template_json: dict[str, Any]) -> None:
    statements = _statements(template_json)
    writes = [s for s in statements if any(a.startswith("s3:Put") or a.startswith("s3:Delete") for a in _actions(s))]
    assert len(writes) == 1
    assert set(_actions(writes[0])) == {"s3:PutObject", "s3:PutObjectTagging"}
    assert _suffixes(writes[0]) == {"/exports/*", "/work/exports-index/*"}
    reads = [s for s in statements if "s3:GetObject" in _actions(s)]
    assert len(reads) == 1 and _suffixes(reads[0]) == {"/work/*", "/incoming/*", "/exports/*"}
    every_action = {a for s in statements for a in _actions(s)}
    assert "sagemaker:DescribeLabelingJob" in every_action
    (put_events,) = [s for s in statements if "events:PutEvents" in _actions(s)]
    assert "event-bus/default" in json.dumps(put_events["Resource"])
    assert not any(a.endswith("*") for a in every_action if a.startswith(("s3:", "sagemaker:", "events:")))
    assert not any(a.startswith("s3:Delete") for a in every_action)
