"""Reliability through `labelloop local run`: bad inputs, a failing model, a failing labeling job and
duplicated events all end with every image accounted for, and a clear reason where rejected.

All runs share one stack configuration (labels cat,dog; a replay model; fixed threshold 0.5), so
the assembly is synthesized once per session.
"""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli.main import main
from labelloop_core.contract import RUN_REPORT_FILE
from tests.yolo_checker import check_yolo_dataset

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BOX = {"left": 8, "top": 6, "width": 30, "height": 20}


@pytest.fixture(scope="module", autouse=True)
def assembly_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Reuse a synthesized assembly across runs with the same options."""
    if os.environ.get("LABELLOOP_ASSEMBLY_CACHE"):
        yield  # a cache the developer chose
        return
    os.environ["LABELLOOP_ASSEMBLY_CACHE"] = str(tmp_path_factory.mktemp("assemblies"))
    yield
    os.environ.pop("LABELLOOP_ASSEMBLY_CACHE", None)


def image_bytes(name: str, colour: tuple[int, int, int] = (80, 120, 200)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(buffer, "PNG" if name.lower().endswith(".png") else "JPEG")
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def huge_png(width: int = 20_000, height: int = 20_000) -> bytes:
    """A valid PNG header claiming width x height pixels (400 megapixels), with a token IDAT."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _chunk(b"IEND", b"")
    )


def write(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def replay_file(path: Path, names: list[str], confidence: float = 0.9) -> Path:
    with path.open("w") as out:
        for i, name in enumerate(names):
            det = {"label": "cat" if i % 2 else "dog", "confidence": confidence, **BOX}
            out.write(json.dumps({"image": name, "detections": [det]}) + "\n")
    return path


def run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], images: Path, *extra: str
) -> tuple[int, dict[str, Any], str]:
    out = tmp_path / "out"
    args = ["local", "run", "--images", str(images), "--out", str(out), "--labels", "cat,dog", "--threshold", "0.5"]
    code = main([*args, *extra])
    captured = capsys.readouterr()
    report = json.loads((out / RUN_REPORT_FILE).read_text())
    return code, report, captured.err


def assert_accounted(report: dict[str, Any], expected_images: int) -> None:
    assert report["images_received"] == expected_images
    assert report["images_received"] == len(report["rejected"]) + report["auto_accepted"] + report["human_reviewed"]
    assert report["exported_images"] == report["auto_accepted"] + report["human_reviewed"]
    assert len(report["images"]) == expected_images
    assert all(isinstance(r["reason"], str) and r["reason"] for r in report["rejected"])
    assert report["problems"] == []


def test_bad_inputs_are_rejected_with_reasons_and_duplicates_counted_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = tmp_path / "images"
    good = {
        "good/ok.jpg": image_bytes("ok.jpg"),
        "good/caf\u00e9 cr\u00e8me.jpg": image_bytes("x.jpg", (10, 200, 30)),
        "good/with space/a+b c.png": image_bytes("x.png", (200, 10, 30)),
        "good/\u753b\u50cf+1.png": image_bytes("x.png", (30, 30, 200)),
        # The same bytes under a second name: a separate image (its own key), labeled once each.
        "good/copy of ok.jpg": image_bytes("ok.jpg"),
        **{f"good/plain/{i}.jpg": image_bytes("x.jpg", (20 * i, 20 * i, 90)) for i in range(6)},
    }
    bad = {
        "bad/corrupt.jpg": b"\xff\xd8\xff\xe0" + b"\x00\x10JFIF" + os.urandom(200),
        "bad/zero.jpg": b"",
        "bad/report.pdf.jpg": b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF\n",
        "bad/huge.png": huge_png(),
        "bad/notes.txt": b"not an image at all\n",
    }
    write(images, {**good, **bad})
    model = replay_file(tmp_path / "model.jsonl", sorted(good))

    code, report, stderr = run(
        tmp_path, capsys, images, "--model", f"replay:{model}", "--upload-twice", "--reviewer", "accept"
    )

    assert code == 0, stderr
    assert_accounted(report, len(good) + len(bad))
    reasons = {r["image"]: r["reason"] for r in report["rejected"]}
    assert set(reasons) == set(bad)
    assert "empty" in reasons["bad/zero.jpg"]
    assert "PDF" in reasons["bad/report.pdf.jpg"]
    assert "corrupt" in reasons["bad/corrupt.jpg"]
    assert "pixel" in reasons["bad/huge.png"] or "bomb" in reasons["bad/huge.png"]
    assert "not an image" in reasons["bad/notes.txt"]
    assert all(report["images"][name] in ("auto_accepted", "human_reviewed") for name in good)
    # Every object was uploaded twice: one batch, duplicates dropped there, nothing labeled twice.
    [batch] = report["batches"]
    assert batch["counts"]["duplicate_events_dropped"] == len(good) + len(bad)
    assert f"uploaded {len(good) + len(bad)} image(s) (each twice)" in stderr
    checked = check_yolo_dataset(tmp_path / "out" / "dataset")
    assert checked.total_images == len(good)


