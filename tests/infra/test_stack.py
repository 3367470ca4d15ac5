"""The synthesized stack: storage guarantees, the Lambda factory defaults, cfn-lint and cdk-nag."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

# cfn-lint rules ignored on purpose, with the reason (the one place they are listed).
CFN_LINT_IGNORED: dict[str, str] = {}


@pytest.fixture(scope="module")
def template(template_json: dict[str, Any]) -> Template:
    return Template.from_json(template_json)


def test_synth_writes_template_and_assets(assembly_dir: Path) -> None:
    manifest = json.loads((assembly_dir / "manifest.json").read_text())
    assert "LabelLoop" in manifest["artifacts"]
    assert (assembly_dir / "LabelLoop.template.json").exists()


def test_data_bucket_is_private_encrypted_versioned_and_emits_events(template: Template) -> None:
    template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "VersioningConfiguration": {"Status": "Enabled"},
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
            "BucketEncryption": Match.object_like({"ServerSideEncryptionConfiguration": Match.any_value()}),
            "NotificationConfiguration": {"EventBridgeConfiguration": {"EventBridgeEnabled": True}},
            "CorsConfiguration": {"CorsRules": [Match.object_like({"AllowedMethods": ["GET"]})]},
            "LoggingConfiguration": Match.object_like({"LogFilePrefix": "data/"}),
            "LifecycleConfiguration": {
                "Rules": Match.array_with(
                    [
                        Match.object_like({"Prefix": "work/tmp/", "ExpirationInDays": 7, "Status": "Enabled"}),
                    ]
                )
            },
        },
    )


def test_every_bucket_enforces_tls(template: Template) -> None:
    buckets = template.find_resources("AWS::S3::Bucket")
    policies = template.find_resources("AWS::S3::BucketPolicy")
    assert len(buckets) == 2
    covered = {
        p["Properties"]["Bucket"]["Ref"]
        for p in policies.values()
        if any(
            s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"
            for s in p["Properties"]["PolicyDocument"]["Statement"]
        )
    }
    assert covered == set(buckets)


def test_no_custom_resources_for_notifications_or_log_retention(template: Template) -> None:
    resource_types = {r["Type"] for r in template.to_json()["Resources"].values()}
    assert not any(t.startswith("Custom::") for t in resource_types), resource_types


def test_every_function_follows_the_factory_defaults(template: Template) -> None:
    functions = template.find_resources("AWS::Lambda::Function")
    for logical_id, fn in functions.items():
        props = fn["Properties"]
        assert props["Architectures"] == ["arm64"], logical_id
        assert props["Runtime"].startswith("python3.1"), logical_id
        assert props["LoggingConfig"]["LogFormat"] == "JSON", logical_id
        assert "LogGroup" in props["LoggingConfig"], logical_id
        assert props["TracingConfig"] == {"Mode": "Active"}, logical_id
        assert props["Handler"].startswith("handlers."), logical_id
        role = template.to_json()["Resources"][props["Role"]["Fn::GetAtt"][0]]
        assert "ManagedPolicyArns" not in role["Properties"], f"{logical_id}: no AWS managed policy"
        # Only the policy is a dependency: the role itself is referenced by GetAtt (cfn-lint W3005).
        assert all(dep not in {props["Role"]["Fn::GetAtt"][0]} for dep in fn.get("DependsOn", [])), logical_id
    for group in template.find_resources("AWS::Logs::LogGroup").values():
        assert group["Properties"]["RetentionInDays"] == 30


def test_cfn_lint_passes(assembly_dir: Path) -> None:
    cmd = [str(Path(sys.executable).with_name("cfn-lint")), "--format", "parseable"]
    if CFN_LINT_IGNORED:
        cmd += ["--ignore-checks", *CFN_LINT_IGNORED]
    result = subprocess.run(
        [*cmd, str(assembly_dir / "LabelLoop.template.json")], capture_output=True, text=True, check=False
    )
    # cfn-lint exit codes: bit 2 = error, 4 = warning, 8 = informational.
    assert result.returncode in (0, 8), result.stdout + result.stderr


def test_cdk_nag_reports_nothing_unacknowledged(assembly_dir: Path) -> None:
    report_path = assembly_dir / "validation-report.json"
    if report_path.exists():
        report = json.loads(report_path.read_text())
        violations = [v for p in report.get("pluginReports", []) for v in p.get("violations", [])]
        assert violations == [], violations


def test_missing_workteam_is_a_synth_warning_not_an_error() -> None:
    from aws_cdk.assertions import Annotations as AssertAnnotations

    from infra.synth import build_app

    _, stack = build_app(context={"workteamArn": None})
    AssertAnnotations.from_stack(stack).has_warning("*", Match.string_like_regexp("workteamArn is not set"))
