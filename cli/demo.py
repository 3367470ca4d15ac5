"""`labelloop demo` (what `make demo` runs): the whole pipeline on generated scenes with known truth.

1. generate synthetic scenes (coloured shapes of three classes on varied backgrounds; some empty,
   some crowded, some EXIF-rotated, keys with spaces/unicode/``+``) and their ``truth.jsonl``;
2. ``labelloop local run --model synthetic --reviewer oracle:truth.jsonl`` on them, uploading in two
   waves: calibration needs human-reviewed pairs, so the first wave (40%) goes to humans and sets
   theta; the second wave is routed with it, as when a real user's data arrives over time;
3. judge the result against the truth: how many reviewed images the oracle had to fix, the realised
   quality of auto-accepted images, and a structural check of the exported YOLO dataset.
The synthetic model predicts from pixels, never from the truth file, so its mistakes are real.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cli.errors import CliError
from labelloop_core import contract
from labelloop_core.contract import RUN_REPORT_FILE

DEMO_LABELS = ("bicycle", "car", "person")
#: Above the stack's 0.6: the synthetic detector's pre-labels score about 0.87 overall, so at 0.75 the
#: betting test certifies every threshold down to 0 after wave 1, and at 0.85 none (both show nothing).
DEMO_TARGET_QUALITY = 0.8
DEMO_FIRST_WAVE = 0.4
#: The stack's default: the fixed-sequence test starts at the highest threshold with 30 pairs above it.
DEMO_MIN_PAIRS = 30
#: The loop part: the same scenes again, the model starting untrained, uploaded in this many waves.
DEMO_LOOP_WAVES = 4
#: A reviewed image counts as "fixed" when the final boxes differ from the pre-labels by more than
#: a worker's re-drawing noise: a box added, removed or relabeled, or moved to IoU below this.
FIX_IOU = 0.5


def register(sub: Any) -> None:
    """Add the ``demo`` subcommand."""
    parser = sub.add_parser("demo", help="run LabelLoop on generated sample images, no AWS account needed")
    parser.add_argument("--out", type=Path, default=Path("demo-out"), help="output folder (default demo-out)")
    parser.add_argument("--count", type=int, default=300, help="number of scenes (default 300)")
    parser.add_argument("--seed", type=int, default=0, help="scene and oracle seed")
    parser.add_argument("--target-quality", type=float, default=DEMO_TARGET_QUALITY, help="calibration target mIoU")
    parser.add_argument("--min-pairs", type=int, default=DEMO_MIN_PAIRS, help="calibration pairs before theta")
    parser.add_argument("--first-wave", type=float, default=DEMO_FIRST_WAVE, help="fraction uploaded first")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the pipeline")
    parser.add_argument(
        "--loop-waves",
        type=int,
        default=DEMO_LOOP_WAVES,
        help="then run the retrain loop on the same scenes in this many waves, starting untrained (0: skip)",
    )
    parser.add_argument(
        "--task-mode",
        choices=("adjust", "verify"),
        default="adjust",
        help="adjust (people fix the pre-labels) or verify (people judge them first; only rejected ones are adjusted)",
    )
    parser.set_defaults(func=run)


# ----------------------------------------------------------------------------- truth judgement


@dataclass
class Judgement:
    """The run judged against the scenes' truth."""

    accepted: int = 0
    accepted_quality: list[float] = field(default_factory=list)
    reviewed: int = 0
    fixed: int = 0
    fixes: Counter[str] = field(default_factory=Counter)
    reviewed_final_quality: list[float] = field(default_factory=list)
    model_quality: list[float] = field(default_factory=list)
    unknown: int = 0

    @staticmethod
    def mean(values: list[float]) -> float | None:
        return round(sum(values) / len(values), 4) if values else None


def _boxes(line: dict[str, Any], attribute: str, labels: tuple[str, ...]) -> list[Any] | None:
    from labelloop_core.classes import ClassRegistry
    from labelloop_core.manifest import ManifestError, parse_bbox_label

    if attribute not in line:
        return None
    try:
        return list(parse_bbox_label(line, attribute, registry=ClassRegistry(labels)).boxes)
    except ManifestError:
        return None


