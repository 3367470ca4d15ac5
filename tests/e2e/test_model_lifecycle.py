"""`labelloop local run --model learn --waves 2` on a few images: the running Rekognition version is stopped
by the idle sweep after wave 1 and started on demand by wave 2's batches, then stopped again; accounting
stays exact, and faults injected into the hosting calls change no outcome. A start that fails fails its
batch with the reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cli.main import main
from labelloop_core.contract import RUN_REPORT_FILE
from sandbox import rekognition_training
from sandbox.scenes import generate_scenes

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

IMAGES = 6
LABELS = "bicycle,car,person"
FAULTS = ["rekognition:StartProjectVersion:0.5", "rekognition:StopProjectVersion:0.5"]
FAULTS += ["rekognition:DescribeProjectVersions:0.3"]


def _run(root: Path, extra: list[str]) -> tuple[int, dict[str, Any], list[dict[str, Any]]]:
    truth = generate_scenes(root / "images", IMAGES, LABELS.split(","), seed=3)
    out = root / "out"
    argv = ["local", "run", "--images", str(truth.parent), "--out", str(out), "--model", "learn"]
    argv += ["--waves", "2", "--reviewer", f"oracle:{truth}", "--labels", LABELS, *extra]
    code = main(argv)
    calls = [c for c in rekognition_training.SETTINGS.calls if c["api"].endswith("ProjectVersion")]
    return code, json.loads((out / RUN_REPORT_FILE).read_text()), calls


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict[str, Any], list[dict[str, Any]]]:
    return _run(tmp_path_factory.mktemp("lifecycle"), [])


@pytest.fixture(scope="module")
def faulted(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict[str, Any], list[dict[str, Any]]]:
    extra = [arg for rule in FAULTS for arg in ("--inject-faults", rule)]
    return _run(tmp_path_factory.mktemp("lifecycle-faults"), [*extra, "--seed", "4"])


def _accounted(report: dict[str, Any]) -> None:
    assert report["images_received"] == IMAGES
    assert report["images_received"] == len(report["rejected"]) + report["auto_accepted"] + report["human_reviewed"]
    assert report["exported_images"] == report["auto_accepted"] + report["human_reviewed"] == IMAGES
    assert all(b["status"] == "labeled" for b in report["batches"]), report["batches"]


def test_a_stopped_model_is_started_on_demand_and_stopped_after_idle(clean):
    code, report, calls = clean
    assert code == 0, report["problems"]
    _accounted(report)
    hosting = report["model_hosting"]["versions"]
    assert list(hosting) == ["v1"]  # too few labels to train: v1 only
    v1 = hosting["v1"]
    # Wave 1 found it running (deployed so); the sweep stopped it; wave 2 started it; the sweep stopped it.
    assert [i["source"] for i in v1["intervals"]] == ["observed", "started"]
    assert v1["starts"] == 1 and v1["stops"] == 2 and v1["held_by"] == [] and v1["last_start_error"] is None
    assert all(i["min_units"] == 1 for i in v1["intervals"])
    assert 0 < v1["running_hours"] < 1 and v1["unit_hours"] == v1["running_hours"]
    # The emulated service saw exactly the starts and stops LabelLoop recorded (one start for wave 2's batches).
    assert [c["api"] for c in calls].count("StartProjectVersion") == 1
    assert [c["api"] for c in calls].count("StopProjectVersion") == 2
    # Every batch pre-labeled with a RUNNING model: no image got a model error.
    assert report["model_errors"] == []
    assert len(report["waves"]) == 2


def test_faults_in_the_hosting_calls_change_no_outcome(clean, faulted):
    code, report, _ = faulted
    assert code == 0, report["problems"]
    _accounted(report)
    v1 = report["model_hosting"]["versions"]["v1"]
    assert v1["stops"] == len(v1["intervals"]) and v1["held_by"] == []
    assert report["auto_accepted"] == clean[1]["auto_accepted"]
    assert report["human_reviewed"] == clean[1]["human_reviewed"]
    assert report["model_errors"] == []
    assert "ProjectVersion" in json.dumps(report["faults"]["injected"]), report["faults"]


def test_a_start_that_fails_fails_the_batch_with_the_reason(tmp_path: Path) -> None:
    """The emulated version ends its start FAILED: the deployed workflow fails the batch (no retried start),
    its report.json names the service's message, and the batch's lease is given back."""
    from infra.synth import synthesize
    from labelloop_core.contract import BATCH_REPORT_FILE, hosting_key
    from sandbox import rekognition_hosting
    from sandbox.harness import LocalCloud
    from sandbox.learned_detector import LearnedDetector
    from tests.intake_images import jpeg

    arn = "arn:aws:rekognition:us-east-1:123456789012:project/cars/version/cars.v1/1700000000000"
    model = {"kind": "rekognition", "projectVersionArn": arn, "idleMinutes": 0.05, "startPollSeconds": 1}
    assembly = synthesize(tmp_path / "cdk.out", context={"labels": ["car"], "model": model, "batchWindowSeconds": 1})
    with LocalCloud.start(assembly, labels=["car"], esm_mode="manual") as cloud:
        rekognition_hosting.seed_version(
            "123456789012", "us-east-1", "cars", "cars.v1", LearnedDetector(), arn=arn, status="STOPPED"
        )
        rekognition_training.SETTINGS.faults["cars.v1"] = "start_failed"
        for index in range(2):
            cloud.put_bytes(f"incoming/street/car-{index}.jpg", jpeg(80 + index, 80), "image/jpeg")
        assert cloud.flush_event_sources() == 1
        sfn = cloud.client("stepfunctions")
        machine = cloud.state_machine_arn("Workflow")

        def ended() -> dict[str, Any] | None:
            found = sfn.list_executions(stateMachineArn=machine)["executions"]
            return found[0] if found and found[0]["status"] != "RUNNING" else None

        execution = cloud.wait_for(ended, timeout=120, interval=0.2, message="the batch's execution")
        assert execution["status"] == "FAILED"
        [report_key] = [k for k in cloud.list_keys("work/batches/street/") if k.endswith(BATCH_REPORT_FILE)]
        report = cloud.read_json(report_key)
        assert report["status"] == "failed"
        assert "ModelStartFailed" in json.dumps(report) and "could not be started (emulated fault)" in json.dumps(
            report
        )
        hosting = cloud.read_json(hosting_key("v1"))
        assert hosting["holders"] == {} and hosting["start"] is None
        starts = [c for c in rekognition_training.SETTINGS.calls if c["api"] == "StartProjectVersion"]
        assert len(starts) == 1  # a start that cannot succeed is not retried
