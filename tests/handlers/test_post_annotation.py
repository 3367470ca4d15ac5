"""post_annotation on moto: documented payloads, 1/3/5 workers, every bad-answer case, both modes.

moto has no labeling jobs; the project's Ground Truth emulator (`sandbox.groundtruth`, manual mode:
jobs are registered, never run) answers DescribeLabelingJob so the handler finds the job's input
manifest the way it does on AWS. The job is created from `adapters.groundtruth.labeling_job_request`,
which the emulator validates against the botocore model.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from labelloop_core.classes import ClassRegistry
from labelloop_core.contract import (
    ELEMENT_NAME,
    ISSUES_KEY,
    META_KEY,
    PRELABEL_ATTRIBUTE,
    REVIEW_MANIFEST,
    STATUS_KEY,
    TASK_KEY,
    Env,
)
from labelloop_core.manifest import (
    find_verification_attributes,
    parse_bbox_label,
    parse_verification,
    read_labeled_images,
)
from tests.handlers.aws import BUCKET, REGION, data_bucket, moto_world, set_env

LABELS = ["Car", "Person"]
ELEMENT = ELEMENT_NAME
PRE_ATTR = PRELABEL_ATTRIBUTE
W, H = 1280, 960


def _content(boxes: list[dict[str, Any]] | None, width: Any = W, height: Any = H, element: str = ELEMENT) -> str:
    body: dict[str, Any] = {"boundingBoxes": boxes if boxes is not None else []}
    if width is not None:
        body["inputImageProperties"] = {"width": width, "height": height}
    return json.dumps({element: body})


def _box(label: str, left: float, top: float, width: float, height: float) -> dict[str, Any]:
    return {"label": label, "left": left, "top": top, "width": width, "height": height}


def _prelabel_line(key: str, boxes: list[dict[str, Any]], class_map: dict[str, str] | None = None) -> dict[str, Any]:
    """A manifest line following the shared conventions (pre-labels by class-map, labelloop-meta)."""
    class_map = class_map or {"0": "Car", "1": "Person"}
    ids = {name: int(i) for i, name in class_map.items()}
    return {
        "source-ref": f"s3://{BUCKET}/{key}",
        PRE_ATTR: {
            "image_size": [{"width": W, "height": H, "depth": 3}],
            "annotations": [
                {"class_id": ids[b["label"]], **{k: b[k] for k in ("left", "top", "width", "height")}} for b in boxes
            ],
        },
        f"{PRE_ATTR}-metadata": {
            "objects": [{"confidence": 0.9} for _ in boxes],
            "class-map": class_map,
            "type": "groundtruth/object-detection",
            "human-annotated": "no",
            "creation-date": "2026-11-23T10:00:00.000000",
            "job-name": PRELABEL_ATTRIBUTE,
            "image-confidence": 0.8,
            "model": "test-model",
            "error": None,
        },
        META_KEY: {
            "dataset": "street",
            "batch_id": "b1",
            "key": key,
            "labeled_key": key,
            "width": W,
            "height": H,
        },
    }


class GroundTruthWorld:
    """moto + the emulator's DescribeLabelingJob: jobs with an input manifest, payloads, the handler."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, module: Any) -> None:
        self.s3 = boto3.client("s3", region_name=REGION)
        self.sm = boto3.client("sagemaker", region_name=REGION)
        self.monkeypatch = monkeypatch
        self.module = module
        self.team = self.sm.create_workteam(
            WorkteamName=f"team-{uuid.uuid4().hex[:8]}",
            MemberDefinitions=[
                {"CognitoMemberDefinition": {"UserPool": "us-east-1_abc", "UserGroup": "labelers", "ClientId": "cid"}}
            ],
            Description="test team",
        )["WorkteamArn"]

    def set_env(self, **env: str) -> None:
        for key, value in env.items():
            self.monkeypatch.setenv(key, value)
        self.module.settings.cache_clear()

    def create_job(self, lines: list[dict[str, Any]], bucket: str = BUCKET, name: str | None = None) -> str:
        from adapters.groundtruth import ensure_task_files, labeling_job_request

        name = name or f"job-{uuid.uuid4().hex[:10]}"
        manifest_key = f"work/batches/street/{name}/{REVIEW_MANIFEST}"
        self.s3.put_object(Bucket=bucket, Key=manifest_key, Body="".join(json.dumps(x) + "\n" for x in lines).encode())
        files = ensure_task_files(bucket, "work/groundtruth/", LABELS, "adjust", s3=self.s3)
        request = labeling_job_request(
            job_name=name,
            manifest_uri=f"s3://{bucket}/{manifest_key}",
            output_uri=f"s3://{bucket}/work/labeling-jobs/",
            role_arn="arn:aws:iam::123456789012:role/gt",
            workteam_arn=self.team,
            pre_lambda_arn="arn:aws:lambda:us-east-1:123456789012:function:pre",
            post_lambda_arn="arn:aws:lambda:us-east-1:123456789012:function:post",
            template_uri=files["template_uri"],
            categories_uri=files["categories_uri"],
            label_attribute_name=f"{name}-boxes",
        )
        return str(self.sm.create_labeling_job(**request)["LabelingJobArn"])

    def run(
        self,
        job_arn: str,
        items: list[dict[str, Any]],
        attribute: str = "boxes",
        bucket: str = BUCKET,
        payload_key: str | None = None,
    ) -> list[dict[str, Any]]:
        key = (
            payload_key or f"work/labeling-jobs/{uuid.uuid4().hex}/annotations/consolidation-request/iteration-1/x.json"
        )
        self.s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(items).encode())
        event = {
            "version": "2018-10-16",
            "labelingJobArn": job_arn,
            "labelCategories": LABELS,
            "labelAttributeName": attribute,
            "roleArn": "arn:aws:iam::123456789012:role/gt",
            "payload": {"s3Uri": f"s3://{bucket}/{key}"},
        }
        result = self.module.handler(event, None)
        json.dumps(result, allow_nan=False)  # what Lambda returns must be strict JSON
        return list(result)


