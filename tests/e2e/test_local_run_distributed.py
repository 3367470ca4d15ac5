"""`labelloop local run` through the distributed export (`export.distributedAbove` below the image count).

The run must wait for the export state machine the export function starts, export exactly what the
single-function export writes, and, when the export fails, name its execution with the error.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

from cli.main import main
from labelloop_core.contract import RUN_REPORT_FILE
from tests.yolo_checker import check_yolo_dataset

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

IMAGES = 14
DISTRIBUTED = ["--context", "export.distributedAbove=10", "--context", "export.shardSize=4"]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    for i in range(IMAGES):
        buffer = io.BytesIO()
        Image.new("RGB", (64, 48), (i * 17 % 255, 90, 160)).save(buffer, "JPEG")
        (root / f"img{i:02d}.jpg").write_bytes(buffer.getvalue())
    return root


def _run(images: Path, out: Path, extra: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["local", "run", "--images", str(images), "--out", str(out), "--reviewer", "accept", *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _fingerprint(dataset: Path) -> dict[str, str]:
    return {
        p.relative_to(dataset).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(dataset.rglob("*"))
        # training/ records each run's labeling-job names and dates (its images are checked elsewhere).
        if p.is_file() and p.name != "export.json" and "training" not in p.relative_to(dataset).parts
    }


def _accounted(report: dict[str, Any]) -> None:
    assert report["images_received"] == IMAGES
    assert report["images_received"] == len(report["rejected"]) + report["auto_accepted"] + report["human_reviewed"]
    assert report["exported_images"] == report["auto_accepted"] + report["human_reviewed"] == IMAGES
    assert report["problems"] == []


@pytest.fixture(scope="module")
def single(images: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The same images exported by the export function alone: what the shards must reproduce."""
    out = tmp_path_factory.mktemp("single")
    code = main(["local", "run", "--images", str(images), "--out", str(out), "--reviewer", "accept"])
    assert code == 0
    assert json.loads((out / "dataset" / "export.json").read_text())["shards"] == []
    return _fingerprint(out / "dataset")


@pytest.mark.parametrize("faults", [[], ["--inject-faults", "s3:*:0.05", "--seed", "5"]], ids=["clean", "faults"])
def test_a_distributed_export_is_waited_for_and_matches_the_single_function_export(
    images: Path, single: dict[str, str], faults: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, stdout, stderr = _run(images, tmp_path / "out", DISTRIBUTED + faults, capsys)

    assert code == 0, stdout + stderr
    report = json.loads((tmp_path / "out" / RUN_REPORT_FILE).read_text())
    _accounted(report)
    export = json.loads((tmp_path / "out" / "dataset" / "export.json").read_text())
    assert len(export["shards"]) == 4  # 14 images in shards of 4
    assert sum(shard["images"] for shard in export["shards"]) == IMAGES
    check_yolo_dataset(tmp_path / "out" / "dataset")
    assert _fingerprint(tmp_path / "out" / "dataset") == single


def test_a_failed_distributed_export_is_named_with_its_error(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every server-side copy fails: the shards fail for good and the run names the export and why."""
    code, stdout, stderr = _run(images, tmp_path / "out", [*DISTRIBUTED, "--inject-faults", "s3:CopyObject:1"], capsys)

    assert code != 0
    report = json.loads((tmp_path / "out" / RUN_REPORT_FILE).read_text())
    problems = "\n".join(report["problems"])
    assert "the distributed export" in problems and "failed" in problems, problems
    assert "ExportFailed" in problems and "failed.json" in problems, problems
    assert "no errors recorded" not in stdout + stderr + problems
    assert report["images_received"] == IMAGES and report["exported_images"] == 0
