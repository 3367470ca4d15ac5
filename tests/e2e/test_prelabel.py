"""Pre-labeling, routing and calibration in the emulation, for both model backends.

The synthesized stack is deployed into the in-process emulation; the assisting model is emulated by
``sandbox.models`` (Rekognition ``DetectCustomLabels`` / SageMaker ``InvokeEndpoint`` answered by a
local predictor), so the deployed functions call the real APIs through boto3.
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

from sandbox.harness import LocalCloud
from sandbox.imagerefs import ImageRef
from tests.intake_images import jpeg

pytestmark = pytest.mark.e2e

LABELS = ["car", "person"]
DATASET = "street"
REK_ARN = "arn:aws:rekognition:us-east-1:123456789012:project/cars/version/cars.2026-01-01T00.00.00/1700000000000"
ATTR = "labelloop-prelabel"


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

    ``sandbox.models`` consults ``name in faults`` then ``faults[name]`` once per model call.
    """

    faults: dict[str, tuple[str, int]] = field(default_factory=dict)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.faults.get(name, ("", 0))[1] > 0

    def __getitem__(self, name: str) -> str:
        kind, left = self.faults[name]
        self.faults[name] = (kind, left - 1)
        return kind


# -- deployment -----------------------------------------------------------------------------------
def synthesize_with_prelabeling(outdir: Path, context: dict[str, Any]) -> Path:
    """Synthesize the app; add `Prelabeling` when the stack does not compose it (yet)."""
    from infra.constructs.prelabel import Prelabeling
    from infra.synth import build_app

    app, stack = build_app(str(outdir), context)
    if not any(isinstance(c, Prelabeling) for c in stack.node.find_all()):
        Prelabeling(stack, "Prelabeling", config=stack.config, storage=stack.storage, functions=stack.functions)
    return Path(app.synth().directory)


@pytest.fixture(scope="module")
def rekognition_assembly(tmp_path_factory: pytest.TempPathFactory) -> Path:
    context = {
        "labels": LABELS,
        "model": {"kind": "rekognition", "projectVersionArn": REK_ARN, "minConfidence": 0.1},
        "autoAcceptThreshold": 0.8,
        "calibration": {"minPairs": 5, "auditFraction": 0.0},
        "prelabelShardSize": 3,
    }
    return synthesize_with_prelabeling(tmp_path_factory.mktemp("rek") / "cdk.out", context)


@pytest.fixture(scope="module")
def sagemaker_assembly(tmp_path_factory: pytest.TempPathFactory) -> Path:
    context = {
        "labels": LABELS,
        "model": {"kind": "sagemaker", "endpointName": "street-detector", "endpointFormat": "builtin"},
        # Hoeffding at 95% needs 10 perfect pairs to clear 0.6: two batches give 10 sure-and-right ones.
        "calibration": {"minPairs": 10, "auditFraction": 0.0},
        "prelabelShardSize": 3,
    }
    return synthesize_with_prelabeling(tmp_path_factory.mktemp("sm") / "cdk.out", context)


def function_for(cloud: LocalCloud, handler: str) -> str:
    """Physical name of the deployed function running ``handler``."""
    template = cloud.deployment.template
    logical = [
        lid
        for lid, res in template["Resources"].items()
        if res["Type"] == "AWS::Lambda::Function" and res["Properties"].get("Handler") == handler
    ]
    assert len(logical) == 1, logical
    return cloud.deployment.resources[logical[0]]


def invoke(cloud: LocalCloud, handler: str, event: dict[str, Any]) -> Any:
    result = cloud.client("lambda").invoke(FunctionName=function_for(cloud, handler), Payload=json.dumps(event))
    payload = json.loads(result["Payload"].read() or b"null")
    assert "FunctionError" not in result, payload
    return payload


@contextlib.contextmanager
def start(assembly: Path, all_scenes: list[Scene]) -> Iterator[LocalCloud]:
    predictor = ScenePredictor({sc.sha256: sc.detections for sc in all_scenes})
    with LocalCloud.start(assembly, predictor=predictor, labels=LABELS) as cloud:
        yield cloud


def install_faults(cloud: LocalCloud, batch: list[Scene]) -> None:
    """Two throttles (then fine) for ``throttled.jpg``; a garbage answer, every time, for ``garbage.jpg``."""
    named = {sc.name: sc.sha256 for sc in batch}
    cloud.model_settings.faults = TransientFaults(
        {named["throttled.jpg"]: ("throttle", 2), named["garbage.jpg"]: ("garbage", 1000)}
    )


