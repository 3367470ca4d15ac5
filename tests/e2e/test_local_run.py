"""`labelloop local run` and `labelloop demo` end to end: the deployed pipeline in the emulation.

Each test runs the real command (``cli.main.main``), which synthesizes the stack with the run's
options, deploys it into the in-process emulation and lets the pipeline label the images. Synthesized
assemblies are cached per context for the session (``LABELLOOP_ASSEMBLY_CACHE``).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli.demo import DEMO_TARGET_QUALITY
from cli.main import main
from labelloop_core.contract import RUN_REPORT_FILE, Cost
from labelloop_core.pricing import COMPONENTS
from tests.yolo_checker import check_yolo_dataset

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TRICKY = [
    "a.jpg",
    "a.png",
    "with space/photo 01.jpg",
    "unicode/café crème.jpg",
    "unicode/画像 ñ.png",
    "plus/left+right.jpg",
    "plus/a+b c.png",
    "deep/x/y/z.jpg",
    "IMG_0001.JPG",
    "b.jpeg",
]


@pytest.fixture(scope="module", autouse=True)
def assembly_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Reuse a synthesized assembly across runs with the same options."""
    if os.environ.get("LABELLOOP_ASSEMBLY_CACHE"):
        yield  # a cache the developer chose
        return
    os.environ["LABELLOOP_ASSEMBLY_CACHE"] = str(tmp_path_factory.mktemp("assemblies"))
    yield
    os.environ.pop("LABELLOOP_ASSEMBLY_CACHE", None)


