"""checkov on the synthesized template: nothing fails that is neither fixed nor skipped with a reason,
in the default configuration and with ``encryption: kms``; the fixes themselves are in the template."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from infra.checkov import SUPPRESSIONS
from labelloop_core import limits

REPO = Path(__file__).resolve().parents[2]
CHECKOV = REPO / ".venv-checkov" / "bin" / "checkov"
# Offline (--skip-download: nothing is fetched from the vendor's platform), CloudFormation checks only.
CHECKOV_ARGS = ("--framework", "cloudformation", "-o", "json", "--quiet", "--compact", "--skip-download")


@pytest.fixture(scope="module")
def template(template_json: dict[str, Any]) -> Template:
    return Template.from_json(template_json)


@pytest.fixture(scope="module")
def kms_template_json(kms_assembly_dir: Path) -> dict[str, Any]:
    return json.loads((kms_assembly_dir / "LabelLoop.template.json").read_text())


def run_checkov(template_path: Path) -> dict[str, Any]:
    """checkov's JSON report for one CloudFormation template (offline: nothing is downloaded)."""
    if not CHECKOV.exists():
        pytest.fail(f"checkov is not installed at {CHECKOV}: run `make setup` (it installs requirements-checkov.txt)")
    result = subprocess.run(
        [str(CHECKOV), "-f", str(template_path), *CHECKOV_ARGS],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    if result.returncode not in (0, 1) or not result.stdout.strip():
        pytest.fail(f"checkov did not run (exit {result.returncode}):\n{result.stderr[-3000:]}")
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def _assert_clean(report: dict[str, Any], template_json: dict[str, Any], label: str, capsys: Any) -> None:
    summary = report["summary"]
    with capsys.disabled():
        print(
            f"\ncheckov {summary['checkov_version']} ({label}): {summary['passed']} passed, "
            f"{summary['failed']} failed, {summary['skipped']} skipped on {summary['resource_count']} resources"
        )
    failed = [f"{f['check_id']} {f['resource']}: {f['check_name']}" for f in report["results"].get("failed_checks", [])]
    assert failed == [], "unanswered checkov findings (fix them, or add a reason to infra/checkov.py):\n" + "\n".join(
        failed
    )
    assert summary["parsing_errors"] == 0
    # Every skip carries a reason a reviewer can judge, and comes from the one table.
    known = {s.rule for s in SUPPRESSIONS}
    for logical_id, resource in template_json["Resources"].items():
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            assert skip["id"] in known, f"{logical_id}: {skip['id']} is not in infra/checkov.py"
            assert len(skip["comment"]) >= 40, f"{logical_id}: {skip['id']} needs a reason"


def test_checkov_finds_nothing_unanswered(
    assembly_dir: Path, template_json: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    report = run_checkov(assembly_dir / "LabelLoop.template.json")
    _assert_clean(report, template_json, "default", capsys)
    assert report["summary"]["skipped"] > 0


def test_checkov_finds_nothing_unanswered_with_kms(
    kms_assembly_dir: Path, kms_template_json: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    report = run_checkov(kms_assembly_dir / "LabelLoop.template.json")
    _assert_clean(report, kms_template_json, "encryption=kms", capsys)
    skipped = {c["check_id"] for c in report["results"].get("skipped_checks", [])}
    assert "CKV_AWS_158" not in skipped  # fixed by the key, not skipped


def test_kms_configuration_passes_cdk_nag(kms_assembly_dir: Path) -> None:
    report_path = kms_assembly_dir / "validation-report.json"
    if report_path.exists():
        report = json.loads(report_path.read_text())
        assert [v for p in report.get("pluginReports", []) for v in p.get("violations", [])] == []


def _key_id(template_json: dict[str, Any]) -> str:
    [key_id] = [k for k, r in template_json["Resources"].items() if r["Type"] == "AWS::KMS::Key"]
    return key_id


def test_queues_and_topic_use_the_stacks_rotated_key(template: Template, template_json: dict[str, Any]) -> None:
    key_id = _key_id(template_json)
    template.has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})
    arn = {"Fn::GetAtt": [key_id, "Arn"]}
    for queue in template.find_resources("AWS::SQS::Queue").values():
        assert queue["Properties"]["KmsMasterKeyId"] == arn
        assert "SqsManagedSseEnabled" not in queue["Properties"]
    for topic in template.find_resources("AWS::SNS::Topic").values():
        assert topic["Properties"]["KmsMasterKeyId"] == arn
    # Services that write without a role of ours may use the key for this account only.
    statements = template_json["Resources"][key_id]["Properties"]["KeyPolicy"]["Statement"]
    [delivery] = [s for s in statements if s.get("Sid") == "EventBridgeAndAlarmsDeliverEncryptedMessages"]
    assert sorted(delivery["Principal"]["Service"]) == ["cloudwatch.amazonaws.com", "events.amazonaws.com"]
    assert "aws:SourceAccount" in delivery["Condition"]["StringEquals"]


def test_default_configuration_keeps_aws_managed_keys_for_buckets_and_logs(template_json: dict[str, Any]) -> None:
    resources = template_json["Resources"].values()
    for bucket in (r for r in resources if r["Type"] == "AWS::S3::Bucket"):
        [rule] = bucket["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert all("KmsKeyId" not in r["Properties"] for r in resources if r["Type"] == "AWS::Logs::LogGroup")


def test_kms_configuration_encrypts_data_bucket_and_every_log_group(kms_template_json: dict[str, Any]) -> None:
    resources = kms_template_json["Resources"]
    arn = {"Fn::GetAtt": [_key_id(kms_template_json), "Arn"]}
    groups = [r for r in resources.values() if r["Type"] == "AWS::Logs::LogGroup"]
    assert groups and all(g["Properties"]["KmsKeyId"] == arn for g in groups)
    algorithms = {}
    for logical_id, bucket in resources.items():
        if bucket["Type"] == "AWS::S3::Bucket":
            [rule] = bucket["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"]
            algorithms[logical_id.split("Storage", 1)[1][:4]] = rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"]
            if rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms":
                assert rule["BucketKeyEnabled"] is True
                assert rule["ServerSideEncryptionByDefault"]["KMSMasterKeyID"] == arn
    # S3 server access logging cannot deliver into an SSE-KMS bucket: the log bucket keeps SSE-S3.
    assert algorithms == {"Data": "aws:kms", "Acce": "AES256"}
    # Every role may use the key (key policy), but only through S3/SQS/SNS; the roles' own policies are untouched.
    key = resources[_key_id(kms_template_json)]
    [statement] = [
        s for s in key["Properties"]["KeyPolicy"]["Statement"] if s.get("Sid") == "StackRolesUseKeyThroughItsServices"
    ]
    assert len(statement["Condition"]["StringEquals"]["kms:ViaService"]) == 3
    principals = {p["Fn::GetAtt"][0] for p in statement["Principal"]["AWS"]}
    assert principals == {k for k, r in resources.items() if r["Type"] == "AWS::IAM::Role"}


def test_asynchronously_invoked_functions_have_an_on_failure_destination(template_json: dict[str, Any]) -> None:
    resources = template_json["Resources"]
    async_functions = {
        r["Properties"]["FunctionName"]["Fn::GetAtt"][0]
        for r in resources.values()
        if r["Type"] == "AWS::Lambda::Permission" and r["Properties"]["Principal"] == "events.amazonaws.com"
    }
    configured = {
        r["Properties"]["FunctionName"]["Ref"]: r["Properties"]["DestinationConfig"]["OnFailure"]["Destination"]
        for r in resources.values()
        if r["Type"] == "AWS::Lambda::EventInvokeConfig"
    }
    assert async_functions and async_functions <= set(configured)
    alarmed = {
        a["Properties"]["Dimensions"][0]["Value"]["Fn::GetAtt"][0]
        for a in resources.values()
        if a["Type"] == "AWS::CloudWatch::Alarm" and a["Properties"].get("Dimensions")
    }
    for function, destination in configured.items():
        assert destination["Fn::GetAtt"][0] in alarmed, f"{function}: its on-failure queue has no alarm"


def _concurrency_skip(resource: dict[str, Any]) -> str | None:
    skips = resource.get("Metadata", {}).get("checkov", {}).get("skip", [])
    return next((s["comment"] for s in skips if s["id"] == "CKV_AWS_115"), None)


def test_no_function_reserves_concurrency_by_default_and_checkov_is_told_why(template_json: dict[str, Any]) -> None:
    functions = [r for r in template_json["Resources"].values() if r["Type"] == "AWS::Lambda::Function"]
    assert functions and all("ReservedConcurrentExecutions" not in f["Properties"] for f in functions)
    for function in functions:
        reason = _concurrency_skip(function)
        assert reason is not None and "labelloop.reservedConcurrency" in reason and "quota 10" in reason


def test_reserved_concurrency_on_reserves_the_export_and_sync_functions(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from infra.synth import synthesize

    context = {
        "reservedConcurrency": True,
        "reviewBackend": "labelstudio",
        "labelStudio": {
            "url": "https://labelstudio.example.com",
            "tokenSecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:labelloop/ls-token-AbC123",
        },
    }
    assembly = synthesize(tmp_path_factory.mktemp("cdk.out.reserved"), context)  # cdk-nag runs: no finding
    resources = json.loads((assembly / "LabelLoop.template.json").read_text())["Resources"]
    reserved = {
        r["Properties"]["Handler"]: r["Properties"]["ReservedConcurrentExecutions"]
        for r in resources.values()
        if r["Type"] == "AWS::Lambda::Function" and "ReservedConcurrentExecutions" in r["Properties"]
    }
    assert reserved == {
        "handlers.export_yolo.handler": limits.EXPORT_RESERVED_CONCURRENCY.default,
        "handlers.review_sync.handler": limits.LABEL_STUDIO_SYNC_RESERVED_CONCURRENCY.default,
    }
    for resource in resources.values():  # fixed where reserved, answered elsewhere
        if resource["Type"] == "AWS::Lambda::Function":
            has_reservation = "ReservedConcurrentExecutions" in resource["Properties"]
            assert (_concurrency_skip(resource) is None) == has_reservation


def test_the_data_bucket_logs_its_access(template: Template) -> None:
    template.has_resource_properties(
        "AWS::S3::Bucket", {"LoggingConfiguration": Match.object_like({"LogFilePrefix": "data/"})}
    )