@dataclass
class BatchRun:
    prefix: str
    prelabel: list[dict[str, Any]]
    route: dict[str, Any]
    calibrate: dict[str, Any] | None = None


def run_batch_in_process(cloud: LocalCloud, batch: list[Scene], batch_id: str, shard_size: int = 3) -> BatchRun:
    """Steps 2, 3 and 6 of the workflow with the deployed functions; the review outcome is the truth.

    Images are written where build_manifest puts normalised copies (work/derived/), so no intake
    rule fires; the review step is stood in for by writing the output manifest a careful human
    would produce (Ground Truth's output shape, human-annotated yes).
    """
    from labelloop_core.boxes import Box
    from labelloop_core.classes import ClassRegistry
    from labelloop_core.manifest import bbox_label_line

    bucket = cloud.bucket
    prefix = f"work/batches/{DATASET}/{batch_id}/"
    lines = []
    for sc in batch:
        key = f"work/derived/{DATASET}/{batch_id}/{sc.name}"
        cloud.put_bytes(key, sc.data, "image/jpeg")
        meta = {"dataset": DATASET, "batch_id": batch_id, "key": key, "labeled_key": key}
        lines.append(
            {"source-ref": f"s3://{bucket}/{key}", "labelloop-meta": {**meta, "width": sc.width, "height": sc.height}}
        )
    s3 = cloud.client("s3")
    shard_keys = []
    for start_at in range(0, len(lines), shard_size):
        shard_key = f"{prefix}shards/{start_at // shard_size:05d}.jsonl"
        body = "".join(json.dumps(line) + "\n" for line in lines[start_at : start_at + shard_size])
        s3.put_object(Bucket=bucket, Key=shard_key, Body=body.encode())
        shard_keys.append(shard_key)
    prelabel = [
        invoke(cloud, "handlers.prelabel.handler", {"bucket": bucket, "batch_prefix": prefix, "shard_key": k})
        for k in shard_keys
    ]
    event = {"bucket": bucket, "dataset": DATASET, "batch_id": batch_id, "batch_prefix": prefix}
    routed = invoke(cloud, "handlers.route.handler", event)

    truth = {sc.name: sc.truth for sc in batch}
    attribute = f"labelloop-{DATASET}-{batch_id}"
    registry = ClassRegistry(LABELS)
    output = cloud.read_jsonl(f"{prefix}accepted.manifest")
    for line in cloud.read_jsonl(f"{prefix}review.manifest"):
        name = line["labelloop-meta"]["key"].rsplit("/", 1)[-1]
        boxes = [Box(b["label"], b["left"], b["top"], b["width"], b["height"]) for b in truth[name]]
        size = (line["labelloop-meta"]["width"], line["labelloop-meta"]["height"], 3)
        label = bbox_label_line(line["source-ref"], attribute, size, boxes, registry, True, attribute)
        line.update({k: v for k, v in label.items() if k != "source-ref"})
        line["labelloop-meta"]["label_attribute"] = attribute
        output.append(line)
    body = "".join(json.dumps(line) + "\n" for line in output)
    s3.put_object(Bucket=bucket, Key=f"{prefix}output.manifest", Body=body.encode())
    calibrated = invoke(cloud, "handlers.calibrate.handler", event)
    return BatchRun(prefix, prelabel, routed, calibrated)


