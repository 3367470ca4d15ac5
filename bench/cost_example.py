"""The README's worked cost example: N images (10,000 by default) through the ledger, never typed by hand.

    .venv/bin/python bench/bench_counters.py 200 > counters.json
    .venv/bin/python bench/cost_example.py counters.json [--images 10000] [--auto-accept 0.74] ...

Orchestration is the emulation's per-image counters (``bench_counters.py``: Lambda requests and GB-s,
state transitions, the functions' S3 requests, export included) x images. Human review: the images
not auto-accepted go to one Ground Truth job each batch (adjust mode), the per-object fee per image
plus the workforce's price per task. Model hosting: one Rekognition Custom Labels inference unit
started for ``--hosting-hours`` (default 1) to pre-label, then stopped. The same images are also
priced all to Ground Truth with no model, and with the model left running for ``--always-on-days``.
JSON on stdout, the README's table on stderr; every price from ``labelloop_core.pricing``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "lambdas")]

from labelloop_core.contract import Cost  # noqa: E402
from labelloop_core.pricing import PRICES_DATE, PRICES_REGION, Usage, ledger, prices  # noqa: E402

#: Wave 2 of `make demo` (README, "What make demo shows"): 133 of 180 images auto-accepted once θ is calibrated.
DEMO_AUTO_ACCEPT = round(133 / 180, 2)


def scenario(counters: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The ledger for ``args.images`` with the model, and the two comparisons."""
    per = counters["per_image"]
    images = args.images
    reviewed = round(images * (1 - args.auto_accept))
    table = prices({"workforce_per_task": args.workforce})
    orchestration = {
        "lambda_requests": round(per["lambda_invocations"] * images),
        "lambda_gb_seconds": per["lambda_gb_seconds_emulated"] * images,
        "state_transitions": round(per["state_transitions"] * images),
        "s3_tier1": round(per["s3_tier1_requests"] * images),
        "s3_tier2": round(per["s3_tier2_requests"] * images),
    }
    common = {"labeled_images": images, **orchestration}
    with_model = Usage(
        model="rekognition",
        model_hours=args.hosting_hours,
        model_calls=images,
        training_seconds=args.training_hours * 3600,
        review_objects=reviewed,
        review_tasks=reviewed,  # one worker per object
        **common,
    )
    always_on = dataclasses.replace(with_model, model_hours=args.always_on_days * 24)
    no_model = Usage(review_objects=images, review_tasks=images, **common)
    return {
        "images": images,
        "auto_accept_share": args.auto_accept,
        "reviewed": reviewed,
        "assumptions": {
            "hosting_hours": args.hosting_hours,
            "always_on_days": args.always_on_days,
            "training_hours": args.training_hours,
            "workforce_per_task": args.workforce,
            "orchestration_per_image_from": f"bench_counters.py {counters['images']} (emulation, per image)",
        },
        "prices": {"date": PRICES_DATE, "region": PRICES_REGION},
        "with_model": ledger(with_model, table),
        "model_left_running": ledger(always_on, table),
        "all_to_ground_truth": ledger(no_model, table),
    }


def markdown(result: dict[str, Any]) -> str:
    """One row per component, one column per way of labeling the same images."""
    columns = (
        ("with_model", f"LabelLoop, model hosted {result['assumptions']['hosting_hours']:g} h"),
        ("model_left_running", f"model left running {result['assumptions']['always_on_days']:g} days"),
        ("all_to_ground_truth", "every image to Ground Truth, no model"),
    )
    lines = ["| component | " + " | ".join(title for _, title in columns) + " |", "| --- |" + " ---: |" * 3]
    for name in result["with_model"][Cost.COMPONENTS]:
        lines.append(f"| {name} | " + " | ".join(f"{result[k][Cost.COMPONENTS][name]:,.2f}" for k, _ in columns) + " |")
    lines.append("| **total** | " + " | ".join(f"**{result[k][Cost.TOTAL]:,.2f}**" for k, _ in columns) + " |")
    lines.append("| per image | " + " | ".join(f"{result[k][Cost.PER_IMAGE]:.4f}" for k, _ in columns) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("counters", type=Path, help="bench_counters.py's JSON")
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--auto-accept", type=float, default=DEMO_AUTO_ACCEPT, help="share of images auto-accepted")
    parser.add_argument("--hosting-hours", type=float, default=1.0, help="hours the model is hosted to pre-label")
    parser.add_argument("--always-on-days", type=float, default=30.0, help="the model left running this long")
    parser.add_argument("--training-hours", type=float, default=0.0, help="billable training hours (the loop)")
    parser.add_argument("--workforce", type=float, default=0.0, help="USD per task (one worker per object)")
    args = parser.parse_args(argv)
    if not 0 <= args.auto_accept <= 1 or args.images < 1:
        raise SystemExit("--auto-accept must be in [0, 1] and --images >= 1")
    return scenario(json.loads(args.counters.read_text()), args)


if __name__ == "__main__":
    out = main(sys.argv[1:])
    print(json.dumps(out, indent=2))
    print(markdown(out), file=sys.stderr)
