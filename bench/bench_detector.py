"""Benchmark the synthetic detector on generated scenes: speed, quality by scene kind, calibration signal.

Prints one JSON object: generation and detection throughput, mean per-image mIoU (class-aware,
missed/spurious count 0, as calibration uses) by scene kind, how well confidence predicts quality
(Pearson/Spearman per image and per box; quality above a few thresholds), and the threshold the
workflow's calibration would pick from these pairs.

Run: ``PYTHONPATH=.:lambdas .venv/bin/python bench/bench_detector.py --count 300``
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from collections.abc import Sequence

from labelloop_core.boxes import Box
from labelloop_core.calibration import CalibrationPair, calibrate, image_confidence
from labelloop_core.matching import image_quality, match_boxes
from sandbox.scenes import iter_scenes
from sandbox.synthetic_detector import detect


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2.0
        i = j + 1
    return ranks


def _pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    if len(x) < 3 or statistics.pstdev(x) == 0 or statistics.pstdev(y) == 0:
        return None
    return round(statistics.correlation(x, y), 3)


def _spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    return _pearson(_ranks(x), _ranks(y))


def run(count: int, labels: list[str], seed: int) -> dict[str, object]:
    """Generate scenes in memory, detect, and score against the truth."""
    t0 = time.perf_counter()
    scenes = list(iter_scenes(count, labels, seed))
    gen_s = time.perf_counter() - t0
    detect_s = 0.0
    pixels = 0
    by_kind: dict[str, list[float]] = {}
    img_conf_min: list[float] = []
    img_conf_mean: list[float] = []
    img_quality: list[float] = []
    box_conf: list[float] = []
    box_iou: list[float] = []
    exif_quality: list[float] = []
    for scene in scenes:
        t = time.perf_counter()
        preds = detect(scene.data, labels)
        detect_s += time.perf_counter() - t
        pixels += scene.image.width * scene.image.height
        pred_boxes = [Box(p["label"], p["left"], p["top"], p["width"], p["height"], p["confidence"]) for p in preds]
        truth_boxes = [Box(b.label, b.left, b.top, b.width, b.height) for b in scene.boxes]
        quality = image_quality(pred_boxes, truth_boxes)
        by_kind.setdefault(scene.kind, []).append(quality)
        if scene.orientation != 1:
            exif_quality.append(quality)
        if preds:
            confs = [p["confidence"] for p in preds]
            img_conf_min.append(image_confidence(confs) or 0.0)
            img_conf_mean.append(statistics.fmean(confs))
            img_quality.append(quality)
            matched = {p: v for p, _, v in match_boxes(pred_boxes, truth_boxes).pairs}
            for i, p in enumerate(preds):
                box_conf.append(p["confidence"])
                box_iou.append(matched.get(i, 0.0))
    by_confidence: dict[str, dict[str, float | int | None]] = {}
    edges = (0.0, 0.1, 0.3, 0.6, 0.9, 1.01)
    for lo, hi in itertools.pairwise(edges):
        q = [qq for c, qq in zip(img_conf_min, img_quality, strict=True) if lo <= c < hi]
        by_confidence[f"[{lo}, {min(hi, 1.0)}{']' if hi > 1 else ')'}"] = {
            "images": len(q),
            "mean_miou": round(statistics.fmean(q), 3) if q else None,
        }
    all_q = [q for qs in by_kind.values() for q in qs]
    # the threshold the workflow would calibrate if every image with detections had been reviewed
    pairs = list(zip(img_conf_min, img_quality, strict=True))
    calibration: dict[str, dict[str, float | int | None]] = {}
    for target in (0.6, 0.8, 0.9):
        result = calibrate([CalibrationPair(c, q) for c, q in pairs], target=target)
        above = [q for c, q in pairs if result.theta is not None and c >= result.theta]
        below = [q for c, q in pairs if result.theta is None or c < result.theta]
        calibration[str(target)] = {
            "theta": result.theta,
            "lower_bound": None if result.lower_bound is None else round(result.lower_bound, 3),
            "images_accepted": len(above),
            "realised_mean_miou_accepted": round(statistics.fmean(above), 3) if above else None,
            "mean_miou_below_theta": round(statistics.fmean(below), 3) if below else None,
        }
    return {
        "images": len(scenes),
        "labels": labels,
        "generate_images_per_s": round(len(scenes) / gen_s, 1),
        "detect_images_per_s": round(len(scenes) / detect_s, 1),
        "mean_megapixels": round(pixels / len(scenes) / 1e6, 3),
        "mean_miou": round(statistics.fmean(all_q), 3),
        "mean_miou_by_kind": {
            k: {
                "images": len(v),
                "mean_miou": round(statistics.fmean(v), 3),
                "share_ge_0.7": round(sum(q >= 0.7 for q in v) / len(v), 3),
            }
            for k, v in sorted(by_kind.items())
        },
        "exif_rotated": {
            "images": len(exif_quality),
            "mean_miou": round(statistics.fmean(exif_quality), 3) if exif_quality else None,
        },
        "image_confidence_vs_quality": {
            "images_with_detections": len(img_quality),
            "pearson_min_conf": _pearson(img_conf_min, img_quality),
            "spearman_min_conf": _spearman(img_conf_min, img_quality),
            "pearson_mean_conf": _pearson(img_conf_mean, img_quality),
            "spearman_mean_conf": _spearman(img_conf_mean, img_quality),
            "mean_miou_by_image_confidence": by_confidence,
        },
        "calibration_if_all_reviewed_by_target": calibration,
        "box_confidence_vs_iou": {
            "boxes": len(box_iou),
            "pearson": _pearson(box_conf, box_iou),
            "spearman": _spearman(box_conf, box_iou),
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run the benchmark, print JSON."""
    parser = argparse.ArgumentParser(description="Benchmark the synthetic detector on synthetic scenes.")
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--labels", default="car,person,bicycle")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    labels = [s.strip() for s in args.labels.split(",") if s.strip()]
    print(json.dumps(run(args.count, labels, args.seed), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
