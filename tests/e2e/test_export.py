"""A Ground Truth job started OUTSIDE the workflow completes -> the DEPLOYED rule + export Lambda write YOLO.

The stack is synthesized with labels ``car, person`` and deployed into the in-process emulation. A
labeling job (not named ``labelloop-``, tagged ``labelloop:dataset=street``) runs through
LabelLoop's deployed pre/post functions with emulated workers; its completion event goes through
the synthesized "LabelingJobCompleted" rule to the export function, which writes
``exports/street/<version>/``. The export is downloaded and checked by the independent checker.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labelloop_core.contract import INPUT_MANIFEST, OUTPUT_MANIFEST
from sandbox.harness import LocalCloud
from tests.e2e.gt_jobs import create_workteam, job_request, png, prelabeled_line
from tests.yolo_checker import check_yolo_dataset, download_prefix

pytestmark = pytest.mark.e2e

LABELS = ["car", "person"]
W, H = 320, 240
IMAGE_DIR = "work/e2e-export/images/"  # outside incoming/: the intake pipeline must not pick these up
JOB = "street-outside-job-1"


@pytest.fixture(scope="module")
def car_person_assembly(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from infra.synth import synthesize

    return synthesize(tmp_path_factory.mktemp("export-e2e"), context={"labels": LABELS})


@pytest.fixture
def cloud(car_person_assembly: Path) -> Iterator[LocalCloud]:
    with contextlib.ExitStack() as stack:
        yield stack.enter_context(LocalCloud.start(car_person_assembly, duplicate_gt_events=True))


def _line(cloud: LocalCloud, name: str, boxes: list[tuple[str, int, int, int, int]], shade: int) -> dict[str, Any]:
    """An input line with pre-labels (the emulated workers accept them as their answer)."""
    prelabels = [{"label": c, "left": x, "top": y, "width": w, "height": h} for c, x, y, w, h in boxes]
    ids = {"car": 0, "person": 1}
    return prelabeled_line(
        cloud, f"{IMAGE_DIR}{name}", png(W, H, shade), prelabels, ids, batch_id="outside", width=W, height=H
    )


def test_outside_job_completion_exports_through_the_deployed_rule(cloud: LocalCloud, tmp_path: Path) -> None:
    bucket = cloud.bucket
    lines = [
        _line(cloud, f"frame {i:02d}+x.png", [("car", 10 + i, 20, 60, 40), ("person", 200, 50, 30, 90)], 10 * i)
        for i in range(10)
    ]
    lines.append(_line(cloud, "empty road.png", [], 200))
    request = job_request(
        cloud,
        job_name=JOB,
        manifest_key=f"work/outside-jobs/{JOB}/{INPUT_MANIFEST}",
        lines=lines,
        labels=LABELS,
        workteam_arn=create_workteam(cloud, "outside-labelers"),
        label_attribute_name="street-boxes",
        tags={"labelloop:dataset": "street"},
    )
    cloud.client("sagemaker").create_labeling_job(**request)

    def latest() -> Any:
        if "exports/street/latest.json" not in cloud.list_keys("exports/street/"):
            return None
        return cloud.read_json("exports/street/latest.json")

    pointer = cloud.wait_for(latest, timeout=90, message="the YOLO export of the outside job")
    version = pointer["version"]
    doc = cloud.read_json(f"exports/street/{version}/export.json")
    assert doc["trigger"]["type"] == "SageMaker Ground Truth Labeling Job State Change"
    assert doc["trigger"]["job"] == JOB
    assert doc["counts"]["images"] == 11 and doc["counts"]["boxes"] == 20
    assert doc["class_histogram"] == {"car": 10, "person": 10}
    assert doc["counts"]["background_images"] == 1
    assert doc["label_attribute"] is None and doc["inputs"][0].endswith(f"/manifests/output/{OUTPUT_MANIFEST}")

    download_prefix(cloud.client("s3"), bucket, f"exports/street/{version}/", tmp_path)
    report = check_yolo_dataset(tmp_path)
    assert report.total_images == 11 and report.names == {0: "car", 1: "person"}
    copied = next(p for p in tmp_path.rglob("frame 03+x-*.png"))
    assert copied.read_bytes() == png(W, H, 30)

    # the emulator delivers the completion event twice: still exactly one version
    def export_invocations() -> list[Any]:
        found = [i for i in cloud.invocations if "ExportYolo" in i.function_name]
        return found if len(found) >= 2 else []

    invocations = cloud.wait_for(export_invocations, timeout=120, message="the duplicate completion event")
    assert [i.error for i in invocations] == [None, None]
    assert sorted(i.response["status"] for i in invocations) == ["already_exported", "exported"]
    versions = {k.split("/")[2] for k in cloud.list_keys("exports/street/") if k.count("/") > 2}
    assert versions == {version}