def _item(object_id: str, key: str, contents: list[Any]) -> dict[str, Any]:
    return {
        "datasetObjectId": object_id,
        "dataObject": {"s3Uri": f"s3://{BUCKET}/{key}"},
        "annotations": [
            {"workerId": f"private.us-east-1.W{i}", "annotationData": {"content": c}} for i, c in enumerate(contents)
        ],
    }


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[GroundTruthWorld]:
    from handlers import post_annotation
    from sandbox import groundtruth as gt_emulator

    with moto_world(post_annotation):
        gt_emulator.install(gt_emulator.GroundTruthEmulationSettings(mode="manual"))
        post_annotation._JOB_LINES.clear()
        env = {Env.DATA_BUCKET: BUCKET, Env.LABELS: json.dumps(LABELS), Env.TASK_MODE: "adjust"}
        set_env(monkeypatch, env, unset=(Env.PRELABEL_ATTRIBUTE, Env.ELEMENT_NAME))
        data_bucket()
        try:
            yield GroundTruthWorld(monkeypatch, post_annotation)
        finally:
            gt_emulator.uninstall()
            post_annotation._JOB_LINES.clear()


def _label(result: dict[str, Any], attribute: str = "boxes") -> tuple[dict[str, Any], dict[str, Any]]:
    content = result["consolidatedAnnotation"]["content"]
    return content.get(attribute, {}), content[f"{attribute}-metadata"]


def _as_boxes(body: dict[str, Any]) -> list[tuple[int, int, int, int, int]]:
    return [(a["class_id"], a["left"], a["top"], a["width"], a["height"]) for a in body["annotations"]]


# -- documented samples -------------------------------------------------------------------------
def test_documented_request_and_three_worker_payload(world: GroundTruthWorld, contract_fixtures: Path) -> None:
    """The fixture request/payload, replayed in its own bucket; the answer has the documented shape."""
    request = json.loads((contract_fixtures / "post_annotation_request.json").read_text())
    payload = json.loads((contract_fixtures / "post_annotation_payload_3_workers.json").read_text())
    expected = json.loads((contract_fixtures / "post_annotation_response_shape.json").read_text())
    bucket, key = request["payload"]["s3Uri"][5:].split("/", 1)
    world.s3.create_bucket(Bucket=bucket)
    world.set_env(DATA_BUCKET=bucket)
    job_name = request["labelingJobArn"].rsplit("/", 1)[1]
    line = {"source-ref": payload[0]["dataObject"]["s3Uri"]}
    job_arn = world.create_job([line], bucket=bucket, name=job_name)
    assert job_arn == request["labelingJobArn"].replace("444455556666", "123456789012")
    world.s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(payload).encode())
    result = world.module.handler({**request, "labelingJobArn": job_arn}, None)

    assert [r["datasetObjectId"] for r in result] == ["0"]
    attr = request["labelAttributeName"]
    body, meta = _label(result[0], attr)
    exp_body = expected[0]["consolidatedAnnotation"]["content"][attr]
    exp_meta = expected[0]["consolidatedAnnotation"]["content"][f"{attr}-metadata"]
    assert body["image_size"] == exp_body["image_size"]
    # Worker 3 missed the second car: 2 of 3 workers still keep it (strict majority).
    assert _as_boxes(body) == _as_boxes(exp_body)
    assert set(exp_meta) <= set(meta)
    assert meta["class-map"] == {"0": "Car", "1": "Person"}
    assert meta["type"] == "groundtruth/object-detection"
    assert meta["human-annotated"] == "yes"
    assert meta["job-name"] == f"labeling-job/{job_name}"
    assert meta["worker-count"] == 3
    # No pre-labels in the line: the human boxes are an adjustment of "nothing".
    assert meta["adjustment-status"] == "adjusted"
    first, second = (o["confidence"] for o in meta["objects"])
    assert 0.9 < first <= 1.0
    assert 0.6 < second <= 2 / 3 + 1e-9
    assert meta[STATUS_KEY] == "ok" and meta[ISSUES_KEY] == []


