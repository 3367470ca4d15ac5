"""Pre-labeling, routing and calibration through the DEPLOYED workflow, for both model backends.

The synthesized stack is deployed into the in-process emulation. Images are dropped into
``incoming/street/``; intake starts one workflow execution per batch: build, pre-label (the
Distributed Map calling the deployed pre-label function per shard), route, the Ground Truth review
through the deployed pre/post-annotation functions, merge, calibrate, announce. The assisting model
is emulated by ``sandbox.model_emulation`` (Rekognition ``DetectCustomLabels`` / SageMaker ``InvokeEndpoint``
answered by a local predictor), so the deployed functions call the real APIs through boto3, and
faults are injected there: a throttle that clears after two calls, a garbage answer.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from labelloop_core.contract import AUTO_ATTRIBUTE, BATCH_REPORT_FILE, META_KEY, OUTPUT_MANIFEST, PRELABEL_ATTRIBUTE
from sandbox.harness import LocalCloud
from sandbox.imagerefs import ImageRef
from sandbox.workforce import Task, WorkerAnswer, worker_id
from tests.intake_images import jpeg

pytestmark = pytest.mark.e2e

LABELS = ["car", "person"]
DATASET = "street"
TEAM_NAME = f"{PRELABEL_ATTRIBUTE}-e2e"
TEAM_ARN = f"arn:aws:sagemaker:us-east-1:123456789012:workteam/private-crowd/{TEAM_NAME}"
REK_ARN = "arn:aws:rekognition:us-east-1:123456789012:project/cars/version/cars.2026-01-01T00.00.00/1700000000000"
ATTR = PRELABEL_ATTRIBUTE


# -- a scene set with known model answers and known truth -----------------------------------------
@dataclass
class Scene:
    """One image: its bytes, what the emulated model answers, and what a careful human would draw."""

    name: str
    data: bytes
    width: int
    height: int
    detections: list[dict[str, Any]]
    truth: list[dict[str, Any]]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def box(label: str, left: int, top: int, width: int, height: int, confidence: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"label": label, "left": left, "top": top, "width": width, "height": height}
    if confidence is not None:
        out["confidence"] = confidence
    return out


def scenes(salt: int = 0) -> list[Scene]:
    """Eight images (distinct bytes per ``salt``): sure ones, an unsure one, an empty one, two for faults."""
    specs = [
        # name, model answer, truth
        ("sure-car.jpg", [box("car", 10, 10, 40, 30, 0.95)], [box("car", 10, 10, 40, 30)]),
        ("sure-two.jpg", [box("car", 5, 5, 20, 20, 0.9), box("person", 60, 10, 20, 40, 0.92)], None),
        ("unsure.jpg", [box("person", 30, 20, 20, 20, 0.4)], [box("person", 30, 20, 20, 10)]),
        ("empty.jpg", [], [box("car", 50, 40, 30, 20)]),
        ("throttled.jpg", [box("car", 20, 20, 30, 30, 0.97)], None),
        ("garbage.jpg", [box("car", 20, 20, 30, 30, 0.97)], [box("car", 20, 20, 30, 30)]),
        ("ok-1.jpg", [box("person", 0, 0, 10, 30, 0.85)], None),
        ("ok-2.jpg", [box("car", 70, 50, 25, 25, 0.88)], None),
    ]
    out = []
    for index, (name, detections, truth) in enumerate(specs):
        width, height = 100 + index, 80  # distinct sizes and colours: distinct bytes
        data = jpeg(width, height + salt, color=(40 + index * 25, 90 + salt, 200 - index * 20))
        truth = [{k: v for k, v in d.items() if k != "confidence"} for d in detections] if truth is None else truth
        out.append(Scene(name, data, width, height + salt, detections, truth))
    return out


@dataclass
class ScenePredictor:
    """The local model: answers by image content (the SageMaker emulation only sees bytes)."""

    by_sha: dict[str, list[dict[str, Any]]]

    def predict(self, image: ImageRef, labels: list[str]) -> list[dict[str, Any]]:
        return [dict(d) for d in self.by_sha.get(image.sha256 or "", [])]


@dataclass
class TransientFaults(dict):  # type: ignore[type-arg]
    """Emulated model faults that clear after ``count`` lookups (a throttle that a retry outlives).

    ``sandbox.model_emulation`` consults ``name in faults`` then ``faults[name]`` once per model call.
    """

    faults: dict[str, tuple[str, int]] = field(default_factory=dict)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.faults.get(name, ("", 0))[1] > 0

    def __getitem__(self, name: str) -> str:
        kind, left = self.faults[name]
        self.faults[name] = (kind, left - 1)
        return kind


@dataclass
class TruthWorkforce:
    """Careful workers: draw the truth for each image, and remember what they were shown."""

    truth_by_sha: dict[str, list[dict[str, Any]]]
    shown: dict[str, Any] = field(default_factory=dict)

    def answer(self, task: Task) -> list[WorkerAnswer]:
        self.shown[(task.image.key or "").rsplit("/", 1)[-1] + f"@{task.image.sha256}"] = task.task_input
        boxes = [dict(b) for b in self.truth_by_sha[task.image.sha256 or ""]]
        return [WorkerAnswer(worker_id(1), boxes)]

    def initial_boxes(self, scene: Scene) -> list[dict[str, Any]]:
        """The pre-labels the worker UI received for ``scene`` (initialValue of the task input)."""
        (task_input,) = [v for k, v in self.shown.items() if k == f"{scene.name}@{scene.sha256}"]
        return sorted(
            ({k: b[k] for k in ("label", "left", "top", "width", "height")} for b in task_input["initialValue"]),
            key=lambda b: (b["left"], b["top"]),
        )


# -- deployment -----------------------------------------------------------------------------------
BASE_CONTEXT: dict[str, Any] = {
    "labels": LABELS,
    "workteamArn": TEAM_ARN,
    "batchWindowSeconds": 0,
    "maxBatchSize": 10,
    "prelabelShardSize": 3,
}


@pytest.fixture(scope="module")
def rekognition_assembly(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from infra.synth import synthesize

    context = {
        **BASE_CONTEXT,
        # A version the emulation answers but does not host (tests/e2e/test_model_lifecycle.py covers
        # starting and stopping): assumed running, as with model.keepRunning.
        "model": {"kind": "rekognition", "projectVersionArn": REK_ARN, "minConfidence": 0.1, "keepRunning": True},
        "autoAcceptThreshold": 0.8,
        "calibration": {"minPairs": 5, "auditFraction": 0.0},
    }
    return synthesize(tmp_path_factory.mktemp("rek"), context=context)


@pytest.fixture(scope="module")
def sagemaker_assembly(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from infra.synth import synthesize

    context = {
        **BASE_CONTEXT,
        "model": {"kind": "sagemaker", "endpointName": "street-detector", "endpointFormat": "builtin"},
        # Hoeffding at 95% needs 10 perfect pairs to clear 0.6: two batches give 10 sure-and-right ones.
        "calibration": {"minPairs": 10, "auditFraction": 0.3},
    }
    return synthesize(tmp_path_factory.mktemp("sm"), context=context)


@pytest.fixture(scope="module")
def ultralytics_assembly(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from infra.synth import synthesize

    context = {
        **BASE_CONTEXT,
        "model": {"kind": "sagemaker", "endpointName": "street-yolo", "endpointFormat": "ultralytics"},
        "autoAcceptThreshold": 0.8,
        "calibration": {"auditFraction": 0.0},
    }
    return synthesize(tmp_path_factory.mktemp("yolo"), context=context)


@contextlib.contextmanager
def ultralytics_endpoint() -> Iterator[None]:
    """Make the emulated endpoint answer like an Ultralytics server: ``results[0].to_json()``, pixel corners.

    Wraps the emulation's InvokeEndpoint (built-in detector rows, normalised) and rewrites a
    successful answer; faults pass through. Restored before the emulation is torn down.
    """
    from moto.sagemakerruntime.responses import SageMakerRuntimeResponse

    from sandbox.imagerefs import image_size

    emulated = SageMakerRuntimeResponse.invoke_endpoint

    def invoke_endpoint(self: Any) -> Any:
        status, headers, body = emulated(self)
        if status != 200:
            return status, headers, body
        try:
            rows = json.loads(body)["prediction"]
        except (ValueError, KeyError, TypeError):
            return status, headers, body  # a garbage fault stays garbage
        raw = getattr(self, "raw_body", None) or self.body
        width, height, _ = image_size(raw if isinstance(raw, bytes) else str(raw).encode("latin-1"))
        results = [
            {
                "name": LABELS[int(cls)],
                "class": int(cls),
                "confidence": score,
                "box": {"x1": x1 * width, "y1": y1 * height, "x2": x2 * width, "y2": y2 * height},
            }
            for cls, score, x1, y1, x2, y2 in rows
        ]
        return status, headers, json.dumps(json.dumps(results))  # the to_json() string, JSON-encoded

    SageMakerRuntimeResponse.invoke_endpoint = invoke_endpoint  # type: ignore[method-assign]
    try:
        yield
    finally:
        SageMakerRuntimeResponse.invoke_endpoint = emulated  # type: ignore[method-assign]


@contextlib.contextmanager
def start(assembly: Path, all_scenes: list[Scene]) -> Iterator[tuple[LocalCloud, TruthWorkforce]]:
    predictor = ScenePredictor({sc.sha256: sc.detections for sc in all_scenes})
    workforce = TruthWorkforce({sc.sha256: sc.truth for sc in all_scenes})
    with LocalCloud.start(
        assembly, predictor=predictor, labels=LABELS, workforce=workforce, esm_mode="manual"
    ) as cloud:
        cloud.client("sagemaker").create_workteam(
            WorkteamName=TEAM_NAME,
            Description="LabelLoop pre-label e2e reviewers",
            MemberDefinitions=[
                {
                    "CognitoMemberDefinition": {
                        "UserPool": "us-east-1_abcdefghi",
                        "UserGroup": "labelers",
                        "ClientId": "abcdefghijklmnopqrstuvwxyz",
                    }
                }
            ],
        )
        yield cloud, workforce


def install_faults(cloud: LocalCloud, batch: list[Scene]) -> None:
    """Two throttles (then fine) for ``throttled.jpg``; a garbage answer, every time, for ``garbage.jpg``."""
    named = {sc.name: sc.sha256 for sc in batch}
    cloud.model_settings.faults = TransientFaults(
        {named["throttled.jpg"]: ("throttle", 2), named["garbage.jpg"]: ("garbage", 1000)}
    )


@dataclass
class BatchRun:
    prefix: str
    report: dict[str, Any]
    output: dict[str, dict[str, Any]]  # by image name
    execution: dict[str, Any]


def run_batch(cloud: LocalCloud, batch: list[Scene], folder: str) -> BatchRun:
    """Drop the images like a user, deliver the intake batch, wait for the workflow to finish."""
    sfn = cloud.client("stepfunctions")
    machine = cloud.state_machine_arn("Workflow")
    before = {e["executionArn"] for e in sfn.list_executions(stateMachineArn=machine)["executions"]}
    for sc in batch:
        cloud.put_bytes(f"incoming/{DATASET}/{folder}/{sc.name}", sc.data, "image/jpeg")
    assert cloud.flush_event_sources() == 1

    def finished() -> dict[str, Any] | None:
        new = [e for e in sfn.list_executions(stateMachineArn=machine)["executions"] if e["executionArn"] not in before]
        return new[0] if len(new) == 1 and new[0]["status"] != "RUNNING" else None

    execution = cloud.wait_for(finished, timeout=180, interval=0.2, message="the batch's workflow execution")
    assert execution["status"] == "SUCCEEDED", cloud.diagnostics()
    data = json.loads(sfn.describe_execution(executionArn=execution["executionArn"])["input"])
    prefix = data["batch_prefix"]
    report = cloud.read_json(f"{prefix}{BATCH_REPORT_FILE}")
    output = by_name(cloud.read_jsonl(f"{prefix}{OUTPUT_MANIFEST}"))
    return BatchRun(prefix, report, output, execution)


def by_name(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {line[META_KEY]["key"].rsplit("/", 1)[-1]: line for line in lines}


def prelabels(line: dict[str, Any]) -> list[dict[str, Any]]:
    """A line's pre-labels as named pixel boxes, sorted like `TruthWorkforce.initial_boxes`."""
    names = line[ATTR + "-metadata"]["class-map"]
    return sorted(
        (
            {"label": names[str(a["class_id"])], **{k: a[k] for k in ("left", "top", "width", "height")}}
            for a in line[ATTR]["annotations"]
        ),
        key=lambda b: (b["left"], b["top"]),
    )


