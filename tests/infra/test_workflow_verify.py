"""``taskMode: verify`` in the synthesized template: verify-then-adjust chained in one state machine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.infra.test_workflow import REVIEW_WAIT_PATH, _definition, _function_id, _policy_statements

WORKTEAM = "arn:aws:sagemaker:us-east-1:123456789012:workteam/private-crowd/reviewers"


@pytest.fixture(scope="module")
def verify_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from infra.synth import synthesize  # nag runs: synth fails on unacknowledged findings

    return synthesize(tmp_path_factory.mktemp("verify.out"), context={"taskMode": "verify", "workteamArn": WORKTEAM})


@pytest.fixture(scope="module")
def verify_json(verify_dir: Path) -> dict[str, Any]:
    return dict(json.loads((verify_dir / "LabelLoop.template.json").read_text()))


def test_verify_then_adjust_chain(verify_json: dict[str, Any]) -> None:
    states = _definition(verify_json)["States"]
    assert states["NeedsReview?"]["Choices"][0]["Next"] == "PlanReviewStages"
    assert states["PlanReviewStages"]["Parameters"]["action"] == "plan"
    assert states["PlanReviewStages"]["Next"] == "NeedsVerify?"
    assert states["NeedsVerify?"]["Choices"][0] == {
        "Variable": "$.stages.verify",
        "NumericGreaterThan": 0,
        "Next": "StartVerify",
    }
    assert states["NeedsVerify?"]["Default"] == "SkipVerify"  # an empty stage creates no job
    assert states["VerifyDone?"]["Choices"][0]["Next"] == "SplitVerdicts"
    assert states["SkipVerify"]["Next"] == "SplitVerdicts"
    split = states["SplitVerdicts"]
    assert split["Parameters"]["action"] == "split"
    assert split["Parameters"]["verify.$"] == "$.verify"
    assert split["Next"] == "NeedsAdjust?"
    assert states["NeedsAdjust?"]["Choices"][0]["Variable"] == "$.stages.adjust"
    assert states["NeedsAdjust?"]["Default"] == "SkipAdjust"
    assert states["AdjustDone?"]["Choices"][0]["Next"] == "Merge"
    merge = states["Merge"]["Parameters"]
    assert (merge["verify.$"], merge["stages.$"], merge["review.$"]) == ("$.verify", "$.stages", "$.review")
    assert "StartReview" not in states


@pytest.mark.parametrize(("stage", "result"), [("Verify", "$.verify"), ("Adjust", "$.review")])
def test_both_waits_are_event_driven_and_reconciled(verify_json: dict[str, Any], stage: str, result: str) -> None:
    states = _definition(verify_json)["States"]
    start = states[f"Start{stage}"]
    assert start["Resource"].endswith(":states:::lambda:invoke.waitForTaskToken")
    assert start["Parameters"]["Payload"]["stage"] == stage.lower()
    assert start["TimeoutSecondsPath"] == REVIEW_WAIT_PATH
    assert start["ResultPath"] == result
    assert start["Catch"][0]["Next"] == f"Reconcile{stage}"
    assert start["Catch"][-1]["Next"] == "RecordFailure"  # a failed or stopped job ends the batch
    reconcile = states[f"Reconcile{stage}"]["Parameters"]
    assert (reconcile["action"], reconcile["stage"]) == ("reconcile", stage.lower())
    assert states[f"{stage}Done?"]["Default"] == f"Start{stage}"


def test_every_path_to_merge_sets_the_verify_stage(verify_json: dict[str, Any]) -> None:
    states = _definition(verify_json)["States"]
    assert states["SkipReview"]["Next"] == "NoVerify" and states["NoVerify"]["Next"] == "NoStages"
    assert states["NoStages"]["Next"] == "Merge"
    nothing = states["NothingToLabel"]["Parameters"]
    assert nothing["verify"] == {"status": "skipped"} and nothing["stages"] == {}


def test_review_stages_function_is_scoped(verify_json: dict[str, Any]) -> None:
    function_id = _function_id(verify_json, "handlers.review_stages.handler")
    actions = {a for s in _policy_statements(verify_json, function_id) for a in _as_list(s["Action"])}
    assert "s3:GetObject" in actions and "s3:PutObject" in actions
    assert not any(a.startswith("sagemaker:") or a == "s3:DeleteObject" for a in actions)
    merge_env = verify_json["Resources"][_function_id(verify_json, "handlers.merge.handler")]["Properties"]
    assert merge_env["Environment"]["Variables"]["TASK_MODE"] == "verify"


def test_adjust_mode_has_no_stage_function(template_json: dict[str, Any]) -> None:
    handlers = {
        r["Properties"].get("Handler")
        for r in template_json["Resources"].values()
        if r["Type"] == "AWS::Lambda::Function"
    }
    assert "handlers.review_stages.handler" not in handlers


def test_cfn_lint_passes_in_verify_mode(verify_dir: Path) -> None:
    from tests.infra.test_stack import CFN_LINT_IGNORED

    cmd = [str(Path(sys.executable).with_name("cfn-lint")), "--format", "parseable"]
    if CFN_LINT_IGNORED:
        cmd += ["--ignore-checks", *CFN_LINT_IGNORED]
    result = subprocess.run([*cmd, str(verify_dir / "LabelLoop.template.json")], capture_output=True, text=True)
    assert result.returncode in (0, 8), result.stdout + result.stderr


def _as_list(value: Any) -> list[str]:
    return value if isinstance(value, list) else [value]