# -- 1/3/5 workers ------------------------------------------------------------------------------
CAR = _box("Car", 100, 200, 50, 120)
PERSON = _box("Person", 400, 300, 60, 180)


def test_one_worker_accepting_prelabels_is_unadjusted(world: GroundTruthWorld) -> None:
    job = world.create_job([_prelabel_line("incoming/street/a.jpg", [CAR, PERSON])])
    (result,) = world.run(job, [_item("0", "incoming/street/a.jpg", [_content([CAR, PERSON])])])
    body, meta = _label(result)
    assert _as_boxes(body) == [(0, 100, 200, 50, 120), (1, 400, 300, 60, 180)]
    assert meta["adjustment-status"] == "unadjusted"
    assert [o["confidence"] for o in meta["objects"]] == [1.0, 1.0]
    assert meta["worker-count"] == 1
    assert meta[STATUS_KEY] == "ok"
    assert meta[TASK_KEY] == "adjust"


def test_one_worker_moving_a_box_is_adjusted(world: GroundTruthWorld) -> None:
    job = world.create_job([_prelabel_line("incoming/street/a.jpg", [CAR])])
    moved = _box("Car", 130, 200, 50, 120)
    (result,) = world.run(job, [_item("0", "incoming/street/a.jpg", [_content([moved])])])
    body, meta = _label(result)
    assert _as_boxes(body) == [(0, 130, 200, 50, 120)]
    assert meta["adjustment-status"] == "adjusted"


def test_relabelled_box_is_adjusted_and_class_ids_come_from_the_registry(world: GroundTruthWorld) -> None:
    # The pre-label's class-map numbers classes the other way round: names decide, never positions.
    line = _prelabel_line("incoming/street/a.jpg", [CAR], class_map={"0": "Person", "1": "Car"})
    job = world.create_job([line])
    relabelled = {**CAR, "label": "Person"}
    (result,) = world.run(job, [_item("0", "incoming/street/a.jpg", [_content([relabelled])])])
    body, meta = _label(result)
    assert _as_boxes(body) == [(1, 100, 200, 50, 120)]
    assert meta["class-map"] == {"0": "Car", "1": "Person"}
    assert meta["adjustment-status"] == "adjusted"


def test_three_agreeing_workers_average_and_stay_unadjusted(world: GroundTruthWorld) -> None:
    job = world.create_job([_prelabel_line("incoming/street/a.jpg", [CAR])])
    answers = [
        _content([_box("Car", 99, 199, 50, 120)]),
        _content([_box("Car", 101, 201, 50, 120)]),
        _content([CAR]),
    ]
    (result,) = world.run(job, [_item("0", "incoming/street/a.jpg", answers)])
    body, meta = _label(result)
    assert _as_boxes(body) == [(0, 100, 200, 50, 120)]
    assert meta["adjustment-status"] == "unadjusted"
    assert meta["worker-count"] == 3
    assert meta["objects"][0]["confidence"] > 0.95


def test_three_disagreeing_workers_keep_only_majority_boxes(world: GroundTruthWorld) -> None:
    job = world.create_job([_prelabel_line("incoming/street/a.jpg", [CAR])])
    answers = [
        _content([CAR, PERSON]),  # only this worker saw a person
        _content([CAR]),
        _content([_box("Car", 700, 100, 80, 80)]),  # this one boxed something else entirely
    ]
    (result,) = world.run(job, [_item("0", "incoming/street/a.jpg", answers)])
    body, meta = _label(result)
    assert _as_boxes(body) == [(0, 100, 200, 50, 120)]
    assert meta["rejected-box-count"] == 2
    assert meta["objects"][0]["confidence"] == pytest.approx(2 / 3)
    assert meta["adjustment-status"] == "unadjusted"


def test_five_workers_three_see_a_box_two_see_nothing(world: GroundTruthWorld) -> None:
    job = world.create_job([_prelabel_line("incoming/street/a.jpg", [])])
    answers = [_content([CAR]), _content([]), _content([CAR]), _content([]), _content([CAR])]
    (result,) = world.run(job, [_item("0", "incoming/street/a.jpg", answers)])
    body, meta = _label(result)
    assert _as_boxes(body) == [(0, 100, 200, 50, 120)]
    assert meta["objects"][0]["confidence"] == pytest.approx(0.6)
    assert meta["worker-count"] == 5
    assert meta["adjustment-status"] == "adjusted"