def final_attribute(line: dict[str, Any]) -> str:
    return str(line[META_KEY]["label_attribute"])


# -- tests ------------------------------------------------------------------------------------------
def test_rekognition_backend_through_the_workflow_with_a_fixed_threshold(rekognition_assembly: Path) -> None:
    batch = scenes()
    with start(rekognition_assembly, batch) as (cloud, workforce):
        install_faults(cloud, batch)
        run = run_batch(cloud, batch, "day1")
        out = run.output
        assert len(out) == 8  # every image exactly once

        # pre-labels in the manifest: per-box confidences, image confidence, model, recorded errors
        meta = {name: line[ATTR + "-metadata"] for name, line in out.items()}
        assert meta["sure-two.jpg"]["image-confidence"] == 0.9
        assert sorted(o["confidence"] for o in meta["sure-two.jpg"]["objects"]) == [0.9, 0.92]
        assert meta["sure-two.jpg"]["model"] == f"rekognition:{REK_ARN}"
        assert meta["throttled.jpg"]["attempts"] == 3 and meta["throttled.jpg"]["error"] is None  # recovered
        assert "unusable model answer" in meta["garbage.jpg"]["error"]  # recorded, image kept
        assert out["garbage.jpg"][ATTR]["annotations"] == []
        assert meta["empty.jpg"]["error"] is None and meta["empty.jpg"]["image-confidence"] is None

        # the split at theta = 0.8: confident images accepted, the rest reviewed
        accepted = {n for n, line in out.items() if final_attribute(line) == AUTO_ATTRIBUTE}
        assert accepted == {"sure-car.jpg", "sure-two.jpg", "throttled.jpg", "ok-1.jpg", "ok-2.jpg"}
        for name in accepted:
            auto = out[name][f"{AUTO_ATTRIBUTE}-metadata"]
            assert auto["human-annotated"] == "no" and auto["objects"] == meta[name]["objects"]
        counts = run.report["counts"]
        assert (counts["accepted"], counts["reviewed"]) == (5, 3), run.report
        assert run.report["status"] == "labeled" and run.report["accounted_for"]

        # the reviewed images were shown to the workers with the model's boxes as initial boxes
        scene = {sc.name: sc for sc in batch}
        assert workforce.initial_boxes(scene["unsure.jpg"]) == prelabels(out["unsure.jpg"])
        assert workforce.initial_boxes(scene["unsure.jpg"]) == [box("person", 30, 20, 20, 20)]
        assert workforce.initial_boxes(scene["garbage.jpg"]) == []
        assert workforce.initial_boxes(scene["empty.jpg"]) == []
        assert len(workforce.shown) == 3
        for name in ("unsure.jpg", "empty.jpg", "garbage.jpg"):
            assert out[name][f"{final_attribute(out[name])}-metadata"]["human-annotated"] == "yes"

        # calibration: one usable pair (unsure: the human halved the box), theta stays off
        (pair,) = cloud.read_jsonl(f"work/calibration/{DATASET}/pairs/{out['unsure.jpg'][META_KEY]['batch_id']}.jsonl")
        assert pair["confidence"] == 0.4 and pair["quality"] == pytest.approx(0.5)
        section = run.report["calibration"]
        assert section["pairs_written"] == 1
        assert section["skipped"] == {"model_error": 1, "no_detections": 1, "not_human_annotated": 5}
        assert section["next_threshold"]["theta"] is None and section["next_threshold"]["reason"] == "too_few_pairs"
        # the report lists the model's per-image errors
        prelabel_report = run.report["prelabel"]
        assert prelabel_report["images"] == 8 and prelabel_report["with_detections"] == 6
        assert prelabel_report["errors_by_kind"] == {"unusable model answer": 1}
        assert [e["key"].rsplit("/", 1)[-1] for e in prelabel_report["errors"]] == ["garbage.jpg"]


