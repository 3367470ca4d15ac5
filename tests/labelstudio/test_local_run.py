"""`labelloop local run --review-backend labelstudio` end to end against the real Label Studio server.

The deployed pipeline runs in the emulation; the deployed Lambdas create the project and tasks in
Label Studio over HTTP; reviews are answered through Label Studio's API (the oracle) or by "a
person" (this test, through the same API a browser uses) while the run waits.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.labelstudio import LabelStudioClient
from cli.main import main
from labelloop_core.contract import RUN_REPORT_FILE
from labelloop_core.labelstudio import KEY_FIELD
from tests.e2e.test_local_run import assert_accounted, write_images
from tests.e2e.test_local_run_verify import CASES as VERIFY_CASES
from tests.e2e.test_local_run_verify import _as_tuples as verify_tuples
from tests.e2e.test_local_run_verify import _exported_boxes as verify_exported
from tests.e2e.test_local_run_verify import _write as verify_inputs
from tests.labelstudio.server import Server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NAMES = ["sure1.jpg", "sure2.jpg", "unsure1.jpg", "unsure2.jpg"]
SIZE = (96, 64)
MODEL_BOX = {"label": "car", "left": 10, "top": 8, "width": 40, "height": 30}
# The people's answers. The "sure" images are auto-accepted unless the audit sample picks one
# (calibration.auditFraction): then the truth is what the model drew.
TRUTH = {"sure1.jpg": [MODEL_BOX], "sure2.jpg": [MODEL_BOX],
         "unsure1.jpg": [{"label": "car", "left": 48, "top": 16, "width": 24, "height": 32}],
         "unsure2.jpg": [{"label": "person", "left": 0, "top": 0, "width": 48, "height": 32}]}  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def assembly_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    if os.environ.get("LABELLOOP_ASSEMBLY_CACHE"):
        yield
        return
    os.environ["LABELLOOP_ASSEMBLY_CACHE"] = str(tmp_path_factory.mktemp("assemblies-ls"))
    yield
    os.environ.pop("LABELLOOP_ASSEMBLY_CACHE", None)


@pytest.fixture
def token_env(label_studio: Server, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio.token)
    return label_studio.token


def inputs(tmp_path: Path) -> tuple[Path, Path, Path]:
    images = tmp_path / "images"
    write_images(images, NAMES)
    model, truth = tmp_path / "model.jsonl", tmp_path / "truth.jsonl"
    model.write_text(
        "".join(
            json.dumps({"image": n, "detections": [{**MODEL_BOX, "confidence": 0.97 if n.startswith("sure") else 0.3}]})
            + "\n"
            for n in NAMES
        )
    )
    truth.write_text("".join(json.dumps({"image": n, "detections": b}) + "\n" for n, b in TRUTH.items()))
    return images, model, truth


def yolo_rows(dataset: Path, name: str) -> list[float]:
    stem = Path(name).stem
    (label_file,) = [
        p for p in dataset.rglob("*.txt") if p.parent.parent.name == "labels" and p.stem.rsplit("-", 1)[0] == stem
    ]
    return [float(v) for line in label_file.read_text().splitlines() for v in line.split()]


def expected_rows(boxes: list[dict[str, Any]], names: list[str]) -> list[float]:
    w, h = SIZE
    return [
        v
        for b in boxes
        for v in (names.index(b["label"]), (b["left"] + b["width"] / 2) / w, (b["top"] + b["height"] / 2) / h,
                  b["width"] / w, b["height"] / h)
    ]  # fmt: skip


def args(images: Path, out: Path, model: Path, url: str, reviewer: str, dataset: str) -> list[str]:
    return ["local", "run", "--images", str(images), "--out", str(out), "--dataset", dataset,
            "--labels", "car,person", "--model", f"replay:{model}", "--threshold", "0.9",
            "--review-backend", "labelstudio", "--labelstudio-url", url, "--reviewer", reviewer,
            "--oracle-noise", "0", "--timeout", "600"]  # fmt: skip


def test_oracle_answers_through_label_studio_and_the_export_has_its_boxes(
    tmp_path: Path, label_studio: Server, token_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    images, model, truth = inputs(tmp_path)
    out = tmp_path / "out"
    code = main(args(images, out, model, label_studio.url, f"oracle:{truth}", "lsoracle"))
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr[-3000:]
    assert token_env not in stdout + stderr  # the token is never printed
    report = json.loads((out / RUN_REPORT_FILE).read_text())
    assert_accounted(report)
    assert report["auto_accepted"] + report["human_reviewed"] == 4 and report["human_reviewed"] >= 2
    assert "Label Studio project http://127.0.0.1:" in stderr
    assert "labeling jobs: 1 adjust Completed" in stdout
    ls = LabelStudioClient(label_studio.url, label_studio.token)
    (project,) = [p for p in ls.find_projects("LabelLoop/lsoracle")]
    tasks = ls.get(f"/api/tasks/?project={project['id']}&fields=all&page_size=100")["tasks"]
    by_name = {t["data"][KEY_FIELD].rsplit("/", 1)[-1]: t for t in tasks}
    assert len(tasks) == report["human_reviewed"] and {"unsure1.jpg", "unsure2.jpg"} <= set(by_name)
    assert all(t["is_labeled"] for t in tasks)
    assert by_name["unsure1.jpg"]["predictions"][0]["score"] == pytest.approx(0.3)
    for name, boxes in TRUTH.items():
        assert yolo_rows(out / "dataset", name) == pytest.approx(expected_rows(boxes, ["car", "person"]), abs=1e-5)


def test_human_review_waits_for_people_and_exports_exactly_what_they_drew(
    tmp_path: Path, label_studio: Server, token_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    images, model, _ = inputs(tmp_path)
    out = tmp_path / "out"
    result: dict[str, int] = {}
    run = threading.Thread(
        target=lambda: result.setdefault("code", main(args(images, out, model, label_studio.url, "human", "lshuman")))
    )
    run.start()
    ls = LabelStudioClient(label_studio.url, label_studio.token)
    deadline = time.monotonic() + 600
    tasks: list[dict[str, Any]] = []
    while run.is_alive() and time.monotonic() < deadline:
        found = ls.find_projects("LabelLoop/lshuman")
        if found:
            tasks = ls.get(f"/api/tasks/?project={found[0]['id']}&fields=all&page_size=100")["tasks"]
            if len(tasks) >= 2:
                break
        time.sleep(2)
    assert len(tasks) >= 2, "the run never created its Label Studio tasks"
    by_name = {t["data"][KEY_FIELD].rsplit("/", 1)[-1]: t for t in tasks}
    w, h = SIZE

    def region(b: dict[str, Any]) -> dict[str, Any]:
        value = {"x": b["left"] / w * 100, "y": b["top"] / h * 100, "width": b["width"] / w * 100,
                 "height": b["height"] / h * 100, "rotation": 0, "rectanglelabels": [b["label"]]}  # fmt: skip
        return {"from_name": "label", "to_name": "image", "type": "rectanglelabels", "value": value,
                "original_width": w, "original_height": h}  # fmt: skip

    ls.annotate(by_name["unsure1.jpg"]["id"], [], skip=True)  # a person skips first: the batch stays open
    for name, task in by_name.items():
        if name != "unsure1.jpg":
            ls.annotate(task["id"], [region(b) for b in TRUTH[name]])
    time.sleep(8)
    assert run.is_alive(), "the run finished although a task was only skipped"
    ls.annotate(by_name["unsure1.jpg"]["id"], [region(b) for b in TRUTH["unsure1.jpg"]])
    run.join(600)
    _, stderr = capsys.readouterr()
    assert result.get("code") == 0, stderr[-3000:]
    assert "waiting for people to review" in stderr
    for name, boxes in TRUTH.items():
        assert yolo_rows(out / "dataset", name) == pytest.approx(expected_rows(boxes, ["car", "person"]), abs=1e-5)


def test_verify_then_adjust_in_label_studio_keeps_right_boxes_and_takes_people_s_elsewhere(
    tmp_path: Path, label_studio: Server, token_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--task-mode verify``: a correct/incorrect project first, then the ordinary one for the rejected images."""
    images, model, truth = verify_inputs(tmp_path)
    out = tmp_path / "out"
    argv = ["local", "run", "--images", str(images), "--out", str(out), "--labels", "car",
            "--model", f"replay:{model}", "--threshold", "0.9", "--task-mode", "verify",
            "--review-backend", "labelstudio", "--labelstudio-url", label_studio.url,
            "--reviewer", f"oracle:{truth}", "--oracle-noise", "0", "--timeout", "600"]  # fmt: skip
    code = main(argv)
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr[-3000:]
    assert token_env not in stdout + stderr
    report = json.loads((out / RUN_REPORT_FILE).read_text())
    assert_accounted(report)
    assert report["verification"] == {"verified_correct": 1, "judged_incorrect": 2,
                                      "sent_to_adjust_without_detections": 1, "no_verdict": 0}  # fmt: skip
    assert sorted(j["task_mode"] for j in report["labeling_jobs"]) == ["adjust", "verify"]
    assert {j["status"] for j in report["labeling_jobs"]} == {"Completed"}  # from the batch report, no GT job
    assert "verify task(s): correct/incorrect" in stderr
    ls = LabelStudioClient(label_studio.url, label_studio.token)
    (verify_project,) = ls.find_projects("LabelLoop/local#verify")
    (adjust_project,) = ls.find_projects("LabelLoop/local")
    verify_tasks = ls.get(f"/api/tasks/?project={verify_project['id']}&fields=all&page_size=100")["tasks"]
    adjust_tasks = ls.get(f"/api/tasks/?project={adjust_project['id']}&fields=all&page_size=100")["tasks"]
    assert len(verify_tasks) == 3 and len(adjust_tasks) == 3  # right/wrong/partly judged; wrong/partly/empty adjusted
    dataset = out / "dataset"
    assert verify_exported(dataset, "right.jpg") == verify_tuples(VERIFY_CASES["right.jpg"][0])  # the model's
    for name in ("wrong.jpg", "partly.jpg", "empty.jpg"):
        assert verify_exported(dataset, name) == verify_tuples(VERIFY_CASES[name][1]), name  # people's truth
