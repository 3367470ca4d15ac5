"""The Prelabeling construct in synthesized templates: functions, environment, least-privilege grants.

Synthesized once per model configuration (rekognition, sagemaker) in module-scoped fixtures; the
default-context session template (model kind none) comes from tests/conftest.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Template

from labelloop_core import contract

REK_ARN = "arn:aws:rekognition:us-east-1:123456789012:project/cars/version/cars.2026-01-01T00.00.00/1700000000000"
HANDLERS = ("handlers.prelabel.handler", "handlers.route.handler", "handlers.calibrate.handler")


def synth_with_prelabeling(outdir: Path, context: dict[str, Any]) -> dict[str, Any]:
    """Synthesize the app (``infra.synth.synthesize``) and return its template."""
    from infra.synth import synthesize

    assembly = synthesize(outdir, context=context)
    return json.loads((assembly / "LabelLoop.template.json").read_text())


@pytest.fixture(scope="module")
def rekognition_template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    context = {
        "labels": ["car", "person"],
        "model": {"kind": "rekognition", "projectVersionArn": REK_ARN, "minConfidence": 0.2},
        "autoAcceptThreshold": 0.85,
    }
    return synth_with_prelabeling(tmp_path_factory.mktemp("rek"), context)


@pytest.fixture(scope="module")
def sagemaker_template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    context = {
        "labels": ["car"],
        "model": {"kind": "sagemaker", "endpointName": "Cars-YOLO", "endpointFormat": "ultralytics"},
        "calibration": {"targetQuality": 0.7, "confidenceLevel": 0.9, "minPairs": 50, "auditFraction": 0.1},
    }
    return synth_with_prelabeling(tmp_path_factory.mktemp("sm"), context)


def functions(template: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Handler -> (logical id, properties) for the three pre-label functions."""
    found = {}
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] == "AWS::Lambda::Function" and resource["Properties"].get("Handler") in HANDLERS:
            found[resource["Properties"]["Handler"]] = (logical_id, resource["Properties"])
    assert sorted(found) == sorted(HANDLERS), sorted(found)
    return found


def role_statements(template: dict[str, Any], function_props: dict[str, Any]) -> list[dict[str, Any]]:
    """Every statement of the inline policies attached to the function's role."""
    role_id = function_props["Role"]["Fn::GetAtt"][0]
    statements = []
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::IAM::Policy" and {"Ref": role_id} in resource["Properties"]["Roles"]:
            statements.extend(resource["Properties"]["PolicyDocument"]["Statement"])
    return statements


def actions_of(statements: list[dict[str, Any]]) -> set[str]:
    out: set[str] = set()
    for statement in statements:
        value = statement["Action"]
        out.update([value] if isinstance(value, str) else value)
    return out