def by_name(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {line["labelloop-meta"]["key"].rsplit("/", 1)[-1]: line for line in lines}


# -- tests ------------------------------------------------------------------------------------------
def test_rekognition_backend_fixed_threshold_in_process(rekognition_assembly: Path) -> None:
    batch = scenes()
    with start(rekognition_assembly, batch) as cloud:
        install_faults(cloud, batch)
        run = run_batch_in_process(cloud, batch, "rek-b1")

        assert [p["images"] for p in run.prelabel] == [3, 3, 2]
        assert sum(p["errors"] for p in run.prelabel) == 1  # garbage; the throttle was retried away
        assert sum(p["retries"] for p in run.prelabel) == 2
        prelabeled = by_name(
            [x for k in sorted(cloud.list_keys(f"{run.prefix}prelabeled/")) for x in cloud.read_jsonl(k)]
        )
        assert len(prelabeled) == 8  # every image, none lost
        assert prelabeled["throttled.jpg"][ATTR + "-metadata"]["attempts"] == 3
        assert prelabeled["throttled.jpg"][ATTR + "-metadata"]["error"] is None
        assert "unusable model answer" in prelabeled["garbage.jpg"][ATTR + "-metadata"]["error"]
        assert prelabeled["garbage.jpg"][ATTR]["annotations"] == []
        sure_two = prelabeled["sure-two.jpg"]
        assert sure_two[ATTR + "-metadata"]["image-confidence"] == 0.9
        assert sure_two[ATTR + "-metadata"]["model"] == f"rekognition:{REK_ARN}"
        assert sorted(a["class_id"] for a in sure_two[ATTR]["annotations"]) == [0, 1]

        assert run.route["threshold"] == 0.8 and run.route["threshold_source"] == "fixed"
        accepted = by_name(cloud.read_jsonl(f"{run.prefix}accepted.manifest"))
        review = by_name(cloud.read_jsonl(f"{run.prefix}review.manifest"))
        assert sorted(accepted) == ["ok-1.jpg", "ok-2.jpg", "sure-car.jpg", "sure-two.jpg", "throttled.jpg"]
        assert {n: r["labelloop-meta"]["route_reason"] for n, r in review.items()} == {
            "unsure.jpg": "below_threshold",
            "empty.jpg": "no_detections",
            "garbage.jpg": "model_error",
        }
        assert accepted["sure-car.jpg"]["labelloop-auto-metadata"]["human-annotated"] == "no"

        assert run.calibrate == {
            "pairs_written": 1,
            "pairs_used": 1,
            "theta": None,
            "lower_bound": None,
            "reason": "too_few_pairs",
        }
        (pair,) = cloud.read_jsonl(f"work/calibration/{DATASET}/pairs/rek-b1.jsonl")
        assert pair["key"].endswith("unsure.jpg") and pair["confidence"] == 0.4
        assert pair["quality"] == pytest.approx(0.5)
        report = cloud.read_json(f"{run.prefix}report.json")
        assert report["calibration"]["skipped"]["model_error"] == 1
        assert report["calibration"]["skipped"]["no_detections"] == 1


def test_sagemaker_backend_calibrates_then_auto_accepts_in_process(sagemaker_assembly: Path) -> None:
    from labelloop_core.calibration import CalibrationPair, calibrate

    batches = [scenes(salt) for salt in (0, 1, 2)]
    with start(sagemaker_assembly, [sc for b in batches for sc in b]) as cloud:
        # batch 1: not calibrated -> every image to humans; pairs written
        install_faults(cloud, batches[0])
        first = run_batch_in_process(cloud, batches[0], "sm-b1")
        assert first.route["threshold"] is None and first.route["threshold_source"] == "off"
        assert first.route["accepted"] == 0 and first.route["review"] == 8
        assert sum(p["errors"] for p in first.prelabel) == 1 and sum(p["retries"] for p in first.prelabel) == 2
        assert first.calibrate["pairs_written"] == 6 and first.calibrate["theta"] is None

        # batch 2: more pairs; theta is recomputed from both batches
        install_faults(cloud, batches[1])
        second = run_batch_in_process(cloud, batches[1], "sm-b2")
        assert second.route["accepted"] == 0
        pairs = [p for b in ("sm-b1", "sm-b2") for p in cloud.read_jsonl(f"work/calibration/{DATASET}/pairs/{b}.jsonl")]
        assert len(pairs) == 12 and {p["model"] for p in pairs} == {"sagemaker:street-detector:builtin"}
        expected = calibrate([CalibrationPair(p["confidence"], p["quality"]) for p in pairs], 0.6, 0.95, 10)
        threshold = cloud.read_json(f"work/calibration/{DATASET}/threshold.json")
        assert threshold["theta"] == expected.theta is not None
        assert threshold["pairs_used"] == 12 and threshold["lower_bound"] == pytest.approx(expected.lower_bound)
        assert second.calibrate["theta"] == expected.theta

        # batch 3: the calibrated threshold routes: confident images are accepted, others reviewed
        install_faults(cloud, batches[2])
        third = run_batch_in_process(cloud, batches[2], "sm-b3")
        theta = expected.theta
        assert third.route["threshold"] == theta and third.route["threshold_source"] == "calibrated"
        accepted = by_name(cloud.read_jsonl(f"{third.prefix}accepted.manifest"))
        expected_accepted = {
            sc.name
            for sc in batches[2]
            if sc.detections and sc.name != "garbage.jpg" and min(d["confidence"] for d in sc.detections) >= theta
        }
        assert theta == 0.85 and set(accepted) == expected_accepted
        assert expected_accepted == {"sure-car.jpg", "sure-two.jpg", "throttled.jpg", "ok-1.jpg", "ok-2.jpg"}
        assert third.route["accepted"] + third.route["review"] == 8
