"""The retrain loop in the synthesized template: off by default; when on, its rule, state machine and grants."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from infra.config import ConfigError, parse_config
from labelloop_core import contract
from tests.conftest import shared_assembly

V1 = "arn:aws:rekognition:us-east-1:123456789012:project/street/version/street.2026-01-01/1700000000000"
CONTEXT = {
    "model": {"kind": "rekognition", "projectVersionArn": V1},
    "retrain": {"enabled": True, "minNewLabels": 40, "pollSeconds": 60},
}


@pytest.fixture(scope="module")
def retrain_template() -> dict[str, Any]:
    assembly: Path = shared_assembly(CONTEXT)
    return dict(json.loads((assembly / "LabelLoop.template.json").read_text()))


def _of_type(template: dict[str, Any], kind: str) -> dict[str, Any]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def _definition(template: dict[str, Any]) -> dict[str, Any]:
    machines = {
        k: v for k, v in _of_type(template, "AWS::StepFunctions::StateMachine").items() if k.startswith("Retrain")
    }
    assert len(machines) == 1, sorted(machines)
    parts = next(iter(machines.values()))["Properties"]["DefinitionString"]["Fn::Join"][1]
    return dict(json.loads("".join(p if isinstance(p, str) else "ARN" for p in parts)))


def test_the_loop_is_off_by_default(template_json: dict[str, Any]) -> None:
    assert not [k for k in template_json["Resources"] if k.startswith("Retrain")]
    assert parse_config({}).retrain.enabled is False


def test_an_export_published_event_starts_plan_then_a_paced_advance_loop(retrain_template: dict[str, Any]) -> None:
    rules = [r for r in _of_type(retrain_template, "AWS::Events::Rule").values() if "EventPattern" in r["Properties"]]
    pattern = {"source": [contract.EXPORT_EVENT_SOURCE], "detail-type": [contract.EXPORT_PUBLISHED]}
    assert [r for r in rules if r["Properties"]["EventPattern"] == pattern]
    definition = _definition(retrain_template)
    states = definition["States"]
    assert definition["StartAt"] == "Plan"
    assert states["Plan"]["Parameters"]["action"] == "plan"
    assert states["Train?"]["Choices"][0]["Next"] == "Advance"
    assert states["Advance"]["Next"] == "Decided?" and states["Decided?"]["Default"] == "Pause"
    assert states["Pause"]["Seconds"] == 60 and states["Pause"]["Next"] == "Advance"
    assert states["Advance"]["Catch"][0]["Next"] == "RecordFailure"
    assert states["RecordFailure"]["Parameters"]["action"] == "fail"
    assert definition["TimeoutSeconds"] == 36 * 3600


def test_the_function_may_only_touch_the_stacks_own_project(retrain_template: dict[str, Any]) -> None:
    functions = _of_type(retrain_template, "AWS::Lambda::Function")
    (env,) = [
        f["Properties"]["Environment"]["Variables"]
        for f in functions.values()
        if f["Properties"]["Handler"] == "handlers.retrain.handler"
    ]
    assert env[contract.Env.RETRAIN_PROJECT_NAME] == "LabelLoop-labelloop"
    assert env[contract.Env.RETRAIN_MIN_NEW_LABELS] == "40"
    text = json.dumps(_of_type(retrain_template, "AWS::IAM::Policy"))
    assert "rekognition:StartProjectVersion" in text and "project/LabelLoop-labelloop/version/*" in text
    assert '"rekognition:*"' not in text


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"retrain": {"enabled": True}}, "needs model.kind 'rekognition'"),
        ({**CONTEXT, "retrain": {"enabled": True, "minNewLabels": 0}}, "minNewLabels"),
        ({**CONTEXT, "retrain": {"enabled": True, "backend": "sagemaker"}}, "backend"),
        ({**CONTEXT, "retrain": {"enabled": "yes"}}, "enabled: must be true or false"),
        ({**CONTEXT, "retrain": {"pollSecond": 5}}, "unknown key"),
    ],
)
def test_bad_retrain_settings_fail_synth_naming_the_key(context: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(context)
