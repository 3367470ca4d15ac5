"""The Labeling construct in the synthesized stack: functions, Ground Truth role, grants, outputs."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk import aws_iam as iam
from aws_cdk.assertions import Template

from labelloop_core.contract import PRELABEL_ATTRIBUTE


def _resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def _function(template: dict[str, Any], handler: str) -> tuple[str, dict[str, Any]]:
    (found,) = [
        (k, v)
        for k, v in _resources(template, "AWS::Lambda::Function").items()
        if v["Properties"]["Handler"] == handler
    ]
    return found


def _statements(template: dict[str, Any], policy_id: str) -> list[dict[str, Any]]:
    return list(template["Resources"][policy_id]["Properties"]["PolicyDocument"]["Statement"])


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _gt_role(template: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    (found,) = [
        (k, v)
        for k, v in _resources(template, "AWS::IAM::Role").items()
        if v["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"].get("Service")
        == "sagemaker.amazonaws.com"
    ]
    return found


def _policies_of(template: dict[str, Any], role_id: str) -> list[str]:
    return [
        k for k, v in _resources(template, "AWS::IAM::Policy").items() if {"Ref": role_id} in v["Properties"]["Roles"]
    ]


def test_both_functions_exist_with_the_task_environment(template_json: dict[str, Any]) -> None:
    for handler in ("handlers.pre_annotation.handler", "handlers.post_annotation.handler"):
        _, fn = _function(template_json, handler)
        env = fn["Properties"]["Environment"]["Variables"]
        assert json.loads(env["LABELS"]) == ["object"]  # cdk.json default
        assert env["TASK_MODE"] == "adjust"
        assert env["PRELABEL_ATTRIBUTE"] == PRELABEL_ATTRIBUTE
        assert env["ELEMENT_NAME"] == "annotatedResult"
        assert "Ref" in env["DATA_BUCKET"]
        assert "FunctionName" not in fn["Properties"]  # CDK names; invoke is granted explicitly
        # Only the policy dependency is declared; the role is already referenced by GetAtt (cfn-lint W3005).
        assert all("ServiceRole" not in dep or "DefaultPolicy" in dep for dep in fn.get("DependsOn", []))


def test_ground_truth_role_is_least_privilege(template_json: dict[str, Any]) -> None:
    role_id, role = _gt_role(template_json)
    assert "ManagedPolicyArns" not in role["Properties"]
    (policy_id,) = _policies_of(template_json, role_id)
    statements = {s["Sid"]: s for s in _statements(template_json, policy_id)}
    assert set(statements) == {
        "ReadImagesAndManifests",
        "WriteJobOutput",
        "LocateObjects",
        "InvokeAnnotationFunctions",
        "JobLogs",
        "JobMetrics",
    }
    for statement in statements.values():
        assert statement["Effect"] == "Allow"
        assert not any(a.endswith(":*") or a == "*" for a in _as_list(statement["Action"]))

    pre_id, _ = _function(template_json, "handlers.pre_annotation.handler")
    post_id, _ = _function(template_json, "handlers.post_annotation.handler")
    invoke = statements["InvokeAnnotationFunctions"]
    assert invoke["Action"] == "lambda:InvokeFunction"
    assert sorted(r["Fn::GetAtt"][0] for r in invoke["Resource"]) == sorted([pre_id, post_id])
    assert all(r["Fn::GetAtt"][1] == "Arn" for r in invoke["Resource"])

    def suffixes(statement: dict[str, Any]) -> set[str]:
        return {r["Fn::Join"][1][-1] for r in _as_list(statement["Resource"])}

    assert statements["ReadImagesAndManifests"]["Action"] == "s3:GetObject"
    assert suffixes(statements["ReadImagesAndManifests"]) == {"/incoming/*", "/work/*"}
    assert statements["WriteJobOutput"]["Action"] == "s3:PutObject"
    assert suffixes(statements["WriteJobOutput"]) == {"/work/labeling-jobs/*"}
    assert statements["JobMetrics"]["Condition"] == {"StringEquals": {"cloudwatch:namespace": "AWS/SageMaker"}}


def test_post_function_reads_only_the_data_bucket_and_describes_jobs(template_json: dict[str, Any]) -> None:
    _, fn = _function(template_json, "handlers.post_annotation.handler")
    role_id = fn["Properties"]["Role"]["Fn::GetAtt"][0]
    (policy_id,) = _policies_of(template_json, role_id)
    actions = {a for s in _statements(template_json, policy_id) for a in _as_list(s["Action"])}
    xray = {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}
    own_logs = {"logs:CreateLogStream", "logs:PutLogEvents"}  # the factory's role writes its own log group
    assert actions == {"s3:GetObject", "sagemaker:DescribeLabelingJob", *xray, *own_logs}
    _, pre = _function(template_json, "handlers.pre_annotation.handler")
    pre_role = pre["Properties"]["Role"]["Fn::GetAtt"][0]
    pre_statements = [s for p in _policies_of(template_json, pre_role) for s in _statements(template_json, p)]
    pre_actions = {a for s in pre_statements for a in _as_list(s["Action"])}
    assert pre_actions <= xray | own_logs  # the pre function touches no data


def test_outputs_are_exported(template_json: dict[str, Any]) -> None:
    outputs = template_json["Outputs"]
    pre_id, _ = _function(template_json, "handlers.pre_annotation.handler")
    post_id, _ = _function(template_json, "handlers.post_annotation.handler")
    role_id, _ = _gt_role(template_json)
    assert outputs["PreAnnotationFunctionArn"]["Value"] == {"Fn::GetAtt": [pre_id, "Arn"]}
    assert outputs["PostAnnotationFunctionArn"]["Value"] == {"Fn::GetAtt": [post_id, "Arn"]}
    assert outputs["GroundTruthRoleArn"]["Value"] == {"Fn::GetAtt": [role_id, "Arn"]}


@pytest.fixture(scope="module")
def pass_role_template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The stack with a stand-in workflow role granted PassRole through the construct's helper."""
    from infra.synth import build_app

    _, stack = build_app(str(tmp_path_factory.mktemp("passrole")), context={"taskMode": "verify"})
    grantee = iam.Role(stack, "WorkflowStandIn", assumed_by=iam.ServicePrincipal("states.amazonaws.com"))
    stack.labeling.grant_pass_role(grantee)
    return Template.from_stack(stack).to_json()


def test_pass_role_is_limited_to_sagemaker(pass_role_template: dict[str, Any]) -> None:
    role_id, _ = _gt_role(pass_role_template)
    grantee_id = next(k for k in _resources(pass_role_template, "AWS::IAM::Role") if k.startswith("WorkflowStandIn"))
    (policy_id,) = _policies_of(pass_role_template, grantee_id)
    (statement,) = _statements(pass_role_template, policy_id)
    assert statement["Action"] == "iam:PassRole"
    assert statement["Resource"] == {"Fn::GetAtt": [role_id, "Arn"]}
    assert statement["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}
    # The task mode from the context reaches both functions.
    for handler in ("handlers.pre_annotation.handler", "handlers.post_annotation.handler"):
        _, fn = _function(pass_role_template, handler)
        assert fn["Properties"]["Environment"]["Variables"]["TASK_MODE"] == "verify"
