"""Intake and workflow in the synthesized template: what docs/data-flow.md and the ASL-interpreter limits require."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from infra.config import parse_config
from infra.constructs.intake import event_source_batch_size
from infra.constructs.workflow.definition import THROTTLE_ATTEMPTS

REVIEW_WAIT_PATH = "$.review_wait_seconds"


@pytest.fixture(scope="module")
def template(template_json: dict[str, Any]) -> Template:
    return Template.from_json(template_json)


def _resources(template_json: dict[str, Any], kind: str, prefix: str = "") -> dict[str, Any]:
    return {k: v for k, v in template_json["Resources"].items() if v["Type"] == kind and k.startswith(prefix)}


def _definition(template_json: dict[str, Any]) -> dict[str, Any]:
    (machine,) = _resources(template_json, "AWS::StepFunctions::StateMachine", "Workflow").values()
    parts = machine["Properties"]["DefinitionString"]["Fn::Join"][1]
    # Tokens (GetAtt/Ref) sit inside JSON strings; stand-ins keep the document parseable.
    text = "".join(p if isinstance(p, str) else "TOKEN" for p in parts)
    return json.loads(text)


def _function_id(template_json: dict[str, Any], handler: str) -> str:
    (found,) = [
        k
        for k, v in _resources(template_json, "AWS::Lambda::Function").items()
        if v["Properties"].get("Handler") == handler
    ]
    return found


def _policy_statements(template_json: dict[str, Any], function_id: str) -> list[dict[str, Any]]:
    role = template_json["Resources"][function_id]["Properties"]["Role"]["Fn::GetAtt"][0]
    statements = []
    for policy in _resources(template_json, "AWS::IAM::Policy").values():
        if {"Ref": role} in policy["Properties"]["Roles"]:
            statements += policy["Properties"]["PolicyDocument"]["Statement"]
    return statements


def test_state_machine_logs_all_traces_and_times_out(template: Template, template_json: dict[str, Any]) -> None:
    template.has_resource_properties(
        "AWS::StepFunctions::StateMachine",
        {
            "LoggingConfiguration": {
                "Level": "ALL",
                "IncludeExecutionData": True,
                "Destinations": [{"CloudWatchLogsLogGroup": {"LogGroupArn": Match.any_value()}}],
            },
            "TracingConfiguration": {"Enabled": True},
            "StateMachineName": "LabelLoop-batch-workflow",
        },
    )
    definition = _definition(template_json)
    assert definition["TimeoutSeconds"] == (240 + 48) * 3600
    assert definition["StartAt"] == "InitBuild"


def test_every_task_retries_transient_errors_and_is_caught(template_json: dict[str, Any]) -> None:
    states = _definition(template_json)["States"]
    tasks = {name: s for name, s in states.items() if s["Type"] in ("Task", "Map")}
    assert set(tasks) >= {
        "BuildManifest",
        "Prelabel",
        "Route",
        "StartReview",
        "ReconcileReview",
        "Merge",
        "Calibrate",
        "Announce",
        "RecordFailure",
    }
    for name, state in tasks.items():
        if name == "RecordFailure":
            assert state["Next"] == "Failed" and "Catch" not in state
            continue
        catches = state["Catch"]
        assert catches[-1] == {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "RecordFailure"}, name
        if state["Type"] == "Task" and name != "Announce":
            retried = {e for r in state["Retry"] for e in r["ErrorEquals"]}
            assert {
                "Lambda.ServiceException",
                "Lambda.TooManyRequestsException",
                "Lambda.SdkClientException",
            } <= retried, name
            # Throttling first (Step Functions applies the first matching retrier), waited out patiently.
            throttle = state["Retry"][0]
            assert throttle["ErrorEquals"] == ["Lambda.TooManyRequestsException"], name
            assert (throttle["MaxAttempts"], throttle["MaxDelaySeconds"], throttle["JitterStrategy"]) == (
                THROTTLE_ATTEMPTS,
                60,
                "FULL",
            ), name
    assert states["Failed"]["Type"] == "Fail"


def test_build_loops_until_done_and_nothing_grows_with_the_batch(template_json: dict[str, Any]) -> None:
    states = _definition(template_json)["States"]
    assert states["InitBuild"]["Result"] == {"cursor": 0, "done": False}
    assert states["BuildManifest"]["Parameters"]["cursor.$"] == "$.build.cursor"
    choice = states["BuildDone?"]
    assert choice["Choices"][0]["Variable"] == "$.build.done" and choice["Default"] == "BuildManifest"
    for name in ("BuildManifest", "Route", "Merge", "Calibrate", "ReconcileReview"):
        assert states[name]["ResultPath"].startswith("$."), name  # small summaries under one key


def test_prelabel_is_a_distributed_map_the_interpreter_accepts(template_json: dict[str, Any]) -> None:
    prelabel = _definition(template_json)["States"]["Prelabel"]
    assert prelabel["ItemProcessor"]["ProcessorConfig"] == {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}
    assert prelabel["ItemReader"]["Resource"].endswith(":states:::s3:listObjectsV2")
    assert prelabel["ItemReader"]["Parameters"]["Bucket.$"] == "$.bucket"
    assert "shards/" in prelabel["ItemReader"]["Parameters"]["Prefix.$"]
    assert prelabel["ResultPath"] is None and prelabel["MaxConcurrency"] == 4
    assert "ItemBatcher" not in prelabel and "ToleratedFailurePercentage" not in prelabel
    assert prelabel["ItemSelector"]["shard_key.$"] == "$$.Map.Item.Value.Key"


def test_review_waits_for_a_task_token_and_reconciles_on_timeout(template_json: dict[str, Any]) -> None:
    states = _definition(template_json)["States"]
    review = states["StartReview"]
    assert review["Resource"].endswith(":states:::lambda:invoke.waitForTaskToken")
    assert review["Parameters"]["Payload"]["token.$"] == "$$.Task.Token"
    wait_path = review["TimeoutSecondsPath"]  # the review wait comes from the execution input
    assert wait_path == REVIEW_WAIT_PATH
    assert review["Catch"][0] == {
        "ErrorEquals": ["States.Timeout"],
        "ResultPath": "$.review_timeout",
        "Next": "ReconcileReview",
    }
    assert states["ReconcileReview"]["Parameters"]["action"] == "reconcile"
    assert states["ReviewDone?"]["Default"] == "StartReview"
    assert states["NeedsReview?"]["Choices"][0]["Variable"] == "$.route.review"


def test_announce_puts_batch_labeled_on_eventbridge(template_json: dict[str, Any]) -> None:
    announce = _definition(template_json)["States"]["Announce"]
    assert announce["Resource"].endswith(":states:::events:putEvents")
    (entry,) = announce["Parameters"]["Entries"]
    assert (entry["Source"], entry["DetailType"]) == ("labelloop.workflow", "Batch Labeled")
    assert entry["Detail"]["output_manifest.$"] == "$.merge.output_manifest"
    assert set(entry["Detail"]) == {"dataset.$", "batch_id.$", "output_manifest.$", "report.$"}


def test_intake_rule_queue_dlq_and_event_source(template: Template, template_json: dict[str, Any]) -> None:
    template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "EventPattern": {
                "source": ["aws.s3"],
                "detail-type": ["Object Created"],
                "detail": {"bucket": {"name": [Match.any_value()]}, "object": {"key": [{"prefix": "incoming/"}]}},
            },
            "Targets": [Match.object_like({"Arn": Match.any_value(), "DeadLetterConfig": Match.any_value()})],
        },
    )
    queues = _resources(template_json, "AWS::SQS::Queue", "Intake")
    main = next(q for q in queues.values() if "RedrivePolicy" in q["Properties"])
    assert main["Properties"]["RedrivePolicy"]["maxReceiveCount"] == 5
    assert "Fn::GetAtt" in main["Properties"]["KmsMasterKeyId"]  # the stack's key
    for policy in _resources(template_json, "AWS::SQS::QueuePolicy", "Intake").values():
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        assert any(
            s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} for s in statements
        )
    template.has_resource_properties(
        "AWS::Lambda::EventSourceMapping",
        {"BatchSize": 1000, "MaximumBatchingWindowInSeconds": 60, "FunctionResponseTypes": ["ReportBatchItemFailures"]},
    )
    starter = template_json["Resources"][_function_id(template_json, "handlers.batch_starter.handler")]
    env = starter["Properties"]["Environment"]["Variables"]
    assert env["MAX_BATCH_SIZE"] == "1000" and env["REVIEW_WAIT_SECONDS"] == "3600"
    assert "STATE_MACHINE_ARN" in env and env["INCOMING_PREFIX"] == "incoming/"
    dlq_ids = [k for k, q in queues.items() if "RedrivePolicy" not in q["Properties"]]
    alarms = _resources(template_json, "AWS::CloudWatch::Alarm")
    assert any(
        a["Properties"]["Dimensions"][0]["Value"] == {"Fn::GetAtt": [dlq_ids[0], "QueueName"]}
        for a in alarms.values()
        if a["Properties"].get("Dimensions")
    )


def test_job_state_change_rule_targets_job_event(template_json: dict[str, Any]) -> None:
    job_event = _function_id(template_json, "handlers.job_event.handler")
    rules = [
        r
        for r in _resources(template_json, "AWS::Events::Rule").values()
        if r["Properties"]["EventPattern"].get("detail-type") == ["SageMaker Ground Truth Labeling Job State Change"]
        and any(t["Arn"] == {"Fn::GetAtt": [job_event, "Arn"]} for t in r["Properties"]["Targets"])
    ]
    assert len(rules) == 1
    assert rules[0]["Properties"]["EventPattern"]["source"] == ["aws.sagemaker"]


def test_review_permissions_are_scoped(template_json: dict[str, Any]) -> None:
    statements = _policy_statements(template_json, _function_id(template_json, "handlers.start_review.handler"))
    create = next(s for s in statements if "sagemaker:CreateLabelingJob" in s["Action"])
    resource = json.dumps(create["Resource"])
    assert resource.endswith(':labeling-job/labelloop-*"]}') or "labeling-job/labelloop-*" in resource
    pass_role = next(s for s in statements if s["Action"] == "iam:PassRole")
    assert pass_role["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}
    tokens = next(s for s in statements if "states:SendTaskSuccess" in s["Action"])
    assert "stateMachine:LabelLoop-batch-workflow" in json.dumps(tokens["Resource"])
    job_event = _policy_statements(template_json, _function_id(template_json, "handlers.job_event.handler"))
    describe = next(s for s in job_event if "sagemaker:DescribeLabelingJob" in s["Action"])
    assert "labeling-job/labelloop-*" in json.dumps(describe["Resource"])


@pytest.mark.parametrize(
    ("window", "size", "expected"), [(0, 1000, 10), (0, 3, 3), (60, 1000, 1000), (60, 50_000, 10_000)]
)
def test_event_source_batch_size_respects_lambda_limits(window: int, size: int, expected: int) -> None:
    config = parse_config({"batchWindowSeconds": window, "maxBatchSize": size})
    assert event_source_batch_size(config) == expected


def test_merge_gets_what_its_cost_ledger_prices(template_json: dict[str, Any]) -> None:
    """The batch report's ``cost``: the price overrides (none by default), the model, its units, the backend."""
    from labelloop_core.contract import Env

    config = parse_config({})
    merge = template_json["Resources"][_function_id(template_json, "handlers.merge.handler")]
    env = merge["Properties"]["Environment"]["Variables"]
    assert env[Env.COST_PRICES] == config.cost.env_value() == "{}"
    assert env[Env.MODEL_KIND] == config.model.kind
    assert env[Env.RETRAIN_INFERENCE_UNITS] == str(config.retrain.inference_units)
    assert env[Env.REVIEW_BACKEND] == config.review_backend