def test_five_workers_majority_sees_nothing(world: GroundTruthWorld) -> None:
    job = world.create_job([_prelabel_line("incoming/street/a.jpg", [CAR])])
    answers = [_content([CAR]), _content([]), _content([CAR]), _content([]), _content([])]
    (result,) = world.run(job, [_item("0", "incoming/street/a.jpg", answers)])
    body, meta = _label(result)
    assert body["annotations"] == [] and meta["objects"] == []
    assert meta["adjustment-status"] == "adjusted"
    assert meta[STATUS_KEY] == "ok"  # an agreed "nothing here" is a real answer


@pytest.mark.parametrize("workers", [1, 3, 5])
def test_empty_answers_are_explicit_background(world: GroundTruthWorld, workers: int) -> None:
    job = world.create_job([_prelabel_line("incoming/street/a.jpg", [])])
    (result,) = world.run(job, [_item("0", "incoming/street/a.jpg", [_content([])] * workers)])
    body, meta = _label(result)
    assert body["annotations"] == []
    assert body["image_size"] == [{"width": W, "height": H, "depth": 3}]
    assert meta["adjustment-status"] == "unadjusted"
    assert meta["worker-count"] == workers
    assert meta[STATUS_KEY] == "ok"


def test_several_objects_in_one_payload(world: GroundTruthWorld) -> None:
    lines = [_prelabel_line(f"incoming/street/{n}.jpg", [CAR]) for n in "abc"]
    job = world.create_job(lines)
    items = [
        _item("0", "incoming/street/a.jpg", [_content([CAR])]),
        _item("1", "incoming/street/b.jpg", ["{not json"]),
        _item("2", "incoming/street/c.jpg", [_content([])]),
    ]
    results = world.run(job, items)
    assert [r["datasetObjectId"] for r in results] == ["0", "1", "2"]
    statuses = [_label(r)[1][STATUS_KEY] for r in results]
    assert statuses == ["ok", "no-usable-answers", "ok"]
    assert [_label(r)[1]["adjustment-status"] for r in (results[0], results[2])] == ["unadjusted", "adjusted"]


def test_object_found_by_source_ref_when_the_id_does_not_match(world: GroundTruthWorld) -> None:
    lines = [_prelabel_line("incoming/street/a.jpg", []), _prelabel_line("incoming/street/b.jpg", [CAR])]
    job = world.create_job(lines)
    (result,) = world.run(job, [_item("7", "incoming/street/b.jpg", [_content([CAR])])])
    assert _label(result)[1]["adjustment-status"] == "unadjusted"


# -- bad answers --------------------------------------------------------------------------------
BAD_ANSWERS: dict[str, tuple[Any, str]] = {
    "bad_json": ('{"annotatedResult": {"boundingBoxes": [', "not valid JSON"),
    "empty_string": ("", "content is empty"),
    "not_an_object": ("[1, 2, 3]", "must be a JSON object"),
    "no_boxes_list": (json.dumps({ELEMENT: {"inputImageProperties": {"width": W, "height": H}}}), "no element"),
    "boxes_not_list": (json.dumps({ELEMENT: {"boundingBoxes": "Car"}}), "must be a list"),
}


@pytest.mark.parametrize("case", sorted(BAD_ANSWERS))
def test_unusable_answer_is_recorded_and_the_other_workers_still_count(world: GroundTruthWorld, case: str) -> None:
    bad, reason = BAD_ANSWERS[case]
    job = world.create_job([_prelabel_line("incoming/street/a.jpg", [CAR])])
    (result,) = world.run(job, [_item("0", "incoming/street/a.jpg", [_content([CAR]), bad, _content([CAR])])])
    body, meta = _label(result)
    assert _as_boxes(body) == [(0, 100, 200, 50, 120)]
    assert meta["worker-count"] == 2
    assert meta[STATUS_KEY] == "repaired"
    (issue,) = meta[ISSUES_KEY]
    assert issue.startswith("private.us-east-1.W1: answer unusable") and reason in issue


def test_missing_annotation_data_is_recorded(world: GroundTruthWorld) -> None:
    job = world.create_job([_prelabel_line("incoming/street/a.jpg", [CAR])])
    item = _item("0", "incoming/street/a.jpg", [_content([CAR])])
    item["annotations"].append({"workerId": "private.us-east-1.W9"})
    (result,) = world.run(job, [item])
    meta = _label(result)[1]
    assert meta["worker-count"] == 1
    assert meta[ISSUES_KEY] == ["private.us-east-1.W9: answer unusable: no annotationData.content"]


