"""reviewBackend labelstudio: the sync function, schedule, webhook URL, secrets, and no token anywhere."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from infra.config import ConfigError
from infra.synth import build_app, synthesize

TOKEN_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:labelloop/label-studio-token-AbC123"
CONTEXT = {
    "reviewBackend": "labelstudio",
    "labelStudio": {"url": "https://labelstudio.example.com", "tokenSecretArn": TOKEN_ARN},
    "labels": ["car", "person"],
}


@pytest.fixture(scope="module")
def assembly(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthesize(tmp_path_factory.mktemp("cdk.out.ls"), CONTEXT)


@pytest.fixture(scope="module")
def template(assembly: Path) -> Template:
    return Template.from_json(json.loads((assembly / "LabelLoop.template.json").read_text()))


def _functions(template: Template, handler: str) -> dict[str, Any]:
    return template.find_resources("AWS::Lambda::Function", {"Properties": {"Handler": handler}})


def test_review_functions_get_the_url_and_secret_arn_but_never_a_token(template: Template) -> None:
    for handler in ("handlers.start_review.handler", "handlers.job_event.handler", "handlers.review_sync.handler"):
        (function,) = _functions(template, handler).values()
        variables = function["Properties"]["Environment"]["Variables"]
        assert variables["REVIEW_BACKEND"] == "labelstudio", handler
        assert variables["LABEL_STUDIO_URL"] == "https://labelstudio.example.com"
        assert variables["LABEL_STUDIO_TOKEN_SECRET_ARN"] == TOKEN_ARN
        assert not any("TOKEN" in name and name != "LABEL_STUDIO_TOKEN_SECRET_ARN" for name in variables)
    (start,) = _functions(template, "handlers.start_review.handler").values()
    assert "LABEL_STUDIO_WEBHOOK_URL" in start["Properties"]["Environment"]["Variables"]


def test_the_sync_runs_on_a_schedule_and_behind_a_function_url(template: Template) -> None:
    template.has_resource_properties("AWS::Events::Rule", {"ScheduleExpression": "rate(5 minutes)"})
    template.has_resource_properties("AWS::Lambda::Url", {"AuthType": "NONE"})
    template.has_resource_properties(
        "AWS::SecretsManager::Secret", {"GenerateSecretString": Match.object_like({"PasswordLength": 48})}
    )
    # Only the token secret (its ARN with Secrets Manager's suffix) may be read, not every secret.
    template.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {"Action": Match.array_with(["secretsmanager:GetSecretValue"]), "Resource": TOKEN_ARN}
                        )
                    ]
                )
            }
        },
    )


def test_synth_passes_cfn_lint_and_nag(assembly: Path) -> None:
    report_path = assembly / "validation-report.json"
    if report_path.exists():
        report = json.loads(report_path.read_text())
        assert [v for p in report.get("pluginReports", []) for v in p.get("violations", [])] == []
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("cfn-lint")),
            "--format",
            "parseable",
            str(assembly / "LabelLoop.template.json"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode in (0, 8), result.stdout + result.stderr


def test_ground_truth_stays_the_default_without_label_studio_resources(template_json: dict[str, Any]) -> None:
    default = Template.from_json(template_json)
    assert _functions(default, "handlers.review_sync.handler") == {}
    assert default.find_resources("AWS::Lambda::Url") == {}


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"reviewBackend": "labelstudio"}, "labelStudio.url: required"),
        ({**CONTEXT, "labelStudio": {"url": "https://x", "tokenSecretArn": "my-secret-token"}}, "never the token"),
    ],
)
def test_misconfiguration_fails_synth_with_the_key_and_never_echoes_a_token(
    context: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        build_app(context=context)
    assert "my-secret-token" not in str(info.value)


def test_the_webhook_may_only_queue_a_sweep_of_its_own_function(template: Template) -> None:
    (sync_id,) = _functions(template, "handlers.review_sync.handler")
    statement = {"Action": "lambda:InvokeFunction", "Effect": "Allow", "Resource": {"Fn::GetAtt": [sync_id, "Arn"]}}
    policies = template.find_resources(
        "AWS::IAM::Policy", {"Properties": {"PolicyDocument": {"Statement": [statement]}}}
    )
    (policy,) = policies.values()
    assert [role["Ref"] for role in policy["Properties"]["Roles"]] == [
        template.to_json()["Resources"][sync_id]["Properties"]["Role"]["Fn::GetAtt"][0]
    ]


def test_verify_mode_with_label_studio_synthesizes_the_verify_then_adjust_chain() -> None:
    _, stack = build_app(context={**CONTEXT, "taskMode": "verify"})
    verify = Template.from_stack(stack)
    assert _functions(verify, "handlers.review_stages.handler")
    (start,) = _functions(verify, "handlers.start_review.handler").values()
    assert start["Properties"]["Environment"]["Variables"]["REVIEW_BACKEND"] == "labelstudio"
