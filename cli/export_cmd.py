"""`labelloop export yolo`: a Ground Truth bounding-box manifest to a YOLO dataset, locally or on S3.

The same planner (`labelloop_core.export`) and writer (`adapters.export_writer`) as the export
Lambda: images named by ``source-ref`` are fetched from S3 with the standard AWS configuration
chain (``--profile``/``AWS_PROFILE``, region, ``AWS_ENDPOINT_URL``), copied server-side when DEST
is on S3, downloaded when DEST is a folder. A malformed manifest line stops the command with its
line number; unlabeled lines, dropped boxes and missing images are reported and written to the
export's ``skipped.jsonl`` / ``dropped.jsonl`` / ``missing.jsonl``. Lines naming an unsafe source
(control characters, ``.``/``..`` segments, no key) are skipped with the reason ``unsafe_source_ref``;
a line over 8 MiB stops the command with its line number, like any malformed line.

Exit status: 0 the export is written (or was already complete); 1 every planned image is missing or
unreadable (no version is completed); 2 bad arguments, or an unreadable or malformed manifest.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from cli.errors import CliError
from labelloop_core import limits


def _error(message: str) -> Exception:
    """A `CliError` with ``message`` (printed without a traceback)."""
    return CliError(message)


def register(sub: Any) -> None:
    """Add ``export yolo``."""
    export = sub.add_parser("export", help="export labeled manifests to training formats")
    formats = export.add_subparsers(dest="format", required=True)
    yolo = formats.add_parser(
        "yolo",
        help="write a YOLO (Ultralytics) dataset from Ground Truth bounding-box manifests",
        description=(
            "Write images/{train,val}, labels/{train,val}, data.yaml and export.json. With several "
            "manifests, a later manifest's label of the same image wins."
        ),
    )
    yolo.add_argument("manifest", nargs="+", help="output manifest(s): local path or s3://bucket/key")
    yolo.add_argument("--out", required=True, help="destination: a local folder or s3://bucket/prefix/")
    yolo.add_argument("--label-attribute", help="label attribute to export (default: found per line)")
    yolo.add_argument(
        "--val-fraction",
        type=float,
        default=limits.VAL_FRACTION.default,
        help=f"share of images in val ({limits.VAL_FRACTION.span}; default {limits.VAL_FRACTION.default})",
    )
    yolo.add_argument(
        "--classes",
        help="comma-separated class names fixing the ids (0, 1, ...); boxes of other classes are dropped "
        "and reported (default: classes in order of appearance)",
    )
    yolo.add_argument("--threads", type=int, default=32, help="parallel S3 requests (default 32)")
    yolo.add_argument("--profile", help="AWS profile (default: the standard configuration chain)")
    yolo.add_argument("--no-progress", action="store_true", help="do not draw the progress bar")
    yolo.set_defaults(func=run)
    _register_rekognition(formats)


def _register_rekognition(formats: Any) -> None:
    """Add ``export rekognition``."""
    rek = formats.add_parser(
        "rekognition",
        help="write Rekognition Custom Labels training and evaluation manifests from the human-labeled lines",
        description=(
            "Keep the lines whose labels people made (LabelLoop provenance verified/adjusted/drawn/audit, "
            "or human-annotated: yes), split them by a stable hash of the image key into training and a "
            "fixed evaluation set, and write rekognition-train.manifest, rekognition-evaluation.manifest "
            "and training.json (counts, and every line left out with the reason)."
        ),
    )
    rek.add_argument("manifest", nargs="+", help="output manifest(s): local path or s3://bucket/key")
    rek.add_argument("--out", required=True, help="destination: a local folder or s3://bucket/prefix/")
    rek.add_argument(
        "--evaluation-fraction",
        type=float,
        default=limits.EVALUATION_FRACTION.default,
        help=f"share held out for evaluation ({limits.EVALUATION_FRACTION.span}; "
        f"default {limits.EVALUATION_FRACTION.default})",
    )
    rek.add_argument("--profile", help="AWS profile (default: the standard configuration chain)")
    rek.set_defaults(func=run_rekognition)


def run_rekognition(args: argparse.Namespace) -> int:
    """Build the training set from the manifests and write its three files; print a summary."""
    import json

    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    from adapters.export_writer import s3_client
    from labelloop_core.contract import (
        TRAINING_DIR,
        TRAINING_EVALUATION_MANIFEST,
        TRAINING_FILE,
        TRAINING_TRAIN_MANIFEST,
    )
    from labelloop_core.manifest import ManifestError, iter_manifest
    from labelloop_core.training_data import EVALUATION, TRAIN, TrainingSetBuilder

    if args.evaluation_fraction not in limits.EVALUATION_FRACTION:
        raise _error(
            f"--evaluation-fraction must be within {limits.EVALUATION_FRACTION.span}, got {args.evaluation_fraction}"
        )
    try:
        s3 = s3_client(4, profile=args.profile)
    except BotoCoreError as exc:
        raise _error(f"AWS configuration: {exc}") from None
    builder = TrainingSetBuilder(evaluation_fraction=args.evaluation_fraction)
    try:
        for source in args.manifest:
            for line_no, line in iter_manifest(_bounded(_manifest_lines(source, s3))):
                builder.add(line, line_no, source)
    except ManifestError as exc:
        raise _error(f"{source}: {exc}") from None
    except NoCredentialsError:
        raise _error("no AWS credentials found (set AWS_PROFILE or --profile, or AWS_ACCESS_KEY_ID)") from None
    training = builder.build()
    if not training.lines[TRAIN] and not training.lines[EVALUATION]:
        reasons = ", ".join(f"{k} {v}" for k, v in training.report()["left_out"]["by_reason"].items())
        raise _error(f"no human-labeled line to train on ({reasons or 'the manifests are empty'})")
    files = {
        TRAINING_TRAIN_MANIFEST: _jsonl(training.lines[TRAIN]),
        TRAINING_EVALUATION_MANIFEST: _jsonl(training.lines[EVALUATION]),
        TRAINING_FILE: (json.dumps(training.report(), indent=1, ensure_ascii=False) + "\n").encode("utf-8"),
    }
    try:
        where = _write_files(args.out, {name[len(TRAINING_DIR) :]: body for name, body in files.items()}, s3)
    except (ClientError, BotoCoreError) as exc:
        raise _error(f"S3: {exc}") from None
    _rekognition_summary(training.report(), where, sys.stdout)
    return 0


def _bounded(lines: Iterator[Any]) -> Iterator[Any]:
    """The lines, stopping with the line number at the first line over the length limit."""
    from labelloop_core.lines import OverlongLine
    from labelloop_core.manifest import ManifestError

    for line_no, line in enumerate(lines, start=1):
        if isinstance(line, OverlongLine):
            raise ManifestError(line_no, f"line of {line.length} bytes exceeds the {line.limit}-byte limit")
        yield line


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    import json

    return "".join(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n" for row in rows).encode("utf-8")


def _write_files(out: str, files: dict[str, bytes], s3: Any) -> str:
    """Write ``files`` (name → bytes) into a local folder or under an S3 prefix; return where."""
    if out.startswith("s3://"):
        from adapters.s3 import S3UriError, parse_uri

        try:
            bucket, prefix = parse_uri(out)
        except S3UriError as exc:
            raise _error(str(exc)) from None
        prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        for name, body in files.items():
            s3.put_object(Bucket=bucket, Key=prefix + name, Body=body)
        return f"s3://{bucket}/{prefix}"
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise _error(f"--out {out} exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in files.items():
        (folder / name).write_bytes(body)
    return str(folder)


def _rekognition_summary(report: dict[str, Any], where: str, out: TextIO) -> None:
    images, boxes, left = report["images"], report["boxes"], report["left_out"]
    out.write(
        f"Rekognition manifests written at {where}\n"
        f"  train: {images['train']} image(s), {boxes['train']} box(es); "
        f"evaluation: {images['evaluation']} image(s), {boxes['evaluation']} box(es); "
        f"classes: {len(report['classes'])}\n"
    )
    if left["count"]:
        reasons = ", ".join(f"{k} {v}" for k, v in left["by_reason"].items())
        out.write(f"  left out: {left['count']} line(s) ({reasons}); training.json lists them\n")
    for problem in report["problems"]:
        out.write(f"  warning: {problem}\n")


class Progress:
    """A one-line progress bar on stderr (redrawn at most 10 times a second; plain lines off a tty)."""

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled
        self.tty = stream.isatty()
        self._last = 0.0
        self._last_quarter = -1

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.tty:
            now = time.monotonic()
            if done != total and now - self._last < 0.1:
                return
            self._last = now
            width = 30
            filled = width * done // total if total else width
            percent = 100 * done // total if total else 100
            bar = "#" * filled + "." * (width - filled)
            self.stream.write(f"\rexport [{bar}] {done}/{total} images {percent:3d}%")
            if done == total:
                self.stream.write("\n")
            self.stream.flush()
            return
        quarter = 4 * done // total if total else 4
        if quarter != self._last_quarter:
            self._last_quarter = quarter
            self.stream.write(f"export: {done}/{total} images\n")
            self.stream.flush()


def _manifest_lines(source: str, s3: Any) -> Iterator[Any]:
    """Stream the lines of a local or S3 manifest (an overlong line arrives as `OverlongLine`, memory
    stays bounded); unreadable sources are user errors."""
    from botocore.exceptions import BotoCoreError, ClientError

    from labelloop_core.lines import CHUNK_BYTES, bounded_lines, file_chunks

    if source.startswith("s3://"):
        from adapters.s3 import S3UriError, parse_uri

        try:
            bucket, key = parse_uri(source)
            body = s3.get_object(Bucket=bucket, Key=key)["Body"]
        except S3UriError as exc:
            raise _error(str(exc)) from None
        except (ClientError, BotoCoreError) as exc:
            raise _error(f"cannot read manifest {source}: {exc}") from None
        yield from bounded_lines(body.iter_chunks(CHUNK_BYTES))
        return
    path = Path(source)
    if not path.is_file():
        raise _error(f"manifest {source} does not exist (or is not a file)")
    with path.open("rb") as handle:
        yield from bounded_lines(file_chunks(handle))


def _parse_classes(value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [name.strip() for name in value.split(",")]
    if not all(names) or len(set(names)) != len(names):
        raise _error(f"--classes must be distinct non-empty names separated by commas, got {value!r}")
    return names


def run(args: argparse.Namespace) -> int:
    """Plan, then write; print a summary on stdout."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    from adapters.export_writer import (
        ExportConflict,
        ExportEmpty,
        LocalDestination,
        S3Destination,
        s3_client,
        write_export,
    )
    from labelloop_core.classes import ClassMapError
    from labelloop_core.export import ExportPlanner
    from labelloop_core.manifest import ManifestError

    if args.val_fraction not in limits.VAL_FRACTION:
        raise _error(f"--val-fraction must be within {limits.VAL_FRACTION.span}, got {args.val_fraction}")
    if args.threads not in limits.COPY_THREADS:
        raise _error(f"--threads must be within {limits.COPY_THREADS.span}, got {args.threads}")
    classes = _parse_classes(args.classes)
    try:
        s3 = s3_client(args.threads, profile=args.profile)
    except BotoCoreError as exc:
        raise _error(f"AWS configuration: {exc}") from None
    try:
        planner = ExportPlanner(
            classes or (),
            val_fraction=args.val_fraction,
            label_attribute=args.label_attribute,
            add_unknown_classes=classes is None,
            strict=True,
        )
    except ClassMapError as exc:
        raise _error(f"--classes: {exc}") from None
    for source in args.manifest:
        try:
            planner.add_manifest(source, _manifest_lines(source, s3))
        except ManifestError as exc:
            raise _error(f"{source}: {exc}") from None
    plan = planner.plan()
    if not plan.records:
        reasons = ", ".join(f"{s.reason} (line {s.line_no})" for s in plan.skipped[:5]) or "the manifest is empty"
        raise _error(f"nothing to export: no line carries a bounding-box label ({reasons})")
    if args.out.startswith("s3://"):
        dest: Any = S3Destination.from_uri(args.out, s3)
    else:
        dest = LocalDestination(Path(args.out), s3)
    version = plan.fingerprint[:16]
    progress = Progress(sys.stderr, enabled=not args.no_progress)
    try:
        document = write_export(plan, dest, version, threads=args.threads, progress=progress)
    except ExportConflict as exc:
        raise _error(str(exc)) from None
    except ExportEmpty as exc:
        # Exit 1, not 2: the arguments were fine, the data is not; missing.jsonl is not written.
        print(f"labelloop: export failed: {exc}", file=sys.stderr)
        for row in exc.missing[:10]:
            print(f"  line {row['line']} of {row['manifest']}: {row['source_ref']}: {row['reason']}", file=sys.stderr)
        return 1
    except NoCredentialsError:
        raise _error("no AWS credentials found (set AWS_PROFILE or --profile, or AWS_ACCESS_KEY_ID)") from None
    except (ClientError, BotoCoreError) as exc:
        raise _error(f"S3: {exc}") from None
    _summary(document, dest.uri, sys.stdout)
    return 0


def _summary(doc: dict[str, Any], where: str, out: TextIO) -> None:
    counts = doc["counts"]
    state = "already complete" if doc.get("already_complete") else "written"
    out.write(
        f"YOLO export {doc['version']} {state} at {where}\n"
        f"  images: {counts['images']} (train {counts['train']}, val {counts['val']}, "
        f"background {counts['background_images']}), boxes: {counts['boxes']}, classes: {doc['nc']}\n"
    )
    for title, section in (
        ("skipped lines", doc["skipped_lines"]),
        ("dropped boxes", doc["dropped_boxes"]),
        ("missing images", doc["missing_images"]),
    ):
        if section["count"]:
            reasons = ", ".join(f"{k} {v}" for k, v in section["by_reason"].items())
            out.write(f"  {title}: {section['count']} ({reasons})\n")
    note = (doc.get("split") or {}).get("note")
    if note:
        out.write(f"  split: {note}\n")
    for warning in doc.get("warnings", []):
        out.write(f"  warning: {warning}\n")
