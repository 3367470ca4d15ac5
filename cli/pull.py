"""`labelloop pull DATASET --out DIR`: download a complete YOLO export of a deployed (or local) stack.

Only a complete version is pulled: one whose ``export.json`` exists (the export Lambda writes it
last). The files are checked against ``export.json`` (image and label counts per split, its data.yaml)
and each one against S3 (size, and MD5 where the ETag is one); a file already present and correct
is skipped, so an interrupted pull resumes. Files are written to ``*.part`` and renamed when they
check out. DIR then holds ``data.yaml``, ``images/{train,val}``, ``labels/{train,val}``: train
with Ultralytics as is (``yolo train data=DIR/data.yaml``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from cli.aws_target import Target, add_target_arguments, aws_errors, connect, list_objects, list_prefixes, read_json
from cli.errors import CliError
from labelloop_core import contract

MARKER = ".labelloop-pull.json"
SPLITS = ("train", "val")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".dng", ".mpo", ".pfm"}


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "pull",
        help="download a dataset's complete YOLO export (verified, resumable)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dataset", help="dataset name (the folder under incoming/)")
    parser.add_argument("--out", type=Path, required=True, help="folder to write the dataset to")
    parser.add_argument("--version", help="export version (default: the latest complete one)")
    parser.add_argument("--threads", type=int, default=8, help="parallel downloads (default 8)")
    add_target_arguments(parser)
    parser.set_defaults(func=run)


@dataclass(frozen=True)
class RemoteFile:
    key: str
    relative: str
    size: int
    etag: str


def choose_version(target: Target, dataset: str, version: str | None) -> tuple[str, dict[str, Any]]:
    """The version to pull and its ``export.json``; refuses an unknown dataset or an incomplete version."""
    root = f"{target.exports_prefix}{dataset}/"
    versions = list_prefixes(target, root)
    if not versions:
        known = set(list_prefixes(target, target.incoming_prefix)) | set(list_prefixes(target, target.exports_prefix))
        if dataset not in known:
            names = ", ".join(sorted(known)) or "none yet"
            raise CliError(f"dataset {dataset!r} unknown in s3://{target.bucket} (datasets: {names})")
        raise CliError(f"dataset {dataset!r} has no export yet (see `labelloop status --dataset {dataset}`)")
    if version is None:
        latest = read_json(target, f"{root}{contract.LATEST_FILE}")
        if not isinstance(latest, dict) or not latest.get("version"):
            raise CliError(f"dataset {dataset!r} has no complete export yet (no latest.json)")
        version = str(latest["version"])
    if version not in versions:
        raise CliError(f"dataset {dataset!r} has no version {version!r} (versions: {', '.join(sorted(versions))})")
    document = read_json(target, f"{root}{version}/{contract.EXPORT_FILE}")
    if not isinstance(document, dict):
        complete = [v for v in sorted(versions) if read_json(target, f"{root}{v}/{contract.EXPORT_FILE}") is not None]
        raise CliError(
            f"version {version} of {dataset!r} is incomplete (no export.json: still being written, or interrupted);"
            f" complete versions: {', '.join(complete) or 'none'}"
        )
    return version, document


def _stem(name: str, folder: str) -> str:
    """``images/train/a/b.jpg`` -> ``a/b`` (an image and its label share it)."""
    rest = name[len(folder) :]
    return rest.rsplit(".", 1)[0] if "." in Path(rest).name else rest


def check_listing(files: list[RemoteFile], document: dict[str, Any]) -> None:
    """The version's files must be what its ``export.json`` counts: every image with its label file."""
    names = {f.relative for f in files}
    counts = document.get("counts") or {}
    problems = []
    if contract.DATA_YAML_FILE not in names:
        problems.append(f"{contract.DATA_YAML_FILE} is missing")
    total = 0
    for split in SPLITS:
        image_folder = f"{contract.IMAGES_DIR}{split}/"
        images = {
            _stem(n, image_folder)
            for n in names
            if n.startswith(image_folder) and Path(n).suffix.lower() in IMAGE_SUFFIXES
        }
        folder = f"{contract.LABELS_DIR}{split}/"
        labels = {_stem(n, folder) for n in names if n.startswith(folder) and n.endswith(".txt")}
        total += len(images)
        if split in counts and int(counts[split]) != len(images):
            problems.append(f"export.json counts {counts[split]} {split} image(s), the version holds {len(images)}")
        unlabeled = sorted(images - labels)
        if unlabeled:
            problems.append(f"{len(unlabeled)} {split} image(s) have no label file, e.g. {unlabeled[0]}")
    if "images" in counts and int(counts["images"]) != total:
        problems.append(f"export.json counts {counts['images']} image(s), the version holds {total}")
    if problems:
        raise CliError(f"export {document.get('version')} does not match its export.json: {'; '.join(problems)}")


def _md5_of(etag: str) -> str | None:
    """The MD5 an S3 ETag states (single-part, non-KMS objects); None when it is not one."""
    value = etag.strip('"')
    return value if len(value) == 32 and "-" not in value else None