def image_bytes(name: str, size: tuple[int, int] = (96, 64), colour: tuple[int, int, int] = (90, 140, 200)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    fmt = "PNG" if name.lower().endswith(".png") else "JPEG"
    Image.new("RGB", size, colour).save(buffer, fmt)
    return buffer.getvalue()


def write_images(root: Path, names: list[str]) -> None:
    for index, name in enumerate(names):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(image_bytes(name, colour=(20 * index % 255, 140, 200)))


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_accounted(report: dict[str, Any]) -> None:
    """The two invariants, recomputed here from the report's own lists."""
    assert report["images_received"] == len(report["rejected"]) + report["auto_accepted"] + report["human_reviewed"]
    assert report["exported_images"] == report["auto_accepted"] + report["human_reviewed"]
    assert all(r["reason"] for r in report["rejected"])
    assert report["problems"] == []


def assert_cost(report: dict[str, Any]) -> dict[str, Any]:
    """``cost``: components sum to the total, per image; where defined, each equals the batches' sum."""
    cost = report[Cost.FIELD]
    parts = cost[Cost.COMPONENTS]
    assert list(parts) == list(COMPONENTS) and all(v >= 0 for v in parts.values())
    assert cost[Cost.TOTAL] == sum(parts.values()) > 0
    labeled = report["auto_accepted"] + report["human_reviewed"]
    assert cost[Cost.LABELED_IMAGES] == labeled and cost[Cost.PER_IMAGE] == cost[Cost.TOTAL] / labeled
    batch_costs = [json.loads(Path(b["report"]).read_text())[Cost.FIELD] for b in report["batches"]]
    for batch in batch_costs:  # each batch adds up on its own
        assert batch[Cost.TOTAL] == sum(batch[Cost.COMPONENTS].values())
    for name in cost["equal_to_batches"]:
        assert parts[name] == pytest.approx(sum(b[Cost.COMPONENTS][name] for b in batch_costs), rel=1e-12, abs=1e-15)
    assert {"model_calls", "human_review"} <= set(cost["equal_to_batches"])
    orchestration = cost[Cost.BASIS]["orchestration"]
    assert orchestration[Cost.KIND] == Cost.MEASURED and orchestration[Cost.COUNTS]["state_transitions"] > 0
    assert orchestration[Cost.COUNTS]["s3_tier1"] > 0 and orchestration[Cost.COUNTS]["lambda_requests"] > 0
    return cost


def test_accept_run_labels_and_exports_every_tricky_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images, out = tmp_path / "images", tmp_path / "out"
    write_images(images, TRICKY)

    code, stdout, stderr = run_cli(["local", "run", "--images", str(images), "--out", str(out)], capsys)

    assert code == 0, stderr
    report = json.loads((out / RUN_REPORT_FILE).read_text())
    assert_accounted(report)
    assert report["images_received"] == len(TRICKY)
    assert report["human_reviewed"] == len(TRICKY) and report["auto_accepted"] == 0
    assert sorted(report["images"]) == sorted(TRICKY)
    assert set(report["images"].values()) == {"human_reviewed"}
    assert [j["status"] for j in report["labeling_jobs"]] == ["Completed"]
    assert report["export_version"] and report["export_versions"] == [report["export_version"]]
    # Progress, stage by stage, on stderr; the summary on stdout.
    for stage in (
        "uploaded 10 image(s)",
        "validated: 10 valid, 0 rejected",
        "routed: 0 auto-accepted, 10 to human",
        "labeling job labelloop-",
        "merged:",
        "export version",
    ):
        assert stage in stderr, stage
    assert "exported 10 image(s)" in stdout and "OK" in stdout
    # The exported dataset passes the independent checker; every image is in it, background labels included.
    checked = check_yolo_dataset(out / "dataset")
    assert checked.total_images == len(TRICKY)
    assert checked.names == {0: "object"}
    export = json.loads((out / "dataset" / "export.json").read_text())
    assert export["version"] == report["export_version"]


def test_a_single_image_run_exports_a_dataset_ultralytics_can_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One image is one split: data.yaml's val names the train folder (the options above: same assembly)."""
    images, out = tmp_path / "images", tmp_path / "out"
    write_images(images, ["only.jpg"])

    code, _, stderr = run_cli(["local", "run", "--images", str(images), "--out", str(out)], capsys)

    assert code == 0, stderr
    checked = check_yolo_dataset(out / "dataset")  # train and val each name a folder holding the image
    assert checked.images == {"train": 1, "val": 0}
    assert "val: images/train\n" in (out / "dataset" / "data.yaml").read_text()
    export = json.loads((out / "dataset" / "export.json").read_text())
    assert export["split"]["val_path"] == "images/train" and "single image" in export["split"]["note"]


def test_replay_model_fixed_threshold_and_answers_from_two_workers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images, out = tmp_path / "images", tmp_path / "out"
    names = [f"img_{i:02d}.jpg" for i in range(12)]
    write_images(images, names)
    box = {"left": 10, "top": 8, "width": 40, "height": 30}
    replay, answers = tmp_path / "model.jsonl", tmp_path / "answers.jsonl"
    with replay.open("w") as model, answers.open("w") as workers:
        for i, name in enumerate(names):
            label = "cat" if i % 2 else "dog"
            confidence = 0.95 if i < 8 else 0.2
            model.write(json.dumps({"image": name, "detections": [{"label": label, "confidence": confidence, **box}]}))
            model.write("\n")
            # Both workers draw the same corrected box one pixel apart: consolidation keeps one box.
            drawn = [{"label": label, "left": 12, "top": 9, "width": 38, "height": 28}]
            moved = [{"label": label, "left": 13, "top": 9, "width": 38, "height": 28}]
            workers.write(json.dumps({"image": name, "workers": [drawn, moved]}) + "\n")

    code, _, stderr = run_cli(
        [
            "local",
            "run",
            "--images",
            str(images),
            "--out",
            str(out),
            "--labels",
            "cat,dog",
            "--model",
            f"replay:{replay}",
            "--reviewer",
            f"answers:{answers}",
            "--threshold",
            "0.5",
            "--workers",
            "2",
        ],
        capsys,
    )

    assert code == 0, stderr
    report = json.loads((out / RUN_REPORT_FILE).read_text())
    assert_accounted(report)
    cost = assert_cost(report)
    # Ground Truth's fee per object sent to the job; a SageMaker endpoint's hosting is the batches' windows.
    fee = cost[Cost.PRICES]["usd"]["ground_truth_per_object"]
    assert cost[Cost.COMPONENTS]["human_review"] == pytest.approx(report["human_reviewed"] * fee)
    assert "model_hosting" in cost["equal_to_batches"] and cost[Cost.COMPONENTS]["training"] == 0
    assert report["threshold"]["fixed"] == 0.5
    outcomes = report["images"]
    for i, name in enumerate(names):
        if i >= 8:
            assert outcomes[name] == "human_reviewed", name  # below the threshold
        else:
            assert outcomes[name] in ("auto_accepted", "human_reviewed"), name  # reviewed only as an audit
    assert report["auto_accepted"] == sum(v == "auto_accepted" for v in outcomes.values()) >= 6
    assert report["human_reviewed"] - report["audited"] == 4
    [job] = report["labeling_jobs"]
    assert job["status"] == "Completed" and job["counters"]["HumanLabeled"] == report["human_reviewed"]
    checked = check_yolo_dataset(out / "dataset")
    assert checked.names == {0: "cat", 1: "dog"}
    assert checked.total_images == 12 and checked.boxes == 12
    # An accepted image carries the model's box, a reviewed one the workers' consolidated box.
    by_stem = {Path(p).stem.rsplit("-", 1)[0]: text for p, text in checked.labels.items()}
    accepted = next(n for n in names if outcomes[n] == "auto_accepted")
    reviewed = names[9]
    model_row = by_stem[Path(accepted).stem].split()
    assert [round(float(v) * 96) for v in model_row[1::2]] == [30, 40]  # cx = 10 + 40/2, w = 40 (of 96 px)
    worker_row = by_stem[Path(reviewed).stem].split()
    assert worker_row[0] == "0"  # img_09 is a cat; class ids follow --labels, not any job's order
    assert abs(float(worker_row[3]) * 96 - 38) <= 1.0


def test_demo_runs_the_pipeline_on_generated_scenes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"

    code, stdout, stderr = run_cli(["demo", "--out", str(out), "--count", "40", "--min-pairs", "10"], capsys)

    assert code == 0, stderr
    report = json.loads((out / RUN_REPORT_FILE).read_text())
    assert_accounted(report)
    assert report["images_received"] == 40 and report["rejected"] == []
    assert len(report["batches"]) == 2  # two waves
    assert "truth.jsonl" not in report["images"]
    demo = json.loads((out / "demo.json").read_text())
    assert demo["dataset_structural_check"] is True
    assert demo["judgement"]["reviewed"] + demo["judgement"]["auto_accepted"] == 40
    assert "What the demo did" in stdout and "structural check" in stdout and "passed" in stdout
    checked = check_yolo_dataset(out / "dataset")
    assert checked.total_images == 40
    assert set(checked.names.values()) == {"bicycle", "car", "person"}
    # The certificate is printed and plotted next to report.json.
    final = report["threshold"]["final"]
    assert final["bound"] == "betting" and final["target"] == DEMO_TARGET_QUALITY and len(final["curve"]) == 100
    assert "certificate:" in stdout and "audits so far:" in stdout
    assert (out / "calibration.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    batch_report = json.loads(Path(report["batches"][-1]["report"]).read_text())
    assert batch_report["calibration"]["certificate"]["model"] == final["model"]


def test_an_image_no_worker_answered_is_rejected_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images, out = tmp_path / "images", tmp_path / "out"
    names = [f"q{i}.jpg" for i in range(6)]
    write_images(images, names)
    replay, answers = tmp_path / "model.jsonl", tmp_path / "answers.jsonl"
    box = {"label": "cat", "left": 5, "top": 5, "width": 20, "height": 20}
    replay.write_text(
        "".join(json.dumps({"image": n, "detections": [{**box, "confidence": 0.1}]}) + "\n" for n in names)
    )
    # The answers file forgets q3.jpg: Ground Truth sends it to nobody's consolidation (Unlabeled).
    answers.write_text(
        "".join(json.dumps({"image": n, "workers": [[box], [box]]}) + "\n" for n in names if n != "q3.jpg")
    )

    code, _, stderr = run_cli(
        [
            "local",
            "run",
            "--images",
            str(images),
            "--out",
            str(out),
            "--labels",
            "cat,dog",
            "--model",
            f"replay:{replay}",
            "--reviewer",
            f"answers:{answers}",
            "--threshold",
            "0.5",
            "--workers",
            "2",
        ],
        capsys,
    )

    assert code == 0, stderr
    report = json.loads((out / RUN_REPORT_FILE).read_text())
    assert_accounted(report)
    assert report["human_reviewed"] == 5 and report["auto_accepted"] == 0
    [rejected] = report["rejected"]
    assert rejected["image"] == "q3.jpg" and "labelloop-" in rejected["reason"], rejected
    assert report["images"]["q3.jpg"] == "rejected"
    [job] = report["labeling_jobs"]
    assert job["counters"]["Unlabeled"] == 1