def s3_key_patterns(statements: list[dict[str, Any]], action: str) -> set[str]:
    """Key patterns (after the bucket ARN) granted for ``action``."""
    patterns = set()
    for statement in statements:
        actions = [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
        if action not in actions:
            continue
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        for resource in resources:
            join = resource.get("Fn::Join") if isinstance(resource, dict) else None
            if join:
                patterns.add(join[1][-1])
    return patterns


def test_functions_environment_rekognition(rekognition_template: dict[str, Any]) -> None:
    for _, props in functions(rekognition_template).values():
        env = props["Environment"]["Variables"]
        assert json.loads(env["LABELS"]) == ["car", "person"]
        assert env["MODEL_KIND"] == "rekognition" and env["MODEL_ARN"] == REK_ARN
        assert "ENDPOINT_NAME" not in env
        assert float(env["MIN_CONFIDENCE"]) == 0.2 and float(env["AUTO_ACCEPT_THRESHOLD"]) == 0.85
        assert float(env["AUDIT_FRACTION"]) == 0.05 and float(env["TARGET_QUALITY"]) == 0.6
        assert float(env["CONFIDENCE_LEVEL"]) == 0.95 and int(env["MIN_PAIRS"]) == 30
        assert env["CALIBRATION_PREFIX"] == "work/calibration/" and "DATA_BUCKET" in env
        assert props["Architectures"] == ["arm64"] and props["TracingConfig"] == {"Mode": "Active"}
    _, prelabel = functions(rekognition_template)["handlers.prelabel.handler"]
    assert prelabel["Timeout"] == 900 and prelabel["MemorySize"] >= 1024


def test_functions_environment_sagemaker(sagemaker_template: dict[str, Any]) -> None:
    for _, props in functions(sagemaker_template).values():
        env = props["Environment"]["Variables"]
        assert env["MODEL_KIND"] == "sagemaker" and env["ENDPOINT_NAME"] == "Cars-YOLO"
        assert env["ENDPOINT_FORMAT"] == "ultralytics" and "MODEL_ARN" not in env
        assert env["AUTO_ACCEPT_THRESHOLD"] == ""  # off: calibrated threshold (or none)
        assert float(env["AUDIT_FRACTION"]) == 0.1 and float(env["TARGET_QUALITY"]) == 0.7
        assert float(env["CONFIDENCE_LEVEL"]) == 0.9 and int(env["MIN_PAIRS"]) == 50


def test_rekognition_grant_is_on_the_project_version_only(rekognition_template: dict[str, Any]) -> None:
    found = functions(rekognition_template)
    statements = role_statements(rekognition_template, found["handlers.prelabel.handler"][1])
    model = [s for s in statements if "rekognition:DetectCustomLabels" in actions_of([s])]
    assert (
        len(model) == 1 and model[0]["Resource"] == REK_ARN and model[0]["Action"] == "rekognition:DetectCustomLabels"
    )
    assert not any(a.startswith("sagemaker:") for a in actions_of(statements))
    for handler in ("handlers.route.handler", "handlers.calibrate.handler"):
        others = actions_of(role_statements(rekognition_template, found[handler][1]))
        assert not any(a.startswith(("rekognition:", "sagemaker:")) for a in others)


def test_sagemaker_grant_is_on_the_endpoint_only(sagemaker_template: dict[str, Any]) -> None:
    found = functions(sagemaker_template)
    statements = role_statements(sagemaker_template, found["handlers.prelabel.handler"][1])
    model = [s for s in statements if "sagemaker:InvokeEndpoint" in actions_of([s])]
    assert len(model) == 1 and model[0]["Action"] == "sagemaker:InvokeEndpoint"
    arn = model[0]["Resource"]["Fn::Join"][1]
    assert arn[-1] == ":endpoint/cars-yolo"  # IAM matches endpoint ARNs in lower case
    assert not any(a.startswith("rekognition:") for a in actions_of(statements))


def test_default_model_none_grants_no_model_api(template_json: dict[str, Any]) -> None:
    none_template = template_json  # the session's default-context synthesis
    for _, props in functions(none_template).values():
        assert props["Environment"]["Variables"]["MODEL_KIND"] == "none"
        assert not any(
            a.startswith(("rekognition:", "sagemaker:Invoke"))
            for a in actions_of(role_statements(none_template, props))
        )


def test_s3_access_is_scoped_to_prefixes(rekognition_template: dict[str, Any]) -> None:
    found = functions(rekognition_template)
    # Every batch reads the one registry object to pin its model version (listing models/ makes it a 404).
    registry, models = f"/{contract.MODEL_REGISTRY_KEY}", "models/*"
    hosting = f"/{contract.MODEL_HOSTING_PREFIX}*"
    expected = {
        # ... and, with the model lifecycle (Rekognition without keepRunning), renews its batch's lease.
        "handlers.prelabel.handler": (
            {"/work/*", "/incoming/*", registry, hosting},
            {"/work/batches/*", hosting},
            {models},
        ),
        "handlers.route.handler": (
            {"/work/batches/*", "/work/calibration/*", registry},
            {"/work/batches/*"},
            {"work/batches/*", "work/calibration/*", models},
        ),
        "handlers.calibrate.handler": (
            {"/work/batches/*", "/work/calibration/*", registry},
            {"/work/batches/*", "/work/calibration/*"},
            {"work/batches/*", "work/calibration/*", models},
        ),
    }
    for handler, (reads, writes, lists) in expected.items():
        statements = role_statements(rekognition_template, found[handler][1])
        s3_actions = {a for a in actions_of(statements) if a.startswith("s3:")}
        assert s3_actions <= {"s3:GetObject", "s3:PutObject", "s3:ListBucket", "s3:AbortMultipartUpload"}, handler
        assert s3_key_patterns(statements, "s3:GetObject") == reads, handler
        assert s3_key_patterns(statements, "s3:PutObject") == writes, handler
        listed = {
            p for s in statements if s["Action"] == "s3:ListBucket" for p in s["Condition"]["StringLike"]["s3:prefix"]
        }
        assert listed == lists, handler
        assert not any(s["Resource"] == "*" for s in statements if any(a.startswith("s3:") for a in actions_of([s])))


def test_template_assertions_api(sagemaker_template: dict[str, Any]) -> None:
    """The same facts through aws_cdk.assertions (what a reviewer would write)."""
    template = Template.from_json(sagemaker_template)
    template.has_resource_properties(
        "AWS::Lambda::Function", {"Handler": "handlers.route.handler", "Runtime": "python3.14", "Timeout": 300}
    )
    template.has_resource_properties("AWS::Lambda::Function", {"Handler": "handlers.calibrate.handler"})


@pytest.mark.parametrize("which", ["rekognition_template", "sagemaker_template"])
def test_cfn_lint_passes_for_model_configurations(which: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "template.json"
    path.write_text(json.dumps(request.getfixturevalue(which)))
    cmd = [str(Path(sys.executable).with_name("cfn-lint")), "--format", "parseable", str(path)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert result.returncode in (0, 8), result.stdout + result.stderr  # 8 = informational only
