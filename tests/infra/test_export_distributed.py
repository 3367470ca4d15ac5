"""The distributed export in the synthesized template: state machine, shard function, wiring, least privilege."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.config import parse_config
from infra.constructs.workflow.definition import THROTTLE_ATTEMPTS
from labelloop_core import contract

THROTTLE_RETRY = {
    "ErrorEquals": ["Lambda.TooManyRequestsException"],
    "IntervalSeconds": 2,
    "MaxAttempts": THROTTLE_ATTEMPTS,
    "BackoffRate": 2,
    "MaxDelaySeconds": 60,
    "JitterStrategy": "FULL",
}


def _resources(template_json: dict[str, Any], kind: str, prefix: str) -> dict[str, Any]:
    return {k: v for k, v in template_json["Resources"].items() if v["Type"] == kind and k.startswith(prefix)}


def _one(template_json: dict[str, Any], kind: str, prefix: str) -> tuple[str, dict[str, Any]]:
    found = _resources(template_json, kind, prefix)
    assert len(found) == 1, sorted(found)
    return next(iter(found.items()))


def _definition(template_json: dict[str, Any]) -> dict[str, Any]:
    """The export state machine's definition, tokens (ARNs) replaced by their logical ids."""
    _, machine = _one(template_json, "AWS::StepFunctions::StateMachine", "ExportDistributed")
    parts = machine["Properties"]["DefinitionString"]["Fn::Join"][1]
    text = "".join(p if isinstance(p, str) else f"<{json.dumps(p, sort_keys=True)}>".replace('"', "'") for p in parts)
    return dict(json.loads(text))


@pytest.fixture(scope="module")
def definition(template_json: dict[str, Any]) -> dict[str, Any]:
    return _definition(template_json)


def test_shards_fan_out_over_the_plans_shard_files_then_publish(definition: dict[str, Any]) -> None:
    states = definition["States"]
    assert definition["StartAt"] == "ExportShards"
    shards = states["ExportShards"]
    assert shards["Type"] == "Map" and shards["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
    assert shards["ItemProcessor"]["ProcessorConfig"]["ExecutionType"] == "STANDARD"
    assert shards["MaxConcurrency"] == parse_config({}).export.max_concurrency
    reader = shards["ItemReader"]
    assert reader["Resource"].endswith(":s3:listObjectsV2")
    assert reader["Parameters"]["Prefix.$"] == f"States.Format('{{}}{contract.EXPORT_SHARDS_DIR}', $.version_prefix)"
    assert shards["ItemSelector"]["shard_key.$"] == "$$.Map.Item.Value.Key"
    worker = shards["ItemProcessor"]["States"]["WriteShard"]
    assert worker["Parameters"]["action"] == contract.EXPORT_ACTION_SHARD
    retried = {error for retry in worker["Retry"] for error in retry["ErrorEquals"]}
    assert "States.TaskFailed" in retried and "Lambda.TooManyRequestsException" in retried
    assert all(retry.get("BackoffRate", 1) >= 2 for retry in worker["Retry"])
    # A low account quota (new accounts: 10) below maxConcurrency throttles shard workers: the first
    # retrier waits them out with capped, jittered backoff instead of failing the export.
    assert worker["Retry"][0] == THROTTLE_RETRY
    assert shards["Next"] == "Publish" and states["Publish"]["Next"] == "Exported"
    assert states["Publish"]["Parameters"]["action"] == contract.EXPORT_ACTION_PUBLISH


def test_a_failed_shard_or_publish_records_the_reason_and_notifies_the_alarmed_queue(
    template_json: dict[str, Any], definition: dict[str, Any]
) -> None:
    states = definition["States"]
    for name in ("ExportShards", "Publish"):
        (catch,) = states[name]["Catch"]
        assert catch["ErrorEquals"] == ["States.ALL"] and catch["Next"] == "RecordFailure"
    record = states["RecordFailure"]
    assert record["Parameters"]["action"] == contract.EXPORT_ACTION_FAIL
    assert record["Next"] == "NotifyFailure" and record["Catch"][0]["Next"] == "NotifyFailure"
    notify = states["NotifyFailure"]
    assert notify["Resource"].endswith(":sqs:sendMessage")
    dlq_id, _ = _one(template_json, "AWS::SQS::Queue", "ExportDeadLetters")
    assert dlq_id in notify["Parameters"]["QueueUrl"]
    assert notify["Next"] == "ExportFailed" and states["ExportFailed"]["Type"] == "Fail"


def test_the_export_function_starts_the_state_machine_above_the_configured_size(template_json: dict[str, Any]) -> None:
    machine_id, _ = _one(template_json, "AWS::StepFunctions::StateMachine", "ExportDistributed")
    functions = _resources(template_json, "AWS::Lambda::Function", "Export")
    (export,) = [f for f in functions.values() if f["Properties"]["Handler"] == "handlers.export_yolo.handler"]
    env = export["Properties"]["Environment"]["Variables"]
    config = parse_config({}).export
    assert env[contract.Env.EXPORT_STATE_MACHINE_ARN] == {"Ref": machine_id}
    assert env[contract.Env.EXPORT_DISTRIBUTED_ABOVE] == str(config.distributed_above)
    assert env[contract.Env.EXPORT_SHARD_SIZE] == str(config.shard_size)
    statements = [
        s
        for policy in _resources(template_json, "AWS::IAM::Policy", "ExportExportYoloRole").values()
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
    ]
    starts = [s for s in statements if s["Action"] == "states:StartExecution"]
    assert [s["Resource"] for s in starts] == [{"Ref": machine_id}]
    assert any(s["Action"] == "states:DescribeExecution" for s in statements)


def test_shard_workers_read_sources_and_write_only_exports(template_json: dict[str, Any]) -> None:
    (worker,) = [
        f
        for f in _resources(template_json, "AWS::Lambda::Function", "ExportDistributed").values()
        if f["Properties"]["Handler"] == "handlers.export_shards.handler"
    ]
    assert worker["Properties"]["Timeout"] == 900
    (policy,) = _resources(template_json, "AWS::IAM::Policy", "ExportDistributedExportShardRole").values()
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    writes = [s for s in statements if "s3:PutObject" in s["Action"]]
    assert len(writes) == 1 and writes[0]["Resource"]["Fn::Join"][1][1] == "/exports/*"
    assert not any(
        a.startswith("s3:Delete")
        for s in statements
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    )
