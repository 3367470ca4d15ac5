"""Model hosting in the synthesized template: the hosting function, its schedule, IAM and alarm, the
workflow's EnsureModel/ReleaseModel states, and the model.* settings' validation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from infra.config import ConfigError, config_from_context, parse_config
from labelloop_core import contract, limits
from labelloop_core.contract import Env
from tests.conftest import shared_assembly

V1 = "arn:aws:rekognition:us-east-1:123456789012:project/street/version/street.2026-01-01/1700000000000"
CONTEXT = {
    "model": {"kind": "rekognition", "projectVersionArn": V1, "idleMinutes": 15, "maxInferenceUnits": 2},
    "retrain": {"enabled": True},
}
HANDLER = "handlers.model_hosting.handler"


@pytest.fixture(scope="module")
def hosting_template() -> dict[str, Any]:
    assembly: Path = shared_assembly(CONTEXT)
    return dict(json.loads((assembly / "LabelLoop.template.json").read_text()))


def _of_type(template: dict[str, Any], kind: str) -> dict[str, Any]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def _function_id(template: dict[str, Any]) -> str:
    (found,) = [
        k for k, v in _of_type(template, "AWS::Lambda::Function").items() if v["Properties"]["Handler"] == HANDLER
    ]
    return found


def _workflow(template: dict[str, Any]) -> dict[str, Any]:
    (machine,) = [
        v for k, v in _of_type(template, "AWS::StepFunctions::StateMachine").items() if k.startswith("Workflow")
    ]
    parts = machine["Properties"]["DefinitionString"]["Fn::Join"][1]
    return dict(json.loads("".join(p if isinstance(p, str) else "TOKEN" for p in parts)))


def _statements(template: dict[str, Any], function_id: str) -> list[dict[str, Any]]:
    role = template["Resources"][function_id]["Properties"]["Role"]["Fn::GetAtt"][0]
    out = []
    for policy in _of_type(template, "AWS::IAM::Policy").values():
        if {"Ref": role} in policy["Properties"]["Roles"]:
            out += policy["Properties"]["PolicyDocument"]["Statement"]
    return out


def test_the_hosting_function_has_the_model_settings(hosting_template: dict[str, Any]) -> None:
    fn = hosting_template["Resources"][_function_id(hosting_template)]["Properties"]
    env = fn["Environment"]["Variables"]
    assert env[Env.MODEL_KEEP_RUNNING] == "false"
    assert env[Env.MODEL_IDLE_MINUTES] == "15.0"
    assert (env[Env.MODEL_INFERENCE_UNITS], env[Env.MODEL_MAX_INFERENCE_UNITS]) == ("1", "2")
    assert env[Env.MODEL_ARN] == V1


def test_a_schedule_sweeps_every_few_minutes_and_a_failing_sweep_alarms(hosting_template: dict[str, Any]) -> None:
    template = Template.from_json(hosting_template)
    function_id = _function_id(hosting_template)
    template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "ScheduleExpression": f"rate({limits.MODEL_SWEEP_MINUTES} minutes)",
            "Targets": [
                Match.object_like({"Arn": {"Fn::GetAtt": [function_id, "Arn"]}, "RetryPolicy": Match.any_value()})
            ],
        },
    )
    template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "MetricName": "Errors",
            "Namespace": "AWS/Lambda",
            "Dimensions": [{"Name": "FunctionName", "Value": {"Ref": function_id}}],
            "Threshold": 1,
            "AlarmActions": Match.any_value(),
        },
    )


def test_rekognition_hosting_calls_are_scoped_to_the_stacks_versions(hosting_template: dict[str, Any]) -> None:
    statements = _statements(hosting_template, _function_id(hosting_template))
    by_action: dict[str, list[Any]] = {}
    for statement in statements:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        for action in actions:
            by_action.setdefault(action, []).extend(resources)
    assert not [a for a in by_action if a.endswith(":*") or a == "*"]
    start = json.dumps(by_action["rekognition:StartProjectVersion"])
    assert V1 in start and "project/LabelLoop-labelloop/version/*" in start
    assert by_action["rekognition:StopProjectVersion"] == by_action["rekognition:StartProjectVersion"]
    describe = json.dumps(by_action["rekognition:DescribeProjectVersions"])
    assert "project/street/*" in describe and "project/LabelLoop-labelloop/*" in describe
    assert by_action["rekognition:DescribeProjects"] == ["*"]  # no resource-level permission exists
    assert "rekognition:DetectCustomLabels" not in by_action
    hosting = json.dumps(by_action["s3:PutObject"])
    assert contract.MODEL_HOSTING_PREFIX in hosting and contract.MODEL_PIN_FILE in hosting


def test_the_prelabel_function_may_renew_leases(hosting_template: dict[str, Any]) -> None:
    (prelabel,) = [
        k
        for k, v in _of_type(hosting_template, "AWS::Lambda::Function").items()
        if v["Properties"]["Handler"] == "handlers.prelabel.handler"
    ]
    puts = [s for s in _statements(hosting_template, prelabel) if "s3:PutObject" in json.dumps(s["Action"])]
    assert contract.MODEL_HOSTING_PREFIX in json.dumps(puts)


def test_the_workflow_ensures_the_model_before_the_map_and_releases_it_after(hosting_template: dict[str, Any]) -> None:
    states = _workflow(hosting_template)["States"]
    valid = states["AnyValid?"]["Choices"][0]["Next"]
    assert valid == "InitModelHosting" and states[valid]["Next"] == "EnsureModel"
    ensure = states["EnsureModel"]
    assert ensure["Parameters"]["action"] == "ensure"
    assert ensure["Next"] == "ModelReady?"
    assert states["ModelReady?"]["Choices"][0]["Next"] == "Prelabel"
    assert states["ModelReady?"]["Default"] == "WaitForModel"
    assert states["WaitForModel"]["Seconds"] == limits.MODEL_START_POLL_SECONDS.default
    assert states["WaitForModel"]["Next"] == "EnsureModel"
    never = [r for r in ensure["Retry"] if r["ErrorEquals"] == ["ModelStartFailed"]]
    assert never and never[0]["MaxAttempts"] == 0  # a start that cannot succeed fails the batch at once
    assert ensure["Catch"][0]["Next"] == "ReleaseModelOnFailure"
    assert states["Prelabel"]["Next"] == "ReleaseModel"
    assert states["ReleaseModel"]["Parameters"]["action"] == "release"
    assert states["ReleaseModel"]["Next"] == "Route" and states["ReleaseModel"]["Catch"][0]["Next"] == "Route"
    assert states["ReleaseModelOnFailure"]["Next"] == "RecordFailure"
    assert states["ReleaseModelOnFailure"]["Catch"][0]["Next"] == "RecordFailure"
    assert states["Route"]["Catch"][0]["Next"] == "ReleaseModelOnFailure"


def test_keep_running_and_other_models_keep_todays_workflow(template_json: dict[str, Any]) -> None:
    assert not [
        k for k, v in _of_type(template_json, "AWS::Lambda::Function").items() if v["Properties"]["Handler"] == HANDLER
    ]
    states = _workflow(template_json)["States"]
    assert states["Prelabel"]["Next"] == "Route" and "EnsureModel" not in states
    kept = parse_config({"model": {"kind": "rekognition", "projectVersionArn": V1, "keepRunning": True}})
    assert not kept.model.managed_hosting
    assert parse_config({"model": {"kind": "rekognition", "projectVersionArn": V1}}).model.managed_hosting


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"idleMinutes": -1}, r"labelloop\.model\.idleMinutes: must be a number"),
        ({"idleMinutes": "soon"}, r"labelloop\.model\.idleMinutes: must be a number"),
        ({"inferenceUnits": 0}, r"labelloop\.model\.inferenceUnits: must be an integer"),
        ({"inferenceUnits": 3, "maxInferenceUnits": 2}, r"labelloop\.model\.maxInferenceUnits: must be at least"),
        ({"keepRunning": "yes"}, r"labelloop\.model\.keepRunning: must be true or false"),
        ({"startPollSeconds": 0}, r"labelloop\.model\.startPollSeconds: must be an integer"),
    ],
)
def test_bad_hosting_settings_fail_naming_the_key(model: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"model": {"kind": "rekognition", "projectVersionArn": V1, **model}})


@pytest.mark.parametrize("value", ["-5", "abc", "NaN"])
def test_a_bad_idle_time_on_the_command_line_names_the_key(value: str) -> None:
    context = {
        "labelloop": {"model": {"kind": "rekognition", "projectVersionArn": V1}},
        "labelloop.model.idleMinutes": value,
    }
    with pytest.raises(ConfigError, match=r"labelloop\.model\.idleMinutes"):
        config_from_context(context.get)
    good = {**context, "labelloop.model.idleMinutes": "2.5"}
    assert config_from_context(good.get).model.idle_minutes == 2.5


def test_the_retrain_loop_may_start_the_deploy_time_incumbent(hosting_template: dict[str, Any]) -> None:
    (retrain,) = [
        k
        for k, v in _of_type(hosting_template, "AWS::Lambda::Function").items()
        if v["Properties"]["Handler"] == "handlers.retrain.handler"
    ]
    statements = json.dumps(_statements(hosting_template, retrain))
    assert "rekognition:StartProjectVersion" in statements and V1 in statements
    assert "project/street/*" in statements  # DescribeProjectVersions on the deploy-time project
