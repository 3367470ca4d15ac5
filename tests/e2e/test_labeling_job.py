"""A Ground Truth labeling job in the emulation, through LabelLoop's DEPLOYED pre/post functions.

The stack is synthesized with labels ``car, person`` and deployed into the in-process emulation;
the job request comes from `adapters.groundtruth` (task files written by `ensure_task_files`), the
functions and the Ground Truth role come from the stack outputs, emulated workers answer, and the
output manifest is read back with `labelloop_core.manifest`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from labelloop_core.contract import OUTPUT_MANIFEST, PRELABEL_ATTRIBUTE, REVIEW_MANIFEST, STATUS_KEY
from labelloop_core.manifest import LabeledImage, read_labeled_images
from labelloop_core.matching import iou
from sandbox.harness import LocalCloud
from sandbox.workforce import AcceptPrelabels, Oracle
from tests.e2e.gt_jobs import create_workteam, job_request, png, prelabeled_line

pytestmark = pytest.mark.e2e

LABELS = ["car", "person"]
W, H = 320, 240
IMAGE_DIR = "work/e2e-labeling/images/"  # outside incoming/: the intake pipeline must not pick these up


@pytest.fixture(scope="module")
def car_person_assembly(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from infra.synth import synthesize

    return synthesize(tmp_path_factory.mktemp("labeling-e2e"), context={"labels": LABELS})


@pytest.fixture
def start(car_person_assembly: Path) -> Iterator[Callable[..., LocalCloud]]:
    import contextlib

    with contextlib.ExitStack() as stack:

        def run(**kwargs: Any) -> LocalCloud:
            return stack.enter_context(LocalCloud.start(car_person_assembly, **kwargs))

        yield run


def _line(cloud: LocalCloud, name: str, prelabels: list[dict[str, Any]] | None, **meta: Any) -> dict[str, Any]:
    """A review-manifest line following the shared conventions; the model numbered classes its own way."""
    model_ids = {"person": 0, "car": 1}  # reversed against LABELS on purpose: names decide
    return prelabeled_line(
        cloud, f"{IMAGE_DIR}{name}", png(W, H), prelabels, model_ids, batch_id="b1", width=W, height=H, meta=meta
    )


def _run_job(cloud: LocalCloud, lines: list[dict[str, Any]], workers: int) -> tuple[dict[str, Any], str, list[Any]]:
    """Create the job the way the workflow does, wait for it, return (description, attribute, output lines)."""
    bucket = cloud.bucket
    name = f"street-b1-{uuid.uuid4().hex[:8]}"
    request = job_request(
        cloud,
        job_name=name,
        manifest_key=f"work/batches/street/{name}/{REVIEW_MANIFEST}",
        lines=lines,
        labels=LABELS,
        workteam_arn=create_workteam(cloud, f"labelers-{name}"),
        workers_per_object=workers,
    )
    sm = cloud.client("sagemaker")
    sm.create_labeling_job(**request)

    def done() -> dict[str, Any] | None:
        described = sm.describe_labeling_job(LabelingJobName=name)
        return described if described["LabelingJobStatus"] not in ("InProgress", "Stopping") else None

    described = cloud.wait_for(done, timeout=60, message=f"labeling job {name}")
    assert described["LabelingJobStatus"] == "Completed", (described.get("FailureReason"), cloud.diagnostics())
    output_uri = described["LabelingJobOutput"]["OutputDatasetS3Uri"]
    assert output_uri == f"s3://{bucket}/work/labeling-jobs/{name}/manifests/output/{OUTPUT_MANIFEST}"
    body = cloud.client("s3").get_object(Bucket=bucket, Key=output_uri.split("/", 3)[3])["Body"].read()
    return described, request["LabelAttributeName"], body.decode("utf-8").splitlines()


def _read(raw_lines: list[str], attribute: str) -> list[tuple[dict[str, Any], LabeledImage | None]]:
    return [(line, image) for _, line, image in read_labeled_images(raw_lines, attribute=attribute)]


def _boxes(image: LabeledImage) -> list[tuple[str, float, float, float, float]]:
    return [(b.label, b.left, b.top, b.width, b.height) for b in image.boxes]


def test_one_worker_job_through_the_deployed_functions(start: Callable[..., LocalCloud]) -> None:
    cloud = start(workforce=AcceptPrelabels())
    car = {"label": "car", "left": 20, "top": 30, "width": 60, "height": 40}
    person = {"label": "person", "left": 200, "top": 50, "width": 30, "height": 90}
    lines = [
        _line(cloud, "a.png", [car, person]),
        _line(cloud, "b.png", []),  # the model saw nothing: workers confirm background
        _line(cloud, "c.png", [car], skip_review=True),  # explicitly skipped: never shown to workers
        _line(cloud, "d.png", None),  # no model at all
    ]
    described, attribute, raw = _run_job(cloud, lines, workers=1)
    assert described["LabelCounters"]["HumanLabeled"] == 3
    assert described["LabelCounters"]["Unlabeled"] == 1

    read = _read(raw, attribute)
    assert [line["source-ref"] for line, _ in read] == [line["source-ref"] for line in lines]
    (a_line, a), (_, b), (c_line, c), (_, d) = read
    assert a is not None and b is not None and d is not None
    assert _boxes(a) == [("car", 20, 30, 60, 40), ("person", 200, 50, 30, 90)]
    assert a_line[attribute]["annotations"][0]["class_id"] == 0  # registry id of "car", not the model's 1
    assert a.adjustment_status == "unadjusted" and a.human_annotated is True
    assert a.confidences == [1.0, 1.0]
    assert (a.width, a.height) == (W, H)
    meta = a_line[f"{attribute}-metadata"]
    assert meta["type"] == "groundTruth/custom"  # Ground Truth's custom-workflow stamp
    assert meta["class-map"] == {"0": "car", "1": "person"}
    assert meta["worker-count"] == 1 and meta[STATUS_KEY] == "ok"
    assert b.boxes == () and b.adjustment_status == "unadjusted"
    assert c is None and attribute not in c_line and PRELABEL_ATTRIBUTE in c_line
    assert d.boxes == ()

    # The deployed functions did the work: the pre function built taskInput from the line...
    pre_calls = [i for i in cloud.invocations if i.event and "dataObject" in i.event]
    assert len(pre_calls) == 4 and all(i.error is None for i in pre_calls)
    first = pre_calls[0].response["taskInput"]
    assert first["labels"] == LABELS and first["initialValue"] == [car, person]
    assert [i.response["isHumanAnnotationRequired"] for i in pre_calls] == [True, True, False, True]
    # ...and the post function consolidated, reading the payload with its own role.
    post_calls = [i for i in cloud.invocations if i.event and "payload" in i.event]
    assert len(post_calls) == 1 and post_calls[0].error is None
    assert post_calls[0].function_name == cloud.outputs["PostAnnotationFunctionArn"].rsplit(":", 1)[1]


def test_three_worker_job_consolidates_noisy_answers(start: Callable[..., LocalCloud]) -> None:
    truth_car = {"label": "car", "left": 40, "top": 60, "width": 80, "height": 50}
    truth_person = {"label": "person", "left": 180, "top": 40, "width": 40, "height": 120}
    truth = [
        {"image": f"{IMAGE_DIR}a.png", "detections": [truth_car, truth_person]},
        {"image": f"{IMAGE_DIR}b.png", "detections": []},
    ]
    cloud = start(workforce=Oracle(truth, noise=0.03, seed=7), duplicate_gt_events=True)
    # The model's pre-label is off by 15 px and missed the person: workers adjust it.
    lines = [
        _line(cloud, "a.png", [{**truth_car, "left": 55}]),
        _line(cloud, "b.png", [{"label": "person", "left": 10, "top": 10, "width": 30, "height": 30}]),
    ]
    described, attribute, raw = _run_job(cloud, lines, workers=3)
    assert described["LabelCounters"]["HumanLabeled"] == 2

    (a_line, a), (_, b) = _read(raw, attribute)
    assert a is not None and b is not None
    assert [box.label for box in a.boxes] == ["car", "person"]
    for box, expected in zip(a.boxes, (truth_car, truth_person), strict=True):
        assert iou(box, type(box)(box.label, *(expected[k] for k in ("left", "top", "width", "height")))) > 0.85
        assert box.confidence is not None and 0.5 < box.confidence <= 1.0
    assert a.adjustment_status == "adjusted"
    assert a_line[f"{attribute}-metadata"]["worker-count"] == 3
    # All three workers removed the spurious pre-label: explicit background, adjusted.
    assert b.boxes == () and b.adjustment_status == "adjusted"

    payload_keys = cloud.list_keys(
        f"work/labeling-jobs/{described['LabelingJobName']}/annotations/consolidated-annotation/"
    )
    assert payload_keys, "the emulator wrote the consolidation request under the job's output prefix"