def judge(manifests: list[Path], truth_file: Path, incoming: str, labels: tuple[str, ...], target: float) -> Judgement:
    """Compare every labeled line of the run's output manifests with the truth."""
    from labelloop_core.boxes import Box
    from labelloop_core.matching import image_quality, match_boxes

    truth: dict[str, list[Box]] = {}
    for raw in truth_file.read_text(encoding="utf-8").splitlines():
        if raw.strip():
            record = json.loads(raw)
            truth[record["image"]] = [
                Box(d["label"], d["left"], d["top"], d["width"], d["height"]) for d in record["detections"]
            ]
    result = Judgement()
    for manifest in manifests:
        for raw in manifest.read_text(encoding="utf-8").splitlines():
            if not raw.strip():
                continue
            line = json.loads(raw)
            meta = line.get(contract.META_KEY) or {}
            key = str(meta.get("key", ""))
            relative = key[len(incoming) :] if key.startswith(incoming) else key
            final = _boxes(line, str(meta.get("label_attribute")), labels)
            pre = _boxes(line, contract.PRELABEL_ATTRIBUTE, labels) or []
            if relative not in truth or final is None:
                result.unknown += 1
                continue
            result.model_quality.append(image_quality(pre, truth[relative]))
            if meta.get(contract.Meta.LABEL_ATTRIBUTE) == contract.AUTO_ATTRIBUTE:
                result.accepted += 1
                result.accepted_quality.append(image_quality(final, truth[relative]))
                continue
            result.reviewed += 1
            result.reviewed_final_quality.append(image_quality(final, truth[relative]))
            match = match_boxes(pre, final, FIX_IOU)
            kinds = []
            if match.unmatched_truth:
                kinds.append("a missed box added")
            if match.unmatched_pred:
                kinds.append("a spurious or mislabeled box removed")
            if kinds:
                result.fixed += 1
                result.fixes.update(kinds)
    return result


# ------------------------------------------------------------------------ dataset structural check

