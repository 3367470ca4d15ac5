"""Writing a planned YOLO export to S3 or a local folder (one code path for the Lambda and the CLI).

Order of writes, so a reader never sees a half export as complete:

1. ``data.yaml`` (a destination that refuses writes fails here, with its own error);
2. every image (S3 server-side ``copy_object`` into an S3 destination, a streamed download into
   a local one) and, once its image is in place, its label file — in a bounded thread pool with
   at most ``4 x threads`` tasks in flight, so memory stays flat whatever the dataset size; then
   the full item lists ``dropped.jsonl``, ``skipped.jsonl``, ``missing.jsonl``;
3. ``export.json`` LAST, as a conditional create (``If-None-Match: *`` on S3, a hard link locally):
   its presence is what makes the version complete, and a complete version is never rewritten,
   even when two deliveries of one event race.

Idempotent and resumable: a destination whose ``export.json`` already names this version is left
untouched; labels already present (a previous attempt that timed out) are not written again, and
their images are not copied again. Images missing from S3 (or not readable) are reported in
``export.json`` and their labels are not written, so every label has its image; other errors
(throttling after retries, 5xx) propagate so the attempt fails and is retried.

``copy_object`` handles sources up to 5 GB, far above any image LabelLoop accepts (intake caps
``max_image_bytes``); a larger source is reported per image (``too_large``), no multipart copy.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from botocore.exceptions import ClientError

from adapters.s3 import list_objects, parse_uri
from labelloop_core import contract, limits
from labelloop_core.export import ExportPlan, ImageRecord
from labelloop_core.export_report import export_data_yaml, export_document

__all__ = [
    "DEFAULT_THREADS",
    "ExportConflict",
    "ExportDestination",
    "ExportEmpty",
    "ExportIncomplete",
    "LocalDestination",
    "S3Destination",
    "publish_latest",
    "s3_client",
    "write_export",
]

DEFAULT_THREADS = limits.COPY_THREADS.default
#: Reasons an image is reported missing instead of failing the export.
MISSING = "missing"
ACCESS_DENIED = "access_denied"
TOO_LARGE = "too_large"
NOT_S3 = "not_s3"
_MISSING_CODES = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}
_DENIED_CODES = {"403", "AccessDenied", "AllAccessDisabled", "InvalidObjectState"}

ProgressFn = Callable[[int, int], None]


class ExportConflict(RuntimeError):
    """The destination already holds a DIFFERENT complete export (exports are immutable)."""


class ExportEmpty(RuntimeError):
    """Every planned image is missing or unreadable: no version is completed (nothing to train on)."""

    def __init__(self, missing: list[dict[str, Any]]) -> None:
        self.missing = missing
        reasons = Counter(m["reason"] for m in missing)
        first = missing[0] if missing else {}
        super().__init__(
            f"none of the {len(missing)} planned image(s) could be exported "
            f"({', '.join(f'{k} {v}' for k, v in sorted(reasons.items()))}; "
            f"e.g. {first.get('source_ref')!r}, line {first.get('line')} of {first.get('manifest')})"
        )


class ExportIncomplete(RuntimeError):
    """Writing stopped early on request (time budget); everything written so far is kept for a resume."""

    def __init__(self, done: int, total: int) -> None:
        self.done = done
        self.total = total
        super().__init__(f"export stopped after {done} of {total} images; run it again to resume")


def s3_client(threads: int = DEFAULT_THREADS, profile: str | None = None) -> Any:
    """An S3 client whose connection pool fits ``threads`` concurrent requests (boto3's default is 10).

    Uses the standard configuration chain (``profile`` or ``AWS_PROFILE``, region,
    ``AWS_ENDPOINT_URL``) with standard retries.
    """
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"mode": "standard", "max_attempts": 8},
        # No client-side CRC of every small body: S3 checks TLS-protected uploads anyway, and the
        # per-request CPU is what bounds a 100k-image export in one function.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        max_pool_connections=max(threads + 4, 10),
        connect_timeout=5,
        read_timeout=60,
    )
    session = boto3.Session(profile_name=profile) if profile else boto3.Session()
    return session.client("s3", config=config)


def _source(source_ref: str) -> tuple[str, str] | None:
    """(bucket, key) of an ``s3://`` source-ref, None otherwise."""
    if not source_ref.startswith("s3://"):
        return None
    bucket, key = parse_uri(source_ref)
    return (bucket, key) if key else None


def _reason(exc: ClientError) -> str | None:
    """Per-image reason for an S3 error, or None when the error must fail the attempt."""
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in _MISSING_CODES or status == 404:
        return MISSING
    if code in _DENIED_CODES or status == 403:
        return ACCESS_DENIED
    if code in {"InvalidRequest", "EntityTooLarge"} and "size" in str(error.get("Message", "")).lower():
        return TOO_LARGE
    return None


class ExportDestination(Protocol):
    """Where an export version is written; paths are relative to the version root."""

    uri: str

    def read_json(self, path: str) -> Any | None:
        """Parsed JSON at ``path`` or None when absent."""

    def existing(self, prefix: str) -> set[str]:
        """Relative paths already present under ``prefix`` (resuming an interrupted attempt)."""

    def put(self, path: str, body: bytes, content_type: str) -> None:
        """Write ``body`` at ``path``."""

    def prepare(self, folders: Iterable[str]) -> None:
        """Create ``folders`` where folders exist (a local disk); S3 has none."""

    def create(self, path: str, body: bytes, content_type: str) -> bool:
        """Write ``body`` at ``path`` only if nothing is there; False when something already was."""

    def copy_image(self, source_ref: str, path: str) -> str | None:
        """Put the image at ``path``; None on success, else a per-image reason (module docstring)."""


class S3Destination:
    """An export under ``s3://bucket/prefix``; images are server-side copies (no bytes through us)."""

    def __init__(self, bucket: str, prefix: str, s3: Any) -> None:
        self.bucket = bucket
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self.s3 = s3
        self.uri = f"s3://{bucket}/{self.prefix}"

    @classmethod
    def from_uri(cls, uri: str, s3: Any) -> S3Destination:
        """Destination for an ``s3://bucket/prefix`` URI."""
        bucket, prefix = parse_uri(uri)
        return cls(bucket, prefix, s3)

    def read_json(self, path: str) -> Any | None:
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=self.prefix + path)["Body"].read()
        except ClientError as exc:
            if _reason(exc) == MISSING:
                return None
            raise
        return json.loads(body)

    def existing(self, prefix: str) -> set[str]:
        start = len(self.prefix)
        return {item["Key"][start:] for item in list_objects(self.bucket, self.prefix + prefix, self.s3)}

    def put(self, path: str, body: bytes, content_type: str) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=self.prefix + path, Body=body, ContentType=content_type)

    def prepare(self, folders: Iterable[str]) -> None:
        return None

    def create(self, path: str, body: bytes, content_type: str) -> bool:
        try:
            self.s3.put_object(
                Bucket=self.bucket, Key=self.prefix + path, Body=body, ContentType=content_type, IfNoneMatch="*"
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"PreconditionFailed", "ConditionalRequestConflict"}:
                return False
            raise
        return True

    def copy_image(self, source_ref: str, path: str) -> str | None:
        source = _source(source_ref)
        if source is None:
            return NOT_S3
        try:
            self.s3.copy_object(
                Bucket=self.bucket,
                Key=self.prefix + path,
                CopySource={"Bucket": source[0], "Key": source[1]},
                MetadataDirective="COPY",
            )
        except ClientError as exc:
            reason = _reason(exc)
            if reason is None:
                raise
            return reason
        return None