REPAIRS: dict[str, tuple[dict[str, Any], tuple[int, int, int, int, int] | None, str]] = {
    "negative_left_is_clipped": (_box("Car", -20, 200, 70, 120), (0, 0, 200, 50, 120), "clipped"),
    "past_right_edge_is_clipped": (_box("Car", 1250, 200, 100, 120), (0, 1250, 200, 30, 120), "clipped"),
    "fully_outside_is_dropped": (_box("Car", 1300, 200, 50, 120), None, "outside_image"),
    "zero_width_is_dropped": (_box("Car", 100, 200, 0, 120), None, "non_positive_size"),
    "negative_height_is_dropped": (_box("Car", 100, 200, 50, -120), None, "non_positive_size"),
    "nan_is_dropped": ({"label": "Car", "left": float("nan"), "top": 1, "width": 5, "height": 5}, None, "non-finite"),
    "infinity_is_dropped": (
        {"label": "Car", "left": 1, "top": 1, "width": float("inf"), "height": 5},
        None,
        "non-finite",
    ),
    "text_coordinate_is_dropped": (_box("Car", "left", 200, 50, 120), None, "non-numeric"),  # type: ignore[arg-type]
    "numeric_strings_are_read": (_box("Car", "100", "200.0", "50", "120"), (0, 100, 200, 50, 120), ""),  # type: ignore[arg-type]
    "unknown_label_is_dropped": (_box("Truck", 100, 200, 50, 120), None, "unknown label 'Truck'"),
    "missing_label_is_dropped": ({"left": 1, "top": 1, "width": 5, "height": 5}, None, "label missing"),
    "label_case_is_repaired": (_box("car ", 100, 200, 50, 120), (0, 100, 200, 50, 120), "matched to 'Car'"),
    "non_object_box_is_dropped": ("Car", None, "not an object"),  # type: ignore[dict-item]
}


@pytest.mark.parametrize("case", sorted(REPAIRS))
def test_bad_boxes_are_repaired_or_dropped_with_a_reason(world: GroundTruthWorld, case: str) -> None:
    raw, expected, reason = REPAIRS[case]
    job = world.create_job([_prelabel_line("incoming/street/a.jpg", [PERSON])])
    content = json.dumps({ELEMENT: {"boundingBoxes": [PERSON, raw], "inputImageProperties": {"width": W, "height": H}}})
    assert ("NaN" in content) == (case == "nan_is_dropped")  # Python writes NaN/Infinity like a sloppy browser
    (result,) = world.run(job, [_item("0", "incoming/street/a.jpg", [content])])
    body, meta = _label(result)
    boxes = _as_boxes(body)
    assert boxes[0] == (1, 400, 300, 60, 180)  # the good box of the same answer survives
    assert boxes[1:] == ([expected] if expected else [])
    assert meta["worker-count"] == 1
    if reason:
        assert meta[STATUS_KEY] == "repaired"
        assert any(reason in issue for issue in meta[ISSUES_KEY]), meta[ISSUES_KEY]
    else:
        assert meta[ISSUES_KEY] == []


def test_renamed_element_is_found(world: GroundTruthWorld) -> None:
    job = world.create_job([_prelabel_line("incoming/street/a.jpg", [CAR])])
    (result,) = world.run(job, [_item("0", "incoming/street/a.jpg", [_content([CAR], element="boxes")])])
    body, meta = _label(result)
    assert _as_boxes(body) == [(0, 100, 200, 50, 120)]
    assert meta[ISSUES_KEY] == ["private.us-east-1.W0: element 'annotatedResult' missing; used 'boxes'"]


def test_all_answers_unusable_gives_flagged_empty_label(world: GroundTruthWorld) -> None:
    job = world.create_job([_prelabel_line("incoming/street/a.jpg", [CAR])])
    (result,) = world.run(job, [_item("0", "incoming/street/a.jpg", ["nope", "[]", json.dumps({"x": 1})])])
    body, meta = _label(result)
    assert body["annotations"] == [] and body["image_size"][0]["width"] == W
    assert meta["human-annotated"] == "yes"
    assert meta["worker-count"] == 0
    assert meta[STATUS_KEY] == "no-usable-answers"
    assert "adjustment-status" not in meta
    assert len(meta[ISSUES_KEY]) == 4
    assert "must not be taken as background" in meta[ISSUES_KEY][-1]


def test_annotations_not_a_list_is_flagged(world: GroundTruthWorld) -> None:
    job = world.create_job([_prelabel_line("incoming/street/a.jpg", [CAR])])
    item = {
        "datasetObjectId": "0",
        "dataObject": {"s3Uri": f"s3://{BUCKET}/incoming/street/a.jpg"},
        "annotations": None,
    }
    (result,) = world.run(job, [item])
    meta = _label(result)[1]
    assert meta[STATUS_KEY] == "no-usable-answers"
    assert "annotations is not a list" in meta[ISSUES_KEY][0]