def test_model_failing_for_some_images_sends_them_to_humans(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images = tmp_path / "images"
    names = [f"m{i:02d}.jpg" for i in range(10)]
    write(images, {name: image_bytes(name, (25 * i, 90, 160)) for i, name in enumerate(names)})
    model = replay_file(tmp_path / "model.jsonl", names)
    faults = {"m01.jpg": "error", "m02.jpg": "garbage", "m03.jpg": "throttle"}

    code, report, stderr = run(
        tmp_path,
        capsys,
        images,
        "--model",
        f"replay:{model}",
        *[arg for name, kind in faults.items() for arg in ("--model-fault", f"{name}={kind}")],
    )

    assert code == 0, stderr
    assert_accounted(report, len(names))
    assert report["rejected"] == []
    errors = {e["image"]: e["error"] for e in report["model_errors"]}
    assert set(errors) == set(faults)
    assert all(errors.values())
    for name in faults:
        assert report["images"][name] == "human_reviewed"  # no pre-labels: never auto-accepted
    assert report["auto_accepted"] >= 5  # the others are confident (0.9 >= 0.5), bar audit draws


def test_failed_labeling_job_accounts_for_every_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images = tmp_path / "images"
    names = [f"f{i:02d}.jpg" for i in range(6)]
    write(images, {name: image_bytes(name, (40 * i, 60, 90)) for i, name in enumerate(names)})
    write(images, {"zero.jpg": b""})
    model = replay_file(tmp_path / "model.jsonl", names, confidence=0.3)  # below 0.5: all to review
    stale = tmp_path / "out" / "dataset" / "images" / "train" / "from-an-earlier-run.jpg"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")

    code, report, stderr = run(
        tmp_path, capsys, images, "--model", f"replay:{model}", "--reviewer", "fail:the workteam quit"
    )

    assert code == 3, stderr  # a failed batch: accounted for, but not labeled
    assert "batch(es) failed" in stderr
    assert_accounted(report, len(names) + 1)
    assert report["auto_accepted"] == report["human_reviewed"] == report["exported_images"] == 0
    assert report["export_version"] is None
    assert not (tmp_path / "out" / "dataset").exists()  # no export: no dataset, not a stale one
    reasons = {r["image"]: r["reason"] for r in report["rejected"]}
    assert "empty" in reasons["zero.jpg"]
    for name in names:
        assert reasons[name].startswith("batch failed") and "the workteam quit" in reasons[name], reasons[name]
    [job] = report["labeling_jobs"]
    assert job["status"] == "Failed" and "the workteam quit" in job["failure_reason"]
    [batch] = report["batches"]
    assert batch["status"] == "failed"


def test_duplicated_job_completion_events_label_and_export_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = tmp_path / "images"
    names = [f"d{i:02d}.png" for i in range(8)]
    write(images, {name: image_bytes(name, (30 * i, 200, 60)) for i, name in enumerate(names)})
    model = replay_file(tmp_path / "model.jsonl", names, confidence=0.3)

    code, report, stderr = run(tmp_path, capsys, images, "--model", f"replay:{model}", "--duplicate-job-events")

    assert code == 0, stderr
    assert_accounted(report, len(names))
    assert report["human_reviewed"] == len(names)
    [job] = report["labeling_jobs"]
    assert job["status"] == "Completed"
    [batch] = report["batches"]
    assert batch["status"] == "labeled" and batch["counts"]["reviewed"] == len(names)
    assert report["export_versions"] == [report["export_version"]]  # one export, not one per event