class LocalDestination:
    """An export in a local folder; images are downloaded from S3 (written atomically via a temp file)."""

    def __init__(self, root: Path, s3: Any) -> None:
        self.root = Path(root)
        self.s3 = s3
        self.uri = str(self.root)

    def read_json(self, path: str) -> Any | None:
        target = self.root / path
        if not target.exists():
            return None
        return json.loads(target.read_text(encoding="utf-8"))

    def existing(self, prefix: str) -> set[str]:
        base = self.root / prefix
        if not base.exists():
            return set()
        return {p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file()}

    def _write_atomic(self, path: str, write: Callable[[Any], None]) -> None:
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".part-")
        try:
            with os.fdopen(fd, "wb") as handle:
                write(handle)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put(self, path: str, body: bytes, content_type: str) -> None:
        self._write_atomic(path, lambda handle: handle.write(body))

    def prepare(self, folders: Iterable[str]) -> None:
        for folder in folders:
            (self.root / folder).mkdir(parents=True, exist_ok=True)

    def create(self, path: str, body: bytes, content_type: str) -> bool:
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".part-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(body)
            os.link(tmp, target)  # atomic, and fails if the target exists
        except FileExistsError:
            return False
        finally:
            Path(tmp).unlink(missing_ok=True)
        return True

    def copy_image(self, source_ref: str, path: str) -> str | None:
        source = _source(source_ref)
        if source is None:
            return NOT_S3
        try:
            response = self.s3.get_object(Bucket=source[0], Key=source[1])
        except ClientError as exc:
            reason = _reason(exc)
            if reason is None:
                raise
            return reason
        body = response["Body"]

        def write(handle: Any) -> None:
            for chunk in iter(lambda: body.read(1 << 20), b""):
                handle.write(chunk)

        self._write_atomic(path, write)
        return None