# -- image size ---------------------------------------------------------------------------------
def test_image_size_from_labelloop_meta_when_answers_lack_it(world: GroundTruthWorld) -> None:
    job = world.create_job([_prelabel_line("incoming/street/a.jpg", [CAR])])
    (result,) = world.run(job, [_item("0", "incoming/street/a.jpg", [_content([CAR], width=None)])])
    body, meta = _label(result)
    assert body["image_size"] == [{"width": W, "height": H, "depth": 3}]
    assert meta[ISSUES_KEY] == []


def test_zero_size_from_answers_is_ignored_for_the_manifest_size(world: GroundTruthWorld) -> None:
    job = world.create_job([_prelabel_line("incoming/street/a.jpg", [CAR])])
    (result,) = world.run(job, [_item("0", "incoming/street/a.jpg", [_content([CAR], width=0, height=0)])])
    body, meta = _label(result)
    assert body["image_size"][0]["width"] == W
    assert any("inputImageProperties" in issue for issue in meta[ISSUES_KEY])


def test_image_size_read_from_the_image_as_last_resort(world: GroundTruthWorld) -> None:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (320, 240), "white").save(buffer, "PNG")
    world.s3.put_object(Bucket=BUCKET, Key="incoming/street/p.png", Body=buffer.getvalue())
    job = world.create_job([{"source-ref": f"s3://{BUCKET}/incoming/street/p.png"}])
    (result,) = world.run(
        job, [_item("0", "incoming/street/p.png", [_content([_box("Car", 300, 10, 50, 50)], width=None)])]
    )
    body, meta = _label(result)
    assert body["image_size"] == [{"width": 320, "height": 240, "depth": 3}]
    assert _as_boxes(body) == [(0, 300, 10, 20, 50)]  # clipped to the real image
    assert meta[ISSUES_KEY] == ["consolidated box[0] (Car) clipped to the image"]


def test_unknown_image_size_gives_flagged_result_without_a_label(world: GroundTruthWorld) -> None:
    world.s3.put_object(Bucket=BUCKET, Key="incoming/street/broken.jpg", Body=b"not an image")
    job = world.create_job([{"source-ref": f"s3://{BUCKET}/incoming/street/broken.jpg"}])
    (result,) = world.run(job, [_item("0", "incoming/street/broken.jpg", [_content([CAR], width=None)])])
    content = result["consolidatedAnnotation"]["content"]
    assert "boxes" not in content
    assert content["boxes-metadata"][STATUS_KEY] == "no-usable-answers"
    assert "image size unknown" in content["boxes-metadata"][ISSUES_KEY][0]


def test_unknown_job_still_consolidates_and_says_what_is_missing(world: GroundTruthWorld) -> None:
    job = "arn:aws:sagemaker:us-east-1:123456789012:labeling-job/never-created"
    (result,) = world.run(job, [_item("0", "incoming/street/a.jpg", [_content([CAR])])])
    body, meta = _label(result)
    assert _as_boxes(body) == [(0, 100, 200, 50, 120)]
    assert "adjustment-status" not in meta
    assert meta[STATUS_KEY] == "repaired"
    assert "input manifest unavailable" in meta[ISSUES_KEY][0]


def test_a_failed_manifest_lookup_is_not_cached(world: GroundTruthWorld) -> None:
    job = "arn:aws:sagemaker:us-east-1:123456789012:labeling-job/created-late"
    items = [_item(str(i), "incoming/street/a.jpg", [_content([CAR])]) for i in range(2)]
    first = world.run(job, items)
    assert all("adjustment-status" not in _label(r)[1] for r in first)
    assert world.create_job([_prelabel_line("incoming/street/a.jpg", [CAR])], name="created-late") == job
    (again,) = world.run(job, items[:1])
    assert _label(again)[1]["adjustment-status"] == "unadjusted"


# -- request validation -------------------------------------------------------------------------
def test_payload_outside_the_data_bucket_is_refused(world: GroundTruthWorld) -> None:
    world.s3.create_bucket(Bucket="someone-else")
    job = world.create_job([_prelabel_line("incoming/street/a.jpg", [CAR])])
    with pytest.raises(ValueError, match="outside the data bucket"):
        world.run(job, [_item("0", "incoming/street/a.jpg", [_content([CAR])])], bucket="someone-else")


