"""Benchmark the emulation's learned detector: training time, prediction speed vs the synthetic detector, quality.

Prints one JSON object: seconds to train on about ``--boxes`` boxes, prediction milliseconds per image
for the learned and the synthetic detector on the same held-out scenes, and held-out quality (mean
per-image mIoU, F1, mAP50 from ``labelloop_core.evaluation``) by training-set size over several seeds,
plus the promotion decision for candidates trained on corrupted labels against a properly trained one.

Run: ``PYTHONPATH=.:lambdas .venv/bin/python bench/bench_learned_detector.py``
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Sequence
from typing import Any

from labelloop_core.evaluation import EvaluationImage, evaluate
from sandbox.learned_detector import LearnedDetector, train
from sandbox.scene_training import boxes_of, evaluation_set, shifted_boxes
from sandbox.scenes import Scene, iter_scenes
from sandbox.synthetic_detector import decode_image, detect


def _examples(scenes: Sequence[Scene]) -> list[tuple[bytes, list[dict[str, Any]]]]:
    return [(s.data, [b.as_dict() for b in s.boxes]) for s in scenes]


def _evaluation(held_out: Sequence[Scene], incumbent: LearnedDetector, candidate: LearnedDetector) -> dict[str, Any]:
    images = evaluation_set(held_out, incumbent, candidate)
    r = evaluate(images)
    return {
        "candidate_quality": round(r.candidate_quality, 3),
        "incumbent_quality": round(r.incumbent_quality, 3),
        "candidate_f1": round(r.f1, 3),
        "candidate_map50": None if r.map50 is None else round(r.map50, 3),
        "e_value": round(r.e_value, 3),
        "promoted": r.promoted,
    }


def run(boxes: int, held_out_count: int, labels: list[str], seeds: int) -> dict[str, Any]:
    """Train and evaluate; every number comes from generated scenes and their truth."""
    pool = list(iter_scenes(max(50, boxes // 3), labels, seed=100))
    train_scenes: list[Scene] = []
    for s in pool:
        if sum(len(t.boxes) for t in train_scenes) >= boxes:
            break
        train_scenes.append(s)
    while sum(len(t.boxes) for t in train_scenes) < boxes:  # top up if the pool ran short
        train_scenes.extend(iter_scenes(50, labels, seed=100 + len(train_scenes)))
    examples = _examples(train_scenes)
    t0, c0 = time.perf_counter(), time.process_time()
    model = train(examples)
    train_s, train_cpu = time.perf_counter() - t0, time.process_time() - c0
    c0 = time.process_time()
    for data, _ in examples:
        decode_image(data)
    decode_cpu = time.process_time() - c0  # PIL decoding, part of training's time
    held_out = list(iter_scenes(held_out_count, labels, seed=999))
    # CPU time, alternating the two detectors image by image, so machine load hits both alike
    learned_cpu = synthetic_cpu = 0.0
    synthetic_q = []
    for s in held_out:
        c0 = time.process_time()
        model.detect(s.data)
        c1 = time.process_time()
        synthetic_q.append(boxes_of(detect(s.data, labels)))
        learned_cpu += c1 - c0
        synthetic_cpu += time.process_time() - c1
    learned_ms = learned_cpu / len(held_out) * 1000
    synthetic_ms = synthetic_cpu / len(held_out) * 1000
    by_size: dict[str, list[dict[str, Any]]] = {}
    for n in (1, 4, 16, 64):
        runs = []
        for seed in range(seeds):
            scenes = [s for s in iter_scenes(n * 3, labels, seed=seed) if s.boxes][:n]
            runs.append(_evaluation(held_out, LearnedDetector(), train(_examples(scenes))))
        by_size[str(n)] = runs
    corrupted = train(shifted_boxes(train_scenes[:60], 1))
    shuffled = train(
        [(d, [{**b, "label": random.Random(i).choice(labels)} for b in bs]) for i, (d, bs) in enumerate(examples[:60])]
    )
    proper = train(examples[:60])
    synthetic_quality = evaluate(
        [
            EvaluationImage(s.name, boxes_of([b.as_dict() for b in s.boxes]), p, boxes_of(model.detect(s.data)))
            for s, p in zip(held_out, synthetic_q, strict=True)
        ]
    )
    return {
        "train_images": len(train_scenes),
        "train_boxes": sum(len(b) for _, b in examples),
        "train_seconds": round(train_s, 3),
        "train_cpu_seconds": round(train_cpu, 3),
        "of_which_decode_cpu_seconds": round(decode_cpu, 3),
        "artifact_bytes": len(model.to_bytes()),
        "held_out_images": len(held_out),
        "predict_cpu_ms_per_image": {"learned": round(learned_ms, 2), "synthetic": round(synthetic_ms, 2)},
        "held_out_quality": {
            "learned": round(synthetic_quality.candidate_quality, 3),
            "learned_f1": round(synthetic_quality.f1, 3),
            "learned_map50": None if synthetic_quality.map50 is None else round(synthetic_quality.map50, 3),
            "synthetic": round(synthetic_quality.incumbent_quality, 3),
            "synthetic_f1": round(synthetic_quality.incumbent_f1, 3),
        },
        "vs_untrained_by_training_images": {
            k: {
                "mean_quality": round(statistics.fmean(r["candidate_quality"] for r in v), 3),
                "promoted": sum(r["promoted"] for r in v),
                "runs": v,
            }
            for k, v in by_size.items()
        },
        "corrupted_candidate_vs_proper_60_images": {
            "boxes_moved": _evaluation(held_out, proper, corrupted),
            "labels_shuffled": _evaluation(held_out, proper, shuffled),
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run the benchmark, print JSON."""
    parser = argparse.ArgumentParser(description="Benchmark the learned detector on synthetic scenes.")
    parser.add_argument("--boxes", type=int, default=1000)
    parser.add_argument("--held-out", type=int, default=150)
    parser.add_argument("--labels", default="car,person,bicycle")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)
    labels = [s.strip() for s in args.labels.split(",") if s.strip()]
    print(json.dumps(run(args.boxes, args.held_out, labels, args.seeds), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