def _file_ok(path: Path, remote: RemoteFile) -> bool:
    if not path.is_file() or path.stat().st_size != remote.size:
        return False
    md5 = _md5_of(remote.etag)
    return md5 is None or hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest() == md5


class Progress:
    """A one-line progress bar on a terminal; a line per 10% otherwise."""

    def __init__(self, total: int, total_bytes: int, stream: TextIO) -> None:
        self.total, self.total_bytes, self.stream = total, total_bytes, stream
        self.done = self.bytes = self.skipped = 0
        self.tty = stream.isatty()
        self.lock = threading.Lock()
        self.last_decile = -1
        self.started = time.monotonic()

    def advance(self, size: int, skipped: bool) -> None:
        with self.lock:
            self.done += 1
            self.bytes += size
            self.skipped += int(skipped)
            self._draw()

    def _draw(self) -> None:
        fraction = self.done / self.total if self.total else 1.0
        text = f"{self.done}/{self.total} files, {self.bytes / 1e6:.1f}/{self.total_bytes / 1e6:.1f} MB"
        if self.skipped:
            text += f" ({self.skipped} already present)"
        if self.tty:
            filled = int(fraction * 30)
            self.stream.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {text}")
            if self.done == self.total:
                self.stream.write("\n")
            self.stream.flush()
        elif int(fraction * 10) != self.last_decile:
            self.last_decile = int(fraction * 10)
            print(f"pull: {text}", file=self.stream, flush=True)


def _prepare_out(out: Path, dataset: str, version: str, wanted: set[str]) -> int:
    """Check DIR is ours (or empty); remove files of another version. Returns how many were removed."""
    marker = out / MARKER
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not marker.is_file():
        raise CliError(f"--out {out} is not empty and holds no earlier pull ({MARKER}); choose an empty folder")
    out.mkdir(parents=True, exist_ok=True)
    if marker.is_file():
        try:
            previous = json.loads(marker.read_text(encoding="utf-8"))
        except ValueError:
            previous = {}
        if previous.get("dataset") not in (None, dataset):
            raise CliError(f"--out {out} holds dataset {previous.get('dataset')!r}, not {dataset!r}")
    removed = 0
    for path in sorted(out.rglob("*")):
        relative = path.relative_to(out).as_posix()
        if path.is_file() and relative != MARKER and relative not in wanted and not relative.endswith(".part"):
            path.unlink()
            removed += 1
    marker.write_text(json.dumps({"dataset": dataset, "version": version, "complete": False}) + "\n")
    return removed


def download(target: Target, files: list[RemoteFile], out: Path, threads: int, stream: TextIO) -> tuple[int, int]:
    """Fetch every file not already correct; returns (downloaded, skipped)."""
    progress = Progress(len(files), sum(f.size for f in files), stream)
    s3 = target.client("s3")

    def fetch(remote: RemoteFile) -> bool:
        path = out / remote.relative
        if _file_ok(path, remote):
            progress.advance(remote.size, True)
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(path.name + ".part")
        s3.download_file(target.bucket, remote.key, str(part))
        if not _file_ok(part, remote):
            part.unlink(missing_ok=True)
            raise CliError(f"{remote.key}: the downloaded file does not match its size/ETag; run pull again")
        os.replace(part, path)
        progress.advance(remote.size, False)
        return True

    with aws_errors(target), ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        results = list(pool.map(fetch, files))
    return sum(results), len(results) - sum(results)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``labelloop pull``."""
    target = connect(args)
    began = time.monotonic()
    with aws_errors(target):
        version, document = choose_version(target, args.dataset, args.version)
        prefix = f"{target.exports_prefix}{args.dataset}/{version}/"
        files = [
            RemoteFile(item["Key"], item["Key"][len(prefix) :], int(item["Size"]), str(item.get("ETag", "")))
            for item in list_objects(target, prefix)
            if not item["Key"].endswith("/")
        ]
    check_listing(files, document)
    removed = _prepare_out(args.out, args.dataset, version, {f.relative for f in files})
    if removed:
        print(f"pull: removed {removed} file(s) of another version from {args.out}", file=sys.stderr)
    downloaded, skipped = download(target, files, args.out, args.threads, sys.stderr)
    for split in SPLITS:  # S3 has no empty folders; Ultralytics expects both splits' folders
        for kind in ("images", "labels"):
            (args.out / kind / split).mkdir(parents=True, exist_ok=True)
    marker = {"dataset": args.dataset, "version": version, "complete": True, "files": len(files)}
    (args.out / MARKER).write_text(json.dumps(marker) + "\n")
    counts = document.get("counts") or {}
    print(
        f"pulled {args.dataset} version {version}: {counts.get('images')} image(s) "
        f"({counts.get('train')} train, {counts.get('val')} val), {downloaded} file(s) downloaded, "
        f"{skipped} already present, in {time.monotonic() - began:.1f}s -> {args.out}"
    )
    for warning in document.get("warnings") or []:
        print(f"pull: warning: {warning}", file=sys.stderr)
    print(f"train: yolo train data={args.out / contract.DATA_YAML_FILE}")
    return 0
