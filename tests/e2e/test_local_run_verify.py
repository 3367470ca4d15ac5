"""Verify-then-adjust end to end through the deployed stack (`labelloop local run --task-mode verify`).

A batch with right, wrong, partly-missed and empty pre-labels (plus one auto-accepted image):
the model's boxes are exported where people judged them right, the true boxes where they were
wrong or incomplete; one verify and one adjust job; duplicated job events for both stages;
three workers with a dissenter; a failed adjustment job after a successful verification.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from labelloop_core.boxes import box_from_yolo
from labelloop_core.contract import META_KEY, RUN_REPORT_FILE, VERIFIED_ATTRIBUTE, Estimate
from labelloop_core.yolo import label_stem
from tests.e2e.test_local_run import assembly_cache, assert_accounted, image_bytes, run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
__all__ = ["assembly_cache"]  # the module fixture caches synthesized assemblies

A = {"label": "car", "left": 10, "top": 8, "width": 40, "height": 30}
B = {"label": "car", "left": 100, "top": 60, "width": 30, "height": 30}
#: image -> (model boxes, true boxes, model confidence)
CASES: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]], float | None]] = {
    "right.jpg": ([A, B], [A, B], 0.5),
    "wrong.jpg": ([{**A, "left": 60, "top": 50}], [A], 0.5),
    "partly.jpg": ([A], [A, B], 0.5),
    "empty.jpg": ([], [B], None),
    "auto.jpg": ([A], [A], 0.97),
}


def _write(root: Path) -> tuple[Path, Path, Path]:
    images = root / "images"
    images.mkdir()
    model, truth = root / "model.jsonl", root / "truth.jsonl"
    with model.open("w") as m, truth.open("w") as t:
        for index, (name, (predicted, true, confidence)) in enumerate(CASES.items()):
            (images / name).write_bytes(image_bytes(name, size=(160, 120), colour=(40 * index, 120, 200)))
            m.write(json.dumps({"image": name, "detections": [{**b, "confidence": confidence} for b in predicted]}))
            m.write("\n")
            t.write(json.dumps({"image": name, "detections": true}) + "\n")
    return images, model, truth


def _exported_boxes(dataset: Path, name: str) -> list[tuple[int, int, int, int]]:
    stem = label_stem(f"incoming/local/{name}")
    (path,) = list(dataset.glob(f"labels/*/{stem}.txt"))
    boxes = []
    for row in path.read_text().splitlines():
        _, cx, cy, w, h = row.split()
        box = box_from_yolo("car", float(cx), float(cy), float(w), float(h), 160, 120)
        boxes.append((round(box.left), round(box.top), round(box.width), round(box.height)))
    return sorted(boxes)


def _as_tuples(boxes: list[dict[str, Any]]) -> list[tuple[int, int, int, int]]:
    return sorted((b["left"], b["top"], b["width"], b["height"]) for b in boxes)


def _run(tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, dict[str, Any], str]:
    images, model, truth = _write(tmp_path)
    out = tmp_path / "out"
    args = ["local", "run", "--images", str(images), "--out", str(out), "--labels", "car", "--model", f"replay:{model}"]
    args += ["--threshold", "0.9", "--task-mode", "verify", *extra]
    extra_list = list(extra)
    if "--reviewer" not in extra_list:
        args += ["--reviewer", f"oracle:{truth}", "--oracle-noise", "0", "--workers", "1"]
    code, stdout, stderr = run_cli(args, capsys)
    return code, json.loads((out / RUN_REPORT_FILE).read_text()), stdout + stderr


def test_verify_then_adjust_exports_model_boxes_where_right_and_true_boxes_elsewhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report, output = _run(tmp_path, capsys, "--duplicate-job-events")
    assert code == 0, output
    assert_accounted(report)
    assert report["task_mode"] == "verify"
    assert sorted(j["task_mode"] for j in report["labeling_jobs"]) == ["adjust", "verify"]
    assert {j["status"] for j in report["labeling_jobs"]} == {"Completed"}
    assert report["verification"] == {
        "verified_correct": 1,
        "judged_incorrect": 2,
        "sent_to_adjust_without_detections": 1,
        "no_verdict": 0,
    }
    assert {k: n for k, n in report["provenance"].items() if n} == {"auto": 1, "verified": 1, "adjusted": 2, "drawn": 1}
    assert (report["auto_accepted"], report["human_reviewed"], report["exported_images"]) == (1, 4, 5)
    dataset = tmp_path / "out" / "dataset"
    assert _exported_boxes(dataset, "right.jpg") == _as_tuples(CASES["right.jpg"][0])  # the model's, kept
    for name in ("wrong.jpg", "partly.jpg", "empty.jpg"):
        assert _exported_boxes(dataset, name) == _as_tuples(CASES[name][1]), name  # people's truth
    time = report["reviewer_time_estimate"]
    assert time["verify"]["tasks"] == 3 and time["adjust"]["tasks"] == 3
    assert set(time["verify"]) == {"tasks", Estimate.SECONDS} and Estimate.SAVED_SECONDS in time
    assert "verify stage: 1 verified correct" in output
    # Every verified or adjusted image gave a calibration pair (quality 1.0 for the verified one).
    (batch,) = report["batches"]
    lines = [json.loads(x) for x in Path(batch["output_manifest"]).read_text().splitlines()]
    final = {line[META_KEY]["key"].rsplit("/", 1)[1]: line[META_KEY] for line in lines}
    assert final["right.jpg"]["label_attribute"] == VERIFIED_ATTRIBUTE
    batch_report = json.loads(Path(batch["report"]).read_text())
    assert batch_report["calibration"]["pairs_written"] == 3  # right (quality 1.0), wrong, partly


def test_three_workers_with_a_dissenter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    answers = tmp_path / "answers.jsonl"
    fixed = [A, B]
    records: dict[str, dict[str, Any]] = {
        "right.jpg": {"verdicts": ["correct", {"verdict": "incorrect", "comment": "B is loose"}, "correct"]},
        "wrong.jpg": {"verdicts": ["incorrect", "correct", "incorrect"], "workers": [[A], [A], [A]]},
        "partly.jpg": {"verdicts": ["incorrect", "incorrect", "correct"], "workers": [fixed, fixed, [A]]},
        "empty.jpg": {"workers": [[B], [B], []]},
    }
    answers.write_text("".join(json.dumps({"image": name, **r}) + "\n" for name, r in records.items()))
    code, report, output = _run(tmp_path, capsys, "--reviewer", f"answers:{answers}", "--workers", "3")
    assert code == 0, output
    assert_accounted(report)
    assert report["verification"]["verified_correct"] == 1 and report["verification"]["judged_incorrect"] == 2
    dataset = tmp_path / "out" / "dataset"
    assert _exported_boxes(dataset, "right.jpg") == _as_tuples([A, B])
    assert _exported_boxes(dataset, "partly.jpg") == _as_tuples(fixed)  # the minority [A] is outvoted
    assert _exported_boxes(dataset, "empty.jpg") == _as_tuples([B])


def test_a_failed_adjustment_after_a_successful_verification_ends_the_batch_with_its_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report, _ = _run(tmp_path, capsys, "--reviewer", "fail-adjust:the adjusters went home")
    assert code != 0
    assert report["images_received"] == len(CASES)
    assert len(report["rejected"]) == len(CASES)  # every image accounted for, with the cause
    assert all("the adjusters went home" in r["reason"] for r in report["rejected"]), report["rejected"]
    modes = {j["task_mode"]: j["status"] for j in report["labeling_jobs"]}
    assert modes == {"verify": "Completed", "adjust": "Failed"}
    assert report["exported_images"] == 0
