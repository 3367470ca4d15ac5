"""Benchmark the pre-label path's own CPU cost (the model call itself is excluded).

Prints one JSON object with images/s on one core for:
- ``builtin_to_line`` / ``ultralytics_to_line`` / ``rekognition_to_line``: a raw model answer
  (5 detections) -> parsed boxes -> `finalize_boxes` -> the ``labelloop-prelabel`` line -> JSON text
  (what the pre-label handler does per image besides calling the model);
- ``route``: `decide_route` + the accepted/review line + JSON text (the route handler per image);
- ``calibration_pair``: `calibration_pair` on a reviewed output line (the calibrate handler per image);
- ``calibrate_100k``: seconds to recompute theta over 100,000 pairs.
So a shard's wall time is dominated by model latency, and the numbers say by how much.
No thresholds are asserted.

Run: ``PYTHONPATH=.:lambdas .venv/bin/python bench/bench_prelabel.py [--images 20000]``
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable
from typing import Any

from labelloop_core.boxes import Box
from labelloop_core.calibration import CalibrationPair, calibrate
from labelloop_core.classes import ClassRegistry
from labelloop_core.contract import META_KEY
from labelloop_core.manifest import bbox_label_line, dumps_line
from labelloop_core.prelabels import (
    accepted_line,
    builtin_detector_boxes,
    calibration_pair,
    decide_route,
    finalize_boxes,
    prelabel_line,
    rekognition_boxes,
    review_line,
    ultralytics_boxes,
)

LABELS = ["car", "person", "bus", "bicycle", "dog"]
W, H = 1280, 960


def _line(i: int) -> dict[str, Any]:
    key = f"incoming/street/img{i:06d}.jpg"
    meta = {"dataset": "street", "batch_id": "b", "key": key, "labeled_key": key, "width": W, "height": H}
    return {"source-ref": f"s3://bucket/{key}", META_KEY: meta}


def _answers(rnd: random.Random) -> dict[str, Any]:
    rows = []
    for _ in range(5):
        x, y = rnd.uniform(0, 0.8), rnd.uniform(0, 0.8)
        rows.append([rnd.randrange(len(LABELS)), rnd.uniform(0.3, 1), x, y, x + 0.1, y + 0.15])
    builtin = json.dumps({"prediction": rows}).encode()
    ultra = json.dumps(
        [
            {
                "name": LABELS[r[0]],
                "class": r[0],
                "confidence": r[1],
                "box": {"x1": r[2] * W, "y1": r[3] * H, "x2": r[4] * W, "y2": r[5] * H},
            }
            for r in rows
        ]
    ).encode()
    rek = {
        "CustomLabels": [
            {
                "Name": LABELS[r[0]],
                "Confidence": r[1] * 100,
                "Geometry": {"BoundingBox": {"Left": r[2], "Top": r[3], "Width": 0.1, "Height": 0.15}},
            }
            for r in rows
        ]
        + [{"Name": "street-scene", "Confidence": 99.0}]
    }
    return {"builtin": builtin, "ultralytics": ultra, "rekognition": rek}


def _rate(n: int, fn: Callable[[int], Any]) -> float:
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    return round(n / (time.perf_counter() - start), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=20000)
    args = parser.parse_args()
    rnd = random.Random(3)
    answers = [_answers(rnd) for _ in range(500)]
    n = args.images

    def to_line(kind: str) -> Callable[[int], str]:
        def run(i: int) -> str:
            answer = answers[i % len(answers)][kind]
            if kind == "builtin":
                boxes, skipped = builtin_detector_boxes(answer, LABELS, W, H)
            elif kind == "ultralytics":
                boxes, skipped = ultralytics_boxes(answer, LABELS, W, H)
            else:
                boxes, skipped = rekognition_boxes(answer, W, H)
            det = finalize_boxes(boxes, LABELS, W, H, 0.05, skipped)
            return dumps_line(prelabel_line(_line(i), LABELS, W, H, "bench", det, creation_date="2026-01-01"))

        return run

    prelabeled = [json.loads(to_line("builtin")(i)) for i in range(len(answers))]

    def route_one(i: int) -> str:
        line = prelabeled[i % len(prelabeled)]
        decision = decide_route(line, 0.6, 0.05)
        out = accepted_line(line, 0.6, "2026-01-01") if decision.accepted else review_line(line, decision)
        return dumps_line(out)

    registry = ClassRegistry(LABELS)
    reviewed = []
    for i, line in enumerate(prelabeled):
        jitter = [Box(LABELS[i % 5], 100 + i % 7, 100, 120, 140)]
        final = bbox_label_line(line["source-ref"], "job", (W, H, 3), jitter, registry, True, "job")
        reviewed.append(
            {
                **line,
                **{k: v for k, v in final.items() if k != "source-ref"},
                META_KEY: {**line[META_KEY], "label_attribute": "job"},
            }
        )

    pairs = [CalibrationPair(rnd.random(), rnd.random()) for _ in range(100_000)]
    start = time.perf_counter()
    result = calibrate(pairs, 0.6, 0.95, 30)
    calibrate_s = round(time.perf_counter() - start, 3)

    print(
        json.dumps(
            {
                "images": n,
                "images_per_second": {
                    "builtin_to_line": _rate(n, to_line("builtin")),
                    "ultralytics_to_line": _rate(n, to_line("ultralytics")),
                    "rekognition_to_line": _rate(n, to_line("rekognition")),
                    "route": _rate(n, route_one),
                    "calibration_pair": _rate(n, lambda i: calibration_pair(reviewed[i % len(reviewed)], registry)),
                },
                "calibrate_100k": {"seconds": calibrate_s, "theta": result.theta, "reason": result.reason},
            }
        )
    )


if __name__ == "__main__":
    main()
