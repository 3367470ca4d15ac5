"""``retrain.backend: sagemaker`` in the synthesized template: the execution role, the function's scoped grants,
PassRole only to SageMaker, the state machine; cdk-nag (at synth), cfn-lint and checkov stay clean."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from labelloop_core import contract
from labelloop_core.contract import Env
from tests.conftest import shared_assembly
from tests.infra.test_checkov import _assert_clean, run_checkov

IMAGE = "111122223333.dkr.ecr.us-east-1.amazonaws.com/labelloop/yolo:1"
CONTEXT = {
    "model": {"kind": "sagemaker", "endpointName": "Street-Detector", "endpointFormat": "ultralytics"},
    "retrain": {
        "enabled": True,
        "backend": "sagemaker",
        "trainingImage": IMAGE,
        "spot": True,
        "hyperparameters": {"epochs": "40"},
        "maxRuntimeHours": 6,
    },
}


@pytest.fixture(scope="module")
def assembly() -> Path:
    return shared_assembly(CONTEXT)  # cdk-nag runs at synth: any unanswered finding fails it


@pytest.fixture(scope="module")
def template_json(assembly: Path) -> dict[str, Any]:
    return dict(json.loads((assembly / "LabelLoop.template.json").read_text()))


@pytest.fixture(scope="module")
def template(template_json: dict[str, Any]) -> Template:
    return Template.from_json(template_json)


def _of_type(template_json: dict[str, Any], kind: str) -> dict[str, Any]:
    return {k: v for k, v in template_json["Resources"].items() if v["Type"] == kind}


def _statements(template_json: dict[str, Any], role_id: str) -> list[dict[str, Any]]:
    out = []
    for policy in _of_type(template_json, "AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            out += policy["Properties"]["PolicyDocument"]["Statement"]
    return out


def _role_of(template_json: dict[str, Any], handler: str) -> str:
    (fn,) = [
        f for f in _of_type(template_json, "AWS::Lambda::Function").values() if f["Properties"]["Handler"] == handler
    ]
    return str(fn["Properties"]["Role"]["Fn::GetAtt"][0])


def _execution_role(template_json: dict[str, Any]) -> str:
    roles = [
        k
        for k, r in _of_type(template_json, "AWS::IAM::Role").items()
        if "sagemaker.amazonaws.com" in json.dumps(r["Properties"]["AssumeRolePolicyDocument"])
        and k.startswith("RetrainSageMaker")
    ]
    assert len(roles) == 1, roles
    return roles[0]


def test_the_execution_role_is_trusted_by_sagemaker_only_and_reads_what_training_needs(
    template: Template, template_json: dict[str, Any]
) -> None:
    role = _execution_role(template_json)
    trust = template_json["Resources"][role]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert [s["Principal"] for s in trust] == [{"Service": "sagemaker.amazonaws.com"}]
    statements = _statements(template_json, role)
    text = json.dumps(statements)
    assert "repository/labelloop/yolo" in text and "111122223333" in text  # the training image's repository only
    writes = [s for s in statements if "s3:PutObject" in s["Action"]]
    assert len(writes) == 1 and contract.MODEL_OUTPUT_PREFIX in json.dumps(writes[0]["Resource"])
    assert '"s3:*"' not in text and '"sagemaker:*"' not in text


def test_the_function_passes_that_role_to_sagemaker_only(template_json: dict[str, Any]) -> None:
    statements = _statements(template_json, _role_of(template_json, "handlers.retrain.handler"))
    (passrole,) = [s for s in statements if s["Action"] == "iam:PassRole"]
    assert passrole["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}
    assert passrole["Resource"] == {"Fn::GetAtt": [_execution_role(template_json), "Arn"]}


def test_the_function_touches_only_the_stacks_names_and_the_configured_endpoint(template_json: dict[str, Any]) -> None:
    statements = _statements(template_json, _role_of(template_json, "handlers.retrain.handler"))
    by_action: dict[str, str] = {}
    for s in statements:
        for action in [s["Action"]] if isinstance(s["Action"], str) else s["Action"]:
            by_action[action] = by_action.get(action, "") + json.dumps(s["Resource"])
    assert "training-job/labelloop-labelloop-*" in by_action["sagemaker:CreateTrainingJob"]
    assert "model/labelloop-labelloop-*" in by_action["sagemaker:CreateModel"]
    assert "endpoint-config/labelloop-labelloop-*" in by_action["sagemaker:CreateEndpointConfig"]
    for action in ("sagemaker:UpdateEndpoint", "sagemaker:DescribeEndpoint", "sagemaker:InvokeEndpoint"):
        assert "endpoint/street-detector" in by_action[action], action
    assert not any(a.startswith("rekognition:") for a in by_action)  # the other backend's grants are not there
    assert "sagemaker:*" not in by_action and "sagemaker:DeleteEndpoint" not in by_action


def test_the_function_knows_the_training_settings(template: Template) -> None:
    template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Handler": "handlers.retrain.handler",
            "Environment": {
                "Variables": Match.object_like(
                    {
                        Env.RETRAIN_BACKEND: "sagemaker",
                        Env.RETRAIN_TRAINING_IMAGE: IMAGE,
                        Env.RETRAIN_SPOT: "true",
                        Env.RETRAIN_MAX_RUNTIME_HOURS: "6",
                        Env.RETRAIN_HYPERPARAMETERS: '{"epochs": "40"}',
                        Env.RETRAIN_INSTANCE_TYPE: "ml.g4dn.xlarge",
                        Env.RETRAIN_EXECUTION_ROLE_ARN: Match.any_value(),
                        Env.ENDPOINT_NAME: "Street-Detector",
                    }
                )
            },
        },
    )


def test_the_retrain_state_machine_is_there(template_json: dict[str, Any]) -> None:
    machines = [k for k in _of_type(template_json, "AWS::StepFunctions::StateMachine") if k.startswith("Retrain")]
    assert len(machines) == 1
    text = json.dumps(template_json["Resources"][machines[0]]["Properties"]["DefinitionString"])
    assert '\\"action\\":\\"advance\\"' in text.replace(" ", "")


def test_cfn_lint_and_checkov_pass(
    template_json: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "template.json"
    path.write_text(json.dumps(template_json))
    cmd = [str(Path(sys.executable).with_name("cfn-lint")), "--format", "parseable", str(path)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert result.returncode in (0, 8), result.stdout + result.stderr
    _assert_clean(run_checkov(path), template_json, "retrain sagemaker", capsys)