def test_sagemaker_backend_calibrates_then_auto_accepts_through_the_workflow(sagemaker_assembly: Path) -> None:
    from labelloop_core.calibration import calibration_state, pair_from_row, result_of
    from labelloop_core.hashing import unit_hash

    batches = [scenes(salt) for salt in (0, 1, 2)]
    with start(sagemaker_assembly, [sc for b in batches for sc in b]) as (cloud, workforce):
        # day 1: not calibrated yet -> every image to humans, pairs written
        install_faults(cloud, batches[0])
        first = run_batch(cloud, batches[0], "day1")
        assert (first.report["counts"]["accepted"], first.report["counts"]["reviewed"]) == (0, 8)
        assert first.output["throttled.jpg"][ATTR + "-metadata"]["attempts"] == 3
        assert "unusable model answer" in first.output["garbage.jpg"][ATTR + "-metadata"]["error"]
        assert first.report["calibration"]["pairs_written"] == 6
        assert first.report["calibration"]["next_threshold"]["reason"] == "too_few_pairs"
        assert len(workforce.shown) == 8
        sure_two = next(sc for sc in batches[0] if sc.name == "sure-two.jpg")
        assert workforce.initial_boxes(sure_two) == prelabels(first.output["sure-two.jpg"])
        assert len(workforce.initial_boxes(sure_two)) == 2

        # day 2: more pairs; theta is recomputed from both batches
        install_faults(cloud, batches[1])
        second = run_batch(cloud, batches[1], "day2")
        assert second.report["counts"]["accepted"] == 0
        pairs = [p for k in sorted(cloud.list_keys(f"work/calibration/{DATASET}/pairs/")) for p in cloud.read_jsonl(k)]
        assert len(pairs) == 12 and {p["model"] for p in pairs} == {"sagemaker:street-detector:builtin"}
        # The calibrate function folds each batch into the carried e-processes: replay that here.
        state = calibration_state(0.6, 0.95, 10)
        for day in (first, second):
            batch_id = day.output["sure-car.jpg"][META_KEY]["batch_id"]
            rows = cloud.read_jsonl(f"work/calibration/{DATASET}/pairs/{batch_id}.jsonl")
            state.fold([pair_from_row(r).for_fold(i) for i, r in enumerate(rows)], floor=1.0, batch_id=batch_id)
        expected = result_of(state)
        threshold = cloud.read_json(f"work/calibration/{DATASET}/threshold.json")
        assert threshold["theta"] == expected.theta and expected.theta is not None and expected.theta <= 0.85
        assert threshold["pairs_used"] == 12 and threshold["lower_bound"] == pytest.approx(expected.lower_bound)
        assert threshold["bound"] == "betting" and threshold["batches_folded"] == 2

        # day 3: the calibrated threshold routes; an audit sample of would-be-accepted images is reviewed
        install_faults(cloud, batches[2])
        third = run_batch(cloud, batches[2], "day3")
        image_conf = {sc.name: min(d["confidence"] for d in sc.detections) for sc in batches[2] if sc.detections}
        confident = {n for n, c in image_conf.items() if c >= expected.theta and n != "garbage.jpg"}
        assert {"sure-car.jpg", "sure-two.jpg", "throttled.jpg", "ok-1.jpg", "ok-2.jpg"} <= confident
        audited = {n for n in confident if unit_hash(third.output[n][META_KEY]["key"], "labelloop-audit") < 0.3}
        accepted = {n for n, line in third.output.items() if final_attribute(line) == AUTO_ATTRIBUTE}
        assert accepted == confident - audited
        counts = third.report["counts"]
        assert (counts["accepted"], counts["reviewed"]) == (len(confident - audited), 8 - len(confident - audited))
        for name in audited:
            assert third.output[name][META_KEY]["audit"] is True
        assert third.report["calibration"]["audit_pairs"] == len(audited)
        # the report states the threshold the batch was routed with and the evidence behind it
        used = third.report["calibration"]["threshold_used"]
        assert used["theta"] == expected.theta and used["source"] == "calibrated" and used["pairs_used"] == 12
        assert used["lower_bound"] == pytest.approx(expected.lower_bound)


