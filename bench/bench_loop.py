"""The retrain loop end to end: ``labelloop local run --model learn --waves N`` on the demo's scenes, several seeds.

For each seed, the same scenes run twice on the in-process emulation, reviewed by the oracle (the
scenes' truth drawn with 2% noise):

* ``loop``: the stack retrains between waves (the local run's ``--model learn`` defaults);
* ``no_loop``: the same untrained first version, retraining off (``retrain.enabled=false``):
  every image goes to people, as without LabelLoop's loop.

Per run: each version's status, training images, evaluation quality against the incumbent's, F1,
mAP50 and training seconds (the emulation's measured ones); each wave's auto-accepted share and
human boxes; human images and boxes per exported image; wall seconds. Prints one JSON object.

Run: ``PYTHONPATH=.:lambdas .venv/bin/python bench/bench_loop.py --seeds 3`` (a few minutes per seed);
``--model learn-sagemaker`` measures the same loop on the SageMaker backend.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cli.main import main
from labelloop_core.contract import RUN_REPORT_FILE
from sandbox.scenes import generate_scenes

LABELS = "bicycle,car,person"


def _run(images: Path, truth: Path, out: Path, waves: int, loop: bool, model: str = "learn") -> dict[str, Any]:
    argv = ["local", "run", "--images", str(images), "--out", str(out), "--model", model, "--waves", str(waves)]
    argv += ["--reviewer", f"oracle:{truth}", "--labels", LABELS]
    if not loop:
        argv += ["--context", "labelloop.retrain.enabled=false"]
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = main(argv)
    report = json.loads((out / RUN_REPORT_FILE).read_text())
    exported = max(1, int(report["exported_images"]))
    boxes = sum(int(w["human_boxes"]) for w in report["waves"])
    return {
        "exit_code": code,
        "problems": report["problems"],
        "seconds": round(time.perf_counter() - started, 1),
        "images": report["images_received"],
        "human_images_per_exported": round(report["human_reviewed"] / exported, 3),
        "human_boxes_per_exported": round(boxes / exported, 3),
        "auto_accepted": report["auto_accepted"],
        "versions": [
            {
                "version": m["version"],
                "status": m["status"],
                "trained_on_images": m["trained_on_images"],
                "training_seconds": (m.get("training_cost") or {}).get("billable_training_seconds"),
                **{
                    k: (m["evaluation"] or {}).get(k)
                    for k in ("images", "candidate_quality", "incumbent_quality", "f1", "map50", "promoted")
                },
            }
            for m in report.get("models") or []
        ],
        "waves": [
            {
                "wave": w["wave"],
                "model_version": w["model_version"],
                "auto_accepted_share": round(w["auto_accepted"] / max(1, w["images"]), 3),
                "human_boxes": w["human_boxes"],
                "theta": w["theta"],
            }
            for w in report["waves"]
        ],
    }


def main_bench(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--count", type=int, default=200, help="scenes per seed")
    parser.add_argument("--waves", type=int, default=4)
    parser.add_argument("--model", choices=("learn", "learn-sagemaker"), default="learn", help="the retrain backend")
    args = parser.parse_args(argv)
    runs = []
    for seed in range(args.seeds):
        with tempfile.TemporaryDirectory(prefix="bench-loop-") as tmp:
            truth = generate_scenes(Path(tmp) / "images", args.count, LABELS.split(","), seed=seed)
            images = truth.parent
            loop = _run(images, truth, Path(tmp) / "loop", args.waves, loop=True, model=args.model)
            no_loop = _run(images, truth, Path(tmp) / "no-loop", args.waves, loop=False, model=args.model)
        runs.append({"seed": seed, "loop": loop, "no_loop": no_loop})
        print(f"seed {seed}: loop {loop['seconds']}s, no loop {no_loop['seconds']}s", file=sys.stderr)

    def mean(path: tuple[str, str]) -> float:
        return round(statistics.fmean(float(r[path[0]][path[1]]) for r in runs), 3)

    promoted = [sum(1 for v in r["loop"]["versions"][1:] if v["promoted"]) for r in runs]
    summary = {
        "model": args.model,
        "seeds": args.seeds,
        "scenes": args.count,
        "waves": args.waves,
        "human_images_per_exported": {
            "loop": mean(("loop", "human_images_per_exported")),
            "no_loop": mean(("no_loop", "human_images_per_exported")),
        },
        "human_boxes_per_exported": {
            "loop": mean(("loop", "human_boxes_per_exported")),
            "no_loop": mean(("no_loop", "human_boxes_per_exported")),
        },
        "promoted_versions_per_run": promoted,
        "wall_seconds": {"loop": mean(("loop", "seconds")), "no_loop": mean(("no_loop", "seconds"))},
    }
    print(json.dumps({"benchmark": "loop", "summary": summary, "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main_bench())