def _jsonl(rows: Iterable[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")


def _bounded_map(
    records: Iterable[ImageRecord],
    task: Callable[[ImageRecord], str | None],
    threads: int,
    on_done: Callable[[ImageRecord, str | None], None],
) -> None:
    """Run ``task`` over ``records`` with ``threads`` workers and at most ``4 x threads`` in flight."""
    limit = threads * 4
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="export") as pool:
        pending: dict[Future[str | None], ImageRecord] = {}
        try:
            for record in records:
                if len(pending) >= limit:
                    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in finished:
                        on_done(pending.pop(future), future.result())
                pending[pool.submit(task, record)] = record
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    on_done(pending.pop(future), future.result())
        except BaseException:
            for future in pending:
                future.cancel()
            raise


def write_export(
    plan: ExportPlan,
    dest: ExportDestination,
    version: str,
    *,
    dataset: str | None = None,
    threads: int = DEFAULT_THREADS,
    progress: ProgressFn | None = None,
    extra: dict[str, Any] | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Write ``plan`` into ``dest`` as export ``version``; returns the ``export.json`` document.

    Raises `ExportConflict` when ``dest`` already holds a different complete export, `ExportEmpty`
    when every planned image is missing (no ``export.json`` is written), and
    `ExportIncomplete` when ``should_stop()`` turned true before every image was written (the
    images in flight finish; a later call with the same plan resumes where this one stopped).
    ``extra`` adds keys to ``export.json`` (e.g. the event that triggered the export).
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    current = dest.read_json(contract.EXPORT_FILE)
    if current is not None:
        if current.get("version") == version:
            current["already_complete"] = True
            return dict(current)
        raise ExportConflict(
            f"{dest.uri} already holds export version {current.get('version')!r}; "
            f"exports are immutable, write version {version!r} elsewhere"
        )
    splits = sorted({r.split for r in plan.records}) or ["train", "val"]  # no empty split folder
    dest.prepare(f"{kind}{split}" for kind in (contract.IMAGES_DIR, contract.LABELS_DIR) for split in splits)
    # First: a destination that refuses writes (a bucket policy, a read-only disk) fails here with its
    # own error, before any copy could be mistaken for an unreadable source image.
    planned_yaml = plan.data_yaml()
    dest.put(contract.DATA_YAML_FILE, planned_yaml.encode("utf-8"), "application/yaml")
    copy = _ImageCopy(plan, dest, progress, should_stop)
    copy.run(threads)
    missing = copy.missing
    if copy.stopped:
        raise ExportIncomplete(copy.finished, copy.total)
    missing.sort(key=lambda m: (m["manifest"], m["line"]))
    if copy.total and len(missing) == copy.total:
        raise ExportEmpty(missing)  # export.json is not written: the version stays incomplete

    dest.put(contract.DROPPED_FILE, _jsonl(d.as_dict() for d in plan.dropped), "application/jsonlines")
    dest.put(contract.SKIPPED_FILE, _jsonl(s.as_dict() for s in plan.skipped), "application/jsonlines")
    dest.put(contract.MISSING_FILE, _jsonl(missing), "application/jsonlines")
    created = now().strftime("%Y-%m-%dT%H:%M:%SZ")
    document = export_document(plan, version, dataset, missing, copy.resumed, created)
    written_yaml = export_data_yaml(plan.class_names, document)
    if written_yaml != planned_yaml:  # missing images emptied a split: data.yaml names the other one
        dest.put(contract.DATA_YAML_FILE, written_yaml.encode("utf-8"), "application/yaml")
    if extra:
        document.update(extra)
    body = json.dumps(document, ensure_ascii=False, indent=1).encode("utf-8")
    if not dest.create(contract.EXPORT_FILE, body, "application/json"):
        # A concurrent writer of the same event completed first (conditional write): keep its file.
        winner = dest.read_json(contract.EXPORT_FILE) or {}
        if winner.get("version") != version:
            raise ExportConflict(f"{dest.uri} was completed concurrently as version {winner.get('version')!r}")
        winner["already_complete"] = True
        return dict(winner)
    return document


class _ImageCopy:
    """Copies the plan's images and writes their labels; skips those a stopped run already wrote."""

    def __init__(
        self,
        plan: ExportPlan,
        dest: ExportDestination,
        progress: ProgressFn | None,
        should_stop: Callable[[], bool] | None,
    ) -> None:
        self.plan, self.dest, self.progress, self.should_stop = plan, dest, progress, should_stop
        self.done = dest.existing(contract.LABELS_DIR)
        self.missing: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.total = len(plan.records)
        self.finished = 0
        self.resumed = 0
        self.stopped = False

    def run(self, threads: int) -> None:
        if self.progress is not None:
            self.progress(0, self.total)
        _bounded_map(self._todo(), self._task, threads, self._on_done)

    def _task(self, record: ImageRecord) -> str | None:
        reason = self.dest.copy_image(record.source_ref, record.image_path)
        if reason is None:
            self.dest.put(record.label_path, record.label_text.encode("utf-8"), "text/plain; charset=utf-8")
        return reason

    def _on_done(self, record: ImageRecord, reason: str | None) -> None:
        with self.lock:
            self.finished += 1
            if reason is not None:
                self.missing.append(
                    {
                        "image": record.key,
                        "source_ref": record.source_ref,
                        "reason": reason,
                        "manifest": record.manifest,
                        "line": record.line_no,
                    }
                )
            if self.progress is not None:
                self.progress(self.finished, self.total)

    def _todo(self) -> Iterable[ImageRecord]:
        for index, record in enumerate(self.plan.records):
            if record.label_path in self.done:
                self.resumed += 1
                self.finished += 1
                continue
            if self.should_stop is not None and index % 64 == 0 and self.should_stop():
                self.stopped = True
                return
            yield record


def publish_latest(dataset_root: ExportDestination, version: str, document: dict[str, Any], version_uri: str) -> bool:
    """Point ``latest.json`` at ``version`` unless it already names a version that sorts after it.

    Versions start with the UTC time of their newest input, so string order is age order; a
    re-delivered old event therefore never moves ``latest.json`` backwards. Returns True if written.
    """
    current = dataset_root.read_json(contract.LATEST_FILE)
    if current is not None and str(current.get("version", "")) >= version:
        return False
    pointer = {
        "dataset": document.get("dataset"),
        "version": version,
        "uri": version_uri,
        "export_json": f"{version_uri.rstrip('/')}/{contract.EXPORT_FILE}",
        "data_yaml": f"{version_uri.rstrip('/')}/{contract.DATA_YAML_FILE}",
        "images": document.get("counts", {}).get("images"),
        "created": document.get("created"),
    }
    dataset_root.put(
        contract.LATEST_FILE, json.dumps(pointer, ensure_ascii=False, indent=1).encode("utf-8"), "application/json"
    )
    return True