def test_payload_must_be_a_list(world: GroundTruthWorld) -> None:
    world.s3.put_object(Bucket=BUCKET, Key="work/labeling-jobs/p.json", Body=b'{"a": 1}')
    event = {
        "labelingJobArn": "arn:aws:sagemaker:us-east-1:123456789012:labeling-job/j",
        "labelAttributeName": "boxes",
        "payload": {"s3Uri": f"s3://{BUCKET}/work/labeling-jobs/p.json"},
    }
    with pytest.raises(ValueError, match="JSON list"):
        world.module.handler(event, None)


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"labelingJobArn": "nope", "labelAttributeName": "a", "payload": {"s3Uri": "s3://data-bucket/x"}}, "ARN"),
        (
            {"labelingJobArn": "arn:aws:sagemaker:r:1:labeling-job/j", "payload": {"s3Uri": "s3://data-bucket/x"}},
            "labelAttributeName",
        ),
        ({"labelingJobArn": "arn:aws:sagemaker:r:1:labeling-job/j", "labelAttributeName": "a", "payload": {}}, "s3Uri"),
    ],
)
def test_malformed_requests_fail_clearly(world: GroundTruthWorld, event: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        world.module.handler(event, None)


def test_missing_environment_names_the_variable(world: GroundTruthWorld) -> None:
    from adapters.groundtruth import SettingsError

    world.monkeypatch.setenv("LABELS", "Car,Person")
    world.module.settings.cache_clear()
    with pytest.raises(SettingsError, match="LABELS"):
        world.module.handler({}, None)


# -- the output reads back as a manifest ----------------------------------------------------------
def test_output_reads_back_with_the_formats_core(world: GroundTruthWorld) -> None:
    lines = [_prelabel_line("incoming/street/a.jpg", [CAR]), _prelabel_line("incoming/street/b.jpg", [PERSON])]
    job = world.create_job(lines)
    items = [
        _item("0", "incoming/street/a.jpg", [_content([CAR, PERSON])]),
        _item("1", "incoming/street/b.jpg", [_content([])]),
    ]
    results = world.run(job, items, attribute="street-boxes")
    output = []
    for line, result in zip(lines, results, strict=True):
        merged = {**line, **result["consolidatedAnnotation"]["content"]}
        # Ground Truth adds its custom-workflow keys to the metadata; readers must cope.
        merged["street-boxes-metadata"].update({"type": "groundTruth/custom", "job_name": "labeling-job/x"})
        output.append(json.dumps(merged))
    parsed = [img for _, _, img in read_labeled_images(output, attribute="street-boxes")]
    assert parsed[0] is not None and parsed[1] is not None
    assert [(b.label, b.left, b.top, b.width, b.height) for b in parsed[0].boxes] == [
        ("Car", 100, 200, 50, 120),
        ("Person", 400, 300, 60, 180),
    ]
    assert parsed[0].adjustment_status == "adjusted" and parsed[0].human_annotated is True
    assert parsed[1].boxes == () and (parsed[1].width, parsed[1].height) == (W, H)
    # The pre-label attribute is still readable next to the new label, by its own class-map.
    pre = parse_bbox_label(json.loads(output[1]), PRE_ATTR, registry=ClassRegistry(LABELS))
    assert [b.label for b in pre.boxes] == ["Person"]


# -- verify mode --------------------------------------------------------------------------------
def _verdict(choice: str | None, comment: str | None = None, both: bool = False) -> str:
    answer: dict[str, Any] = {
        "correct": {"correct": choice == "correct" or both},
        "incorrect": {"incorrect": choice == "incorrect" or both},
    }
    if comment is not None:
        answer["comment"] = comment
    return json.dumps(answer)


@pytest.fixture
def verify_world(world: GroundTruthWorld) -> GroundTruthWorld:
    world.set_env(TASK_MODE="verify")
    return world


def test_verify_one_worker(verify_world: GroundTruthWorld) -> None:
    job = verify_world.create_job([_prelabel_line("incoming/street/a.jpg", [CAR])])
    (result,) = verify_world.run(job, [_item("0", "incoming/street/a.jpg", [_verdict("correct")])], attribute="check")
    value, meta = _label(result, "check")
    assert value["label"] == "correct" and value["votes"] == {"correct": 1, "incorrect": 0}
    assert value["boxes-shown"] == 1
    assert meta["type"] == "groundtruth/label-verification"
    assert meta["class-name"] == "correct" and meta["confidence"] == 1.0
    assert meta["worker-feedback"] == [] and meta["human-annotated"] == "yes"
    assert meta[TASK_KEY] == "verify"
    assert meta[STATUS_KEY] == "ok"


def test_verify_three_workers_majority_and_feedback(verify_world: GroundTruthWorld) -> None:
    job = verify_world.create_job([_prelabel_line("incoming/street/a.jpg", [CAR])])
    answers = [
        _verdict("incorrect", "  The car box is too loose. "),
        _verdict("correct", ""),
        _verdict("incorrect", "missing person"),
    ]
    (result,) = verify_world.run(job, [_item("0", "incoming/street/a.jpg", answers)], attribute="check")
    value, meta = _label(result, "check")
    assert value["label"] == "incorrect"
    assert meta["confidence"] == pytest.approx(2 / 3, abs=1e-6)
    assert meta["worker-feedback"] == [{"comment": "The car box is too loose."}, {"comment": "missing person"}]
    line = {"source-ref": f"s3://{BUCKET}/incoming/street/a.jpg", **result["consolidatedAnnotation"]["content"]}
    assert find_verification_attributes(line) == ["check"]
    parsed = parse_verification(line, "check")
    assert parsed.class_name == "incorrect" and parsed.worker_feedback == (
        "The car box is too loose.",
        "missing person",
    )


def test_verify_tie_resolves_to_incorrect(verify_world: GroundTruthWorld) -> None:
    job = verify_world.create_job([_prelabel_line("incoming/street/a.jpg", [CAR])])
    answers = [_verdict("correct"), _verdict("incorrect"), _verdict(None)]
    (result,) = verify_world.run(job, [_item("0", "incoming/street/a.jpg", answers)], attribute="check")
    value, meta = _label(result, "check")
    assert value["label"] == "incorrect" and meta["confidence"] == 0.5
    assert any("no verdict chosen" in i for i in meta[ISSUES_KEY])
    assert any("split evenly" in i for i in meta[ISSUES_KEY])


def test_verify_five_workers(verify_world: GroundTruthWorld) -> None:
    job = verify_world.create_job([_prelabel_line("incoming/street/a.jpg", [CAR])])
    answers = [_verdict("correct")] * 4 + [_verdict("incorrect", "hmm")]
    (result,) = verify_world.run(job, [_item("0", "incoming/street/a.jpg", answers)], attribute="check")
    value, meta = _label(result, "check")
    assert value["label"] == "correct" and meta["confidence"] == 0.8 and meta["worker-count"] == 5


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("{{", "not valid JSON"),
        (_verdict(None), "no verdict chosen"),
        (_verdict(None, both=True), "both"),
        ("[]", "must be a JSON object"),
    ],
)
def test_verify_bad_answers_never_fail_the_batch(verify_world: GroundTruthWorld, bad: str, reason: str) -> None:
    job = verify_world.create_job([_prelabel_line("incoming/street/a.jpg", [CAR])])
    items = [
        _item("0", "incoming/street/a.jpg", [bad, _verdict("correct")]),
        _item("1", "incoming/street/a.jpg", [bad]),
    ]
    first, second = verify_world.run(job, items, attribute="check")
    value, meta = _label(first, "check")
    assert value["label"] == "correct" and meta[STATUS_KEY] == "repaired"
    assert reason in meta[ISSUES_KEY][0]
    value, meta = _label(second, "check")
    assert value["label"] is None and meta[STATUS_KEY] == "no-usable-answers"
    assert meta["class-name"] is None and meta["confidence"] == 0.0


