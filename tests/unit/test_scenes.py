"""Synthetic scenes (known truth, EXIF orientation, real-world keys) and the pixel-based detector."""

from __future__ import annotations

import colorsys
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from sandbox.scenes import (
    EXIF_ORIENTATION_TAG,
    TRUTH_FILE,
    class_styles,
    generate_scenes,
    iter_scenes,
    make_scene,
)
from sandbox.synthetic_detector import DetectorError, detect

LABELS = ["car", "person", "bicycle"]


def _iou(a: dict, b: dict) -> float:
    ix = min(a["left"] + a["width"], b["left"] + b["width"]) - max(a["left"], b["left"])
    iy = min(a["top"] + a["height"], b["top"] + b["height"]) - max(a["top"], b["top"])
    if ix <= 0 or iy <= 0:
        return 0.0
    inter = ix * iy
    return inter / (a["width"] * a["height"] + b["width"] * b["height"] - inter)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _truth(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.slow  # seconds of simulation or image generation: make test, not make test-fast
def test_generation_is_deterministic_and_seed_dependent(tmp_path: Path) -> None:
    first = generate_scenes(tmp_path / "a", 24, LABELS, seed=7)
    second = generate_scenes(tmp_path / "b", 24, LABELS, seed=7)
    other = generate_scenes(tmp_path / "c", 24, LABELS, seed=8)
    assert first == tmp_path / "a" / TRUTH_FILE
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert first.read_text(encoding="utf-8") == second.read_text(encoding="utf-8")
    assert first.read_text(encoding="utf-8") != other.read_text(encoding="utf-8")


def test_label_mapping_ignores_order_and_rejects_too_many() -> None:
    assert class_styles(["b", "a", "c"]) == class_styles(["c", "b", "a"])
    assert len({s.shape for s in class_styles(list("abcdef")).values()}) == 6
    assert len({s.hue for s in class_styles(list("abcdef")).values()}) == 6
    with pytest.raises(ValueError):
        class_styles(list("abcdefg"))
    with pytest.raises(ValueError):
        class_styles([])


@pytest.mark.slow  # seconds of simulation or image generation: make test, not make test-fast
def test_truth_file_lists_every_image_with_boxes_inside_the_displayed_frame(tmp_path: Path) -> None:
    truth = _truth(generate_scenes(tmp_path, 60, LABELS, seed=3))
    images = {k for k in _files(tmp_path) if k != TRUTH_FILE}
    names = [line["image"] for line in truth]
    assert len(names) == len(set(names)) == 60 and set(names) == images
    for name in (
        "twins/a.jpg",
        "twins/a.png",
        "with space/photo 01.jpg",
        "unicode/café crème.jpg",
        "plus/left+right.jpg",
    ):
        assert name in images
    assert any("/" in n and n.count("/") >= 2 for n in images)
    n_boxes = []
    for line in truth:
        with Image.open(tmp_path / line["image"]) as stored:
            assert stored.format == ("PNG" if line["image"].lower().endswith(".png") else "JPEG")
            shown = ImageOps.exif_transpose(stored)
        w, h = shown.size
        assert 320 <= w <= 800 and 320 <= h <= 800
        for box in line["detections"]:
            assert set(box) == {"label", "left", "top", "width", "height"}
            assert box["label"] in LABELS
            assert box["width"] > 0 and box["height"] > 0
            assert box["left"] >= 0 and box["left"] + box["width"] <= w
            assert box["top"] >= 0 and box["top"] + box["height"] <= h
        n_boxes.append(len(line["detections"]))
    assert 0 in n_boxes and max(n_boxes) >= 8


@pytest.mark.slow  # seconds of simulation or image generation: make test, not make test-fast
def test_scene_mix_has_empty_crowded_and_exif_rotated_images() -> None:
    scenes = list(iter_scenes(100, LABELS, seed=1))
    kinds = [s.kind for s in scenes]
    assert (kinds.count("empty"), kinds.count("single"), kinds.count("crowded")) == (10, 15, 22)
    assert all(not s.boxes for s in scenes if s.kind == "empty")
    assert all(len(s.boxes) >= 6 for s in scenes if s.kind == "crowded")
    rotated = [s.orientation for s in scenes if s.orientation != 1]
    assert 5 <= len(rotated) <= 10
    assert {3, 6, 8} <= set(rotated) and set(rotated) & {2, 4, 5, 7}
    assert all(s.orientation == 1 for s in scenes if s.name.lower().endswith(".png"))


@pytest.mark.parametrize("orientation", [2, 3, 4, 5, 6, 7, 8])
def test_exif_rotated_file_displays_as_the_scene(orientation: int) -> None:
    scene = make_scene(
        LABELS, seed=orientation, kind="single", size=(420, 330), background="solid", orientation=orientation
    )
    with Image.open(io.BytesIO(scene.data)) as stored:
        assert stored.getexif()[EXIF_ORIENTATION_TAG] == orientation
        assert stored.size == ((330, 420) if orientation >= 5 else (420, 330))
        shown = ImageOps.exif_transpose(stored).convert("RGB")
    assert shown.size == (420, 330)
    diff = np.abs(np.asarray(shown, dtype=np.int16) - np.asarray(scene.image, dtype=np.int16))
    assert diff.mean() < 4.0
    (box,) = scene.boxes
    style = class_styles(LABELS)[box.label]
    cx, cy = box.left + box.width // 2, box.top + box.height // 2
    r, g, b = np.asarray(shown, dtype=np.float64)[cy - 1 : cy + 2, cx - 1 : cx + 2].reshape(-1, 3).mean(0) / 255
    hue, sat, _ = colorsys.rgb_to_hsv(r, g, b)
    hue_error = min(abs(hue * 360 - style.hue), 360 - abs(hue * 360 - style.hue))
    assert sat > 0.5 and hue_error < 25


@pytest.mark.parametrize(
    ("seed", "background", "orientation", "fmt"),
    [
        (1, "solid", 1, "jpeg"),
        (2, "gradient", 1, "png"),
        (3, "noise", 6, "jpeg"),
        (4, "texture", 5, "jpeg"),
        (5, "solid", 8, "jpeg"),
        (6, "gradient", 1, "jpeg"),
    ],
)
def test_detector_finds_the_single_object(seed: int, background: str, orientation: int, fmt: str) -> None:
    scene = make_scene(LABELS, seed=seed, kind="single", background=background, orientation=orientation, fmt=fmt)
    (truth,) = [b.as_dict() for b in scene.boxes]
    found = detect(scene.data, LABELS)
    assert found, "nothing detected"
    best = found[0]
    assert best["label"] == truth["label"]
    assert _iou(best, truth) > 0.8
    assert 0.0 <= best["confidence"] <= 1.0 and best["confidence"] > 0.5


@pytest.mark.parametrize("background", ["solid", "gradient", "noise", "texture"])
def test_detector_returns_nothing_on_an_empty_scene(background: str) -> None:
    scene = make_scene(LABELS, seed=11, kind="empty", background=background)
    assert detect(scene.data, LABELS) == []


def test_detector_confidence_is_lower_for_merged_blobs_than_for_clean_shapes() -> None:
    clean = make_scene(LABELS, seed=21, kind="single", background="solid", size=(400, 400))
    arr = np.asarray(clean.image).copy()
    (box,) = clean.boxes
    # paste a copy of the object overlapping itself: one blob of an unnatural shape
    patch = arr[box.top : box.top + box.height, box.left : box.left + box.width].copy()
    dy, dx = box.height // 2, box.width // 2
    region = arr[box.top + dy : box.top + dy + box.height, box.left + dx : box.left + dx + box.width]
    mask = np.asarray(Image.fromarray(patch).convert("HSV"))[..., 1] > 120
    region[mask[: region.shape[0], : region.shape[1]]] = patch[: region.shape[0], : region.shape[1]][
        mask[: region.shape[0], : region.shape[1]]
    ]
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    (clean_hit,) = detect(clean.data, LABELS)
    merged = detect(buf.getvalue(), LABELS)
    assert len(merged) == 1
    assert merged[0]["confidence"] < clean_hit["confidence"] - 0.3


def test_detector_reads_modes_other_than_rgb() -> None:
    scene = make_scene(LABELS, seed=2, kind="single", background="solid")
    for mode in ("RGBA", "P"):
        buf = io.BytesIO()
        scene.image.convert(mode).save(buf, format="PNG")
        (hit,) = [d for d in detect(buf.getvalue(), LABELS) if d["confidence"] > 0.5]
        assert _iou(hit, scene.boxes[0].as_dict()) > 0.8
    buf = io.BytesIO()
    scene.image.convert("L").save(buf, format="PNG")
    assert detect(buf.getvalue(), LABELS) == []


@pytest.mark.parametrize(
    "data",
    [b"", b"not an image at all", b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\n", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"],
)
def test_detector_rejects_undecodable_bytes(data: bytes) -> None:
    with pytest.raises(DetectorError):
        detect(data, LABELS)


def test_detector_rejects_a_truncated_jpeg() -> None:
    data = make_scene(LABELS, seed=4, kind="single").data
    with pytest.raises(DetectorError):
        detect(data[: len(data) // 2], LABELS)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims the given size (no pixel data): enough to trip size checks."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize("size", [(10_000, 5_000), (20_000, 20_000)])
def test_detector_refuses_images_too_large_to_decode(size: tuple[int, int]) -> None:
    with pytest.raises(DetectorError, match=r"too large|decompression bomb"):
        detect(_png_header_only(*size), LABELS)