_ROW_VALUE = re.compile(r"^(0|1)\.\d{6}$")
_IMAGE_SUFFIXES = {".bmp", ".dng", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp", ".pfm", ".heic"}


def check_dataset(root: Path) -> tuple[dict[str, int], list[str]]:
    """A structural check of a YOLO dataset folder (layout, data.yaml, one label file per image,
    row format and range); returns (counts, problems)."""
    import yaml

    counts: Counter[str] = Counter()
    yaml_path = root / contract.DATA_YAML_FILE
    if not yaml_path.is_file():
        return dict(counts), [f"{yaml_path} is missing"]
    doc = yaml.safe_load(yaml_path.read_text(encoding="utf-8")) or {}
    names, problems = _check_data_yaml(doc)
    for split in ("train", "val"):
        problems += _check_split(root, split, names, counts)
    return dict(counts), problems


def _check_data_yaml(doc: dict[str, Any]) -> tuple[dict[Any, Any], list[str]]:
    """The class names of data.yaml and what is wrong with its keys."""
    problems: list[str] = []
    names = doc.get("names")
    if isinstance(names, list):
        names = dict(enumerate(names))
    if not isinstance(names, dict) or not names:
        problems.append("data.yaml: names must be a non-empty mapping id -> name")
        names = {}
    if "nc" in doc and doc["nc"] != len(names):
        problems.append(f"data.yaml: nc {doc['nc']} != {len(names)} names")
    for key in ("train", "val"):
        if key not in doc:
            problems.append(f"data.yaml: no {key!r} key")
    if "download" in doc:
        problems.append("data.yaml: has a download key")
    return names, problems


def _check_split(root: Path, split: str, names: dict[Any, Any], counts: Counter[str]) -> list[str]:
    """One label file per image of the split, none without an image, every row well formed."""
    images = root / "images" / split
    labels = root / "labels" / split
    if not images.is_dir() or not labels.is_dir():
        return [f"images/{split} or labels/{split} is missing"]
    problems: list[str] = []
    stems: set[str] = set()
    for image in sorted(images.rglob("*")):
        if not image.is_file() or image.suffix.lower() not in _IMAGE_SUFFIXES:
            continue
        counts[f"{split}_images"] += 1
        relative = image.relative_to(images).with_suffix("")
        if str(relative) in stems:
            problems.append(f"images/{split}: two images share the label stem {relative}")
        stems.add(str(relative))
        label = labels / relative.with_suffix(".txt")
        if not label.is_file():
            problems.append(f"{image.relative_to(root)} has no label file")
            continue
        problems += _check_label_file(root, label, names, counts)
    for label in labels.rglob("*.txt"):
        if str(label.relative_to(labels).with_suffix("")) not in stems:
            problems.append(f"{label.relative_to(root)} has no image")
    return problems


def _check_label_file(root: Path, label: Path, names: dict[Any, Any], counts: Counter[str]) -> list[str]:
    """Rows of one label file: class id known, 6-decimal values in [0, 1], non-empty boxes, no duplicates."""
    problems: list[str] = []
    rows = [row for row in label.read_text(encoding="utf-8").splitlines() if row.strip()]
    counts["background_images" if not rows else "labeled_images"] += 1
    if len(rows) != len(set(rows)):
        problems.append(f"{label.relative_to(root)}: duplicate rows")
    for row in rows:
        parts = row.split(" ")
        if len(parts) != 5 or not parts[0].isdigit() or int(parts[0]) not in names:
            problems.append(f"{label.relative_to(root)}: bad row {row!r}")
        elif not all(_ROW_VALUE.match(v) and float(v) <= 1.0 for v in parts[1:]):
            problems.append(f"{label.relative_to(root)}: values must be 6-decimal numbers in [0, 1]: {row!r}")
        elif float(parts[3]) <= 0 or float(parts[4]) <= 0:
            problems.append(f"{label.relative_to(root)}: empty box {row!r}")
        else:
            counts["boxes"] += 1
    return problems


# ---------------------------------------------------------------------------------------- run


def _generate(folder: Path, count: int, seed: int) -> tuple[Path, float]:
    """Draw the scenes (in a worker process); returns the truth file and the seconds it took."""
    from sandbox.scenes import generate_scenes

    started = time.perf_counter()
    return generate_scenes(folder, count, list(DEMO_LABELS), seed=seed), time.perf_counter() - started


def _num(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def run(args: argparse.Namespace) -> int:
    """Generate scenes, run the pipeline on them, judge and print the summary."""
    from cli.local_run import print_outcome

    if args.count < 10:
        raise CliError("--count must be at least 10 (two waves and both splits need images)")
    started = time.perf_counter()
    out: Path = args.out
    spec, result, truth, generated = _run_pipeline(args, started)
    code = print_outcome(result, out)
    report = result.report
    manifests = [Path(b["output_manifest"]) for b in report["batches"] if b.get("output_manifest")]
    print("")
    print("What the demo did")
    _print_plan(args, generated)
    _print_batches(report["batches"])
    _print_stages(report)
    incoming = f"{contract.DEFAULT_INCOMING_PREFIX}demo/"
    judged = judge(manifests, truth, incoming, DEMO_LABELS, args.target_quality) if manifests else None
    final = (report.get("threshold") or {}).get("final") or {}
    if judged is not None:
        _print_judgement(judged, final, args, spec.oracle_noise)
    else:
        print("  no labeled manifest came back, so nothing could be judged against the truth")
    dataset_ok = _print_dataset_check(result.dataset_dir, report.get("export_version"))
    pipeline_seconds = time.perf_counter() - started
    loop_ok = _run_loop(args, spec.images) if args.loop_waves > 0 else True
    summary = demo_summary(time.perf_counter() - started, generated, judged, dataset_ok and loop_ok)
    summary["cost"] = _print_cost(report, truth, spec.workers, pipeline_seconds)
    (out / "demo.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    print(f"  finished in {summary['seconds']}s; details in {out / RUN_REPORT_FILE} and {out / 'demo.json'}")
    if result.dataset_dir is not None and not dataset_ok:
        return 1
    return code


def _run_pipeline(args: argparse.Namespace, started: float) -> tuple[Any, Any, Path, float]:
    """Draw the scenes in another process while this one synthesizes the stack, then run the pipeline."""
    from cli.local_run import execute
    from sandbox.localrun import RunSpec, synthesize_stack
    from sandbox.scenes import TRUTH_FILE

    out: Path = args.out
    scenes = out / "scenes"
    if scenes.exists():
        shutil.rmtree(scenes)
    spec = RunSpec(
        images=scenes,
        out=out,
        dataset="demo",
        labels=DEMO_LABELS,
        model="synthetic",
        reviewer=f"oracle:{scenes / TRUTH_FILE}",
        target_quality=args.target_quality,
        min_pairs=args.min_pairs,
        first_wave=args.first_wave,
        seed=args.seed,
        timeout_s=args.timeout,
        task_mode=args.task_mode,
    )
    with (
        tempfile.TemporaryDirectory(prefix="labelloop-demo-") as tmp,
        ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool,
    ):
        print("[demo] generating the scenes while the stack synthesizes ...", file=sys.stderr, flush=True)
        drawing = pool.submit(_generate, scenes, args.count, args.seed)
        assembly = synthesize_stack(spec, DEMO_LABELS, Path(tmp) / "cdk.out")
        truth, generated = drawing.result()
        print(f"[demo] generated {args.count} scenes in {generated:.1f}s", file=sys.stderr, flush=True)
        print(f"[demo] stack synthesized after {time.perf_counter() - started:.1f}s", file=sys.stderr, flush=True)
        result = execute(spec, assembly)
    return spec, result, truth, generated


def _run_loop(args: argparse.Namespace, scenes: Path) -> bool:
    """The retrain loop on the same scenes: an untrained first version, retrained from people's labels."""
    from cli.local_run import execute, print_loop
    from sandbox.localrun import RunSpec
    from sandbox.scenes import TRUTH_FILE

    print("")
    print(
        f"The loop: the same {args.count} scenes in {args.loop_waves} waves; the model starts untrained and"
        " people's labels train each next version, promoted only when better on the same human-labeled images"
    )
    spec = RunSpec(
        images=scenes,
        out=args.out / "loop",
        dataset="loop",
        labels=DEMO_LABELS,
        model="learn",
        reviewer=f"oracle:{scenes / TRUTH_FILE}",
        waves=args.loop_waves,
        seed=args.seed,
        timeout_s=args.timeout,
    )
    result = execute(spec)
    print_loop(result, spec.out)
    report = result.report
    exported = max(1, int(report.get("exported_images") or 0))
    print(
        f"  {report.get('human_reviewed')} of {report.get('images_received')} images went to people"
        f" ({report.get('human_reviewed', 0) / exported:.0%}); without the loop the untrained model sends all of"
        f" them; accounting {'OK' if not result.problems else 'FAILED: ' + '; '.join(result.problems)[:300]}"
    )
    cost = report.get(contract.Cost.FIELD)
    if isinstance(cost, dict):
        parts = cost[contract.Cost.COMPONENTS]
        print(
            f"  the loop cost ${cost[contract.Cost.TOTAL]:.4f}: training ${parts['training']:.4f} (billable seconds),"
            f" model hosting ${parts['model_hosting']:.4f} (every version from start to stop, measured),"
            f" human review ${parts['human_review']:.4f}, orchestration ${parts['orchestration']:.4f}"
        )
    return not result.problems


def _print_cost(report: dict[str, Any], truth: Path, workers: int, seconds: float) -> dict[str, Any] | None:
    """The pipeline run's cost table, then the same images all to Ground Truth and with the model always on."""
    from cli.cost_view import comparison_lines, comparisons, cost_table

    cost = report.get(contract.Cost.FIELD)
    if not isinstance(cost, dict):
        return None
    print("")
    print(f"What the pipeline run cost (the cost ledger of {RUN_REPORT_FILE}; estimates at list prices)")
    for line in cost_table(cost):
        print(line)
    boxes = sum(
        len(json.loads(raw).get("detections") or []) for raw in truth.read_text(encoding="utf-8").splitlines() if raw
    )
    images = int(report.get("auto_accepted") or 0) + int(report.get("human_reviewed") or 0)
    # The demo's model is an emulated SageMaker endpoint (one instance); --model learn is Rekognition.
    found = comparisons(cost, images, workers, "sagemaker", 1, seconds)
    for line in comparison_lines(found, boxes):
        print(line)
    return found


def _print_plan(args: argparse.Namespace, generated: float) -> None:
    print(
        f"  generated {args.count} scenes ({len(DEMO_LABELS)} classes: {', '.join(DEMO_LABELS)};"
        f" 10% empty, 22% crowded, ~8% EXIF-rotated; drawn in {generated:.1f}s while the stack synthesized);"
        " the model is a pixel detector that never sees the truth file"
    )
    waves = "two waves" if args.first_wave < 1 else "one upload"
    print(
        f"  uploaded them in {waves}: first {args.first_wave:.0%} (all reviewed by the oracle: no calibration pairs"
        " yet, so theta is off), then the rest, routed with the theta calibrated on the first wave's reviews"
    )


def _print_stages(report: dict[str, Any]) -> None:
    """Verify-then-adjust: what each stage settled and the reviewer time it cost (estimate)."""
    verification, estimate = report.get("verification"), report.get("reviewer_time_estimate") or {}
    if not verification:
        return
    print(
        f"  verify stage: {verification['verified_correct']} image(s) verified correct (model boxes kept),"
        f" {verification['judged_incorrect']} judged incorrect; adjust stage:"
        f" {verification['judged_incorrect'] + verification['no_verdict']} rejected +"
        f" {verification['sent_to_adjust_without_detections']} without detections; reviewer time (estimate)"
        f" {estimate.get(contract.Estimate.TOTAL_SECONDS)}s instead of"
        f" {estimate.get(contract.Estimate.ADJUST_EVERYTHING_SECONDS)}s"
    )


def _print_batches(batches: list[dict[str, Any]]) -> None:
    """One line per batch: how it was routed and the theta its reviews calibrated."""
    for number, batch in enumerate(batches, start=1):
        counts, used, calibrated = batch.get("counts") or {}, batch.get("threshold") or {}, batch.get("calibration")
        if not counts:
            print(f"  batch {number}: {batch.get('status')}: {batch.get('error', '')}")
            continue
        routed = "theta off" if used.get("value") is None else f"theta {_num(used.get('value'))}"
        after = (
            f" -> theta {_num(calibrated.get('theta'))} (bound {_num(calibrated.get('lower_bound'))} over"
            f" {calibrated.get('n_above')} of {calibrated.get('pairs_used')} pairs)"
            if isinstance(calibrated, dict)
            else ""
        )
        print(
            f"  batch {number} ({counts.get('received')} images) routed with {routed}: {counts.get('accepted')}"
            f" auto-accepted, {counts.get('reviewed')} reviewed ({counts.get('audited')} audits){after}"
        )


def _print_judgement(judged: Judgement, final: dict[str, Any], args: argparse.Namespace, noise: float) -> None:
    """What the oracle fixed, the calibrated theta and the realised quality against the truth."""
    print(
        f"  the oracle (workers who know the truth, box-edge noise {noise:.0%}) reviewed"
        f" {judged.reviewed} image(s) and had to fix {judged.fixed} of them"
        + (" (" + "; ".join(f"{k} in {n}" for k, n in judged.fixes.most_common()) + ")" if judged.fixes else "")
    )
    print(
        f"  theta now {_num(final.get('theta'))} (for the next upload) for target mIoU {final.get('target')}:"
        f" {final.get('confidence_level')} {final.get('bound')} lower bound {_num(final.get('lower_bound'))}"
        f" over the {final.get('n_above')} pairs at or above theta ({final.get('pairs_used')} pairs in all,"
        f" at least {args.min_pairs} before a threshold is tested; {final.get('reason')})"
    )
    print(
        f"  auto-accepted {judged.accepted} image(s); their realised mIoU vs truth is"
        f" {Judgement.mean(judged.accepted_quality)}"
        f" ({sum(q < args.target_quality for q in judged.accepted_quality)} below the target);"
        f" model pre-labels over all images: {Judgement.mean(judged.model_quality)};"
        f" human-reviewed labels: {Judgement.mean(judged.reviewed_final_quality)}"
    )


def _print_dataset_check(dataset_dir: Path | None, export_version: Any) -> bool:
    """Run the structural check on the exported dataset and say what it found; True when it passed."""
    if dataset_dir is None:
        print("  no YOLO dataset was exported: the pipeline did not reach the export")
        return False
    counts, problems = check_dataset(dataset_dir)
    dataset_ok = not problems
    print(
        f"  YOLO dataset {dataset_dir} (export {export_version}): structural check"
        f" (layout, data.yaml, one label file per image, 5-column 6-decimal rows in [0,1]) "
        + ("passed" if dataset_ok else f"FAILED with {len(problems)} problem(s)")
        + f": {counts.get('train_images', 0)} train + {counts.get('val_images', 0)} val images,"
        f" {counts.get('boxes', 0)} boxes, {counts.get('background_images', 0)} background images"
    )
    for problem in problems[:10]:
        print(f"    - {problem}")
    print("  (the independent checker tests/yolo_checker.py validates the same output in tests/e2e)")
    return dataset_ok


def demo_summary(seconds: float, generated: float, judged: Judgement | None, dataset_ok: bool) -> dict[str, Any]:
    """What ``demo.json`` records: timings, the judgement against the truth, the dataset check."""
    return {
        "seconds": round(seconds, 1),
        "generated_seconds": round(generated, 1),
        "judgement": None
        if judged is None
        else {
            "reviewed": judged.reviewed,
            "fixed_by_oracle": judged.fixed,
            "fixes": dict(judged.fixes),
            "auto_accepted": judged.accepted,
            "auto_accepted_mean_quality_vs_truth": Judgement.mean(judged.accepted_quality),
            "model_mean_quality_vs_truth": Judgement.mean(judged.model_quality),
            "reviewed_mean_quality_vs_truth": Judgement.mean(judged.reviewed_final_quality),
        },
        "dataset_structural_check": dataset_ok,
    }