def test_ultralytics_endpoint_through_the_workflow(ultralytics_assembly: Path) -> None:
    batch = scenes(7)
    with start(ultralytics_assembly, batch) as (cloud, workforce), ultralytics_endpoint():
        install_faults(cloud, batch)
        run = run_batch(cloud, batch, "yolo")
        out = run.output
        meta = {name: line[ATTR + "-metadata"] for name, line in out.items()}
        assert {m["model"] for m in meta.values()} == {"sagemaker:street-yolo:ultralytics"}
        assert "unusable model answer" in meta["garbage.jpg"]["error"]
        assert meta["throttled.jpg"]["attempts"] == 3 and meta["throttled.jpg"]["error"] is None
        for sc in batch:
            if sc.name != "garbage.jpg":  # pixel boxes survive the round trip to the model's own coordinates
                expected = sorted(
                    ({k: d[k] for k in ("label", "left", "top", "width", "height")} for d in sc.detections),
                    key=lambda b: (b["left"], b["top"]),
                )
                assert prelabels(out[sc.name]) == expected, sc.name
        accepted = {n for n, line in out.items() if final_attribute(line) == AUTO_ATTRIBUTE}
        assert accepted == {"sure-car.jpg", "sure-two.jpg", "throttled.jpg", "ok-1.jpg", "ok-2.jpg"}
        assert len(workforce.shown) == 3