def test_verify_accepts_a_named_verdict_and_wrapped_output(verify_world: GroundTruthWorld) -> None:
    job = verify_world.create_job([_prelabel_line("incoming/street/a.jpg", [CAR])])
    answers = [
        json.dumps({ELEMENT: "correct"}),
        json.dumps([{"correct": {"on": True}, "incorrect": {"on": False}, "comment": "fine"}]),
    ]
    (result,) = verify_world.run(job, [_item("0", "incoming/street/a.jpg", answers)], attribute="check")
    value, meta = _label(result, "check")
    assert value["votes"] == {"correct": 2, "incorrect": 0}
    assert meta["worker-feedback"] == [{"comment": "fine"}]


def test_each_stage_s_lines_choose_the_task_whatever_the_deployment_mode(world: GroundTruthWorld) -> None:
    """Verify-then-adjust marks each stage's lines (labelloop-meta.task): one deployment runs both jobs."""
    verify_line = _prelabel_line("incoming/street/a.jpg", [CAR])
    verify_line[META_KEY]["task"] = "verify"
    job = world.create_job([verify_line])  # the deployment says adjust (TASK_MODE), the line says verify
    (result,) = world.run(job, [_item("0", "incoming/street/a.jpg", [_verdict("correct")])], attribute="check")
    value, meta = _label(result, "check")
    assert (value["label"], meta[TASK_KEY]) == ("correct", "verify")
    world.set_env(TASK_MODE="verify")
    adjust_line = _prelabel_line("incoming/street/b.jpg", [CAR])
    adjust_line[META_KEY]["task"] = "adjust"
    job = world.create_job([adjust_line])
    (result,) = world.run(job, [_item("0", "incoming/street/b.jpg", [_content([CAR])])], attribute="fix")
    _, meta = _label(result, "fix")
    assert meta[TASK_KEY] == "adjust" and meta["adjustment-status"] == "unadjusted"
