"""YOLO export Lambda, triggered by EventBridge when labels are complete.

Two events (docs/data-flow.md):

- ``Batch Labeled`` from ``labelloop.workflow``, detail ``{dataset, batch_id, output_manifest}``:
  the export is the union of ALL labeled batches of the dataset (every
  ``work/batches/<dataset>/<batch>/output.manifest``, oldest first, plus the manifests of outside
  jobs recorded in ``work/exports-index/<dataset>.json``); later labels of an image win;
- ``SageMaker Ground Truth Labeling Job State Change`` with status ``Completed`` for a job NOT
  started by the workflow (names starting ``labelloop-`` are the workflow's: skipped, it announces
  its own batches). DescribeLabelingJob gives the output manifest, the label attribute and the
  label categories; the dataset is the tag ``labelloop:dataset`` or else the job name. The job's
  manifest is added to the dataset's index, then the dataset is exported as above.

The version id is ``<newest input's LastModified, UTC>-<number of inputs>-<12 hex of the plan
fingerprint>``: a
re-delivered event reads the same inputs and finds its version complete (``export.json``
present), so nothing is rewritten; ``exports/<dataset>/latest.json`` only moves forward.
Manifests are streamed; a 100k-image dataset plans in seconds and copies with a bounded pool.
Errors propagate: EventBridge/Lambda retries, then the event lands in the export DLQ (alarmed).
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError

from adapters import env
from adapters.announce import export_published
from adapters.aws import client
from adapters.export_shards import start_execution, write_plan
from adapters.export_writer import (
    ExportIncomplete,
    S3Destination,
    publish_latest,
    s3_client,
    write_export,
)
from adapters.s3 import S3UriError, list_objects, parse_uri
from adapters.training_writer import build_training_set, write_training_data
from labelloop_core import limits
from labelloop_core.classes import ClassMapError, ClassRegistry
from labelloop_core.contract import (
    BATCH_LABELED,
    BATCHES_DIR,
    DATASET_TAG,
    DEFAULT_EXPORTS_PREFIX,
    DEFAULT_WORK_PREFIX,
    EXPORT_CONTINUATION,
    EXPORT_EVENT_SOURCE,
    EXPORT_FILE,
    JOB_STATE_CHANGE,
    OUTPUT_MANIFEST,
    SAGEMAKER_EVENT_SOURCE,
    WORKFLOW_EVENT_SOURCE,
    WORKFLOW_JOB_PREFIX,
    Env,
    calibration_prefix,
    exports_index_key,
    threshold_key,
)
from labelloop_core.export import ExportPlan, ExportPlanner
from labelloop_core.export_shards import use_distributed
from labelloop_core.lines import CHUNK_BYTES, OverlongLine, bounded_lines
from labelloop_core.manifest import ManifestError, find_verification_attributes, select_label_attribute

logger = Logger()

WORKFLOW_SOURCE = WORKFLOW_EVENT_SOURCE
SAGEMAKER_SOURCE = SAGEMAKER_EVENT_SOURCE
#: Built-in task types whose output is a bounding-box label (PRE-<type> pre-annotation Lambdas).
BOX_TASK_TYPES = frozenset({"BoundingBox", "AdjustmentBoundingBox", "VerificationBoundingBox"})
#: A chained verification of bounding boxes: its attribute is the verdict, the boxes sit next to it.
VERIFICATION_TASK_TYPES = frozenset({"VerificationBoundingBox"})
#: An export that would outlive the function re-triggers itself with this event (same trigger inside).
CONTINUATION_SOURCE = EXPORT_EVENT_SOURCE
CONTINUATION = EXPORT_CONTINUATION
MAX_CONTINUATIONS = 20
#: Stop submitting copies when less than this is left of the invocation (in-flight copies finish).
SAFETY_MARGIN_MS = 90_000
_DATASET_RE = re.compile(r"^[^/\x00-\x1f]{1,200}$")


class ExportEventError(ValueError):
    """The event cannot be exported (bad shape, unknown dataset, missing manifest); goes to the DLQ."""


@dataclass(frozen=True)
class ExportSettings:
    """Environment of the export function, validated once per container."""

    bucket: str
    labels: tuple[str, ...]
    val_fraction: float
    work_prefix: str
    exports_prefix: str
    threads: int
    #: The distributed path (None: this stack exports in this function only).
    state_machine_arn: str | None = None
    distributed_above: int = limits.EXPORT_DISTRIBUTED_ABOVE.default
    shard_size: int = limits.EXPORT_SHARD_SIZE.default
    #: Share of human-labeled images held out as the fixed evaluation set of the training data.
    evaluation_fraction: float = limits.EVALUATION_FRACTION.default

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ExportSettings:
        """Read and validate the environment; every error names its variable."""
        e = environ
        bucket = env.text(Env.DATA_BUCKET, environ=e)
        # may be empty: an export's classes also come from its manifests
        raw_labels = env.text(Env.LABELS, "[]", environ=e)
        try:
            labels = json.loads(raw_labels)
            ClassRegistry(labels)
        except (json.JSONDecodeError, ClassMapError, TypeError) as exc:
            raise env.EnvError(f"environment variable LABELS must be a JSON list of unique names: {exc}") from None
        if not isinstance(labels, list):
            raise env.EnvError("environment variable LABELS must be a JSON list of class names")
        val_fraction = env.number(Env.VAL_FRACTION, limits.VAL_FRACTION, environ=e)
        threads = env.bounded(Env.COPY_THREADS, limits.COPY_THREADS, environ=e)
        prefixes = []
        for name, default in ((Env.WORK_PREFIX, DEFAULT_WORK_PREFIX), (Env.EXPORTS_PREFIX, DEFAULT_EXPORTS_PREFIX)):
            value = env.text(name, default, environ=e)
            if not value.endswith("/"):
                raise env.EnvError(f"environment variable {name} must end with '/', got {value!r}")
            prefixes.append(value)
        return cls(
            bucket,
            tuple(labels),
            val_fraction,
            prefixes[0],
            prefixes[1],
            threads,
            env.optional(Env.EXPORT_STATE_MACHINE_ARN),
            env.bounded(Env.EXPORT_DISTRIBUTED_ABOVE, limits.EXPORT_DISTRIBUTED_ABOVE),
            env.bounded(Env.EXPORT_SHARD_SIZE, limits.EXPORT_SHARD_SIZE),
            env.number(Env.EVALUATION_FRACTION, limits.EVALUATION_FRACTION, environ=e),
        )


@functools.cache
def settings() -> ExportSettings:
    """The validated environment (cold start only)."""
    return ExportSettings.from_env()


@functools.cache
def _s3() -> Any:
    """S3 client sized for the copy pool."""
    return s3_client(settings().threads)


# -- inputs -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ManifestInput:
    """One manifest to read: where, when it was last written (orders 'later wins'), how to read it."""

    bucket: str
    key: str
    modified: datetime
    label_attribute: str | None = None
    job_classes: tuple[str, ...] | None = None

    @property
    def uri(self) -> str:
        """``s3://bucket/key``."""
        return f"s3://{self.bucket}/{self.key}"


def _check_dataset(dataset: Any) -> str:
    if not isinstance(dataset, str) or not _DATASET_RE.match(dataset) or dataset in {".", ".."}:
        raise ExportEventError(f"dataset must be a non-empty name without '/', got {dataset!r}")
    return dataset


def _index_key(dataset: str) -> str:
    return exports_index_key(settings().work_prefix, dataset)


def _batch_manifests(dataset: str) -> list[ManifestInput]:
    """Every ``work/batches/<dataset>/<batch>/output.manifest``."""
    cfg = settings()
    prefix = f"{cfg.work_prefix}{BATCHES_DIR}{dataset}/"
    found = []
    for item in list_objects(cfg.bucket, prefix, _s3()):
        rest = item["Key"][len(prefix) :]
        batch, _, name = rest.partition("/")
        if batch and name == OUTPUT_MANIFEST:
            found.append(ManifestInput(cfg.bucket, item["Key"], item["LastModified"]))
    return found


def _head(bucket: str, key: str) -> ManifestInput | None:
    try:
        head = _s3().head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
            return None
        raise
    return ManifestInput(bucket, key, head["LastModified"])


def _indexed_manifests(dataset: str) -> list[ManifestInput]:
    """Manifests of outside Ground Truth jobs recorded for the dataset (a vanished one is an error)."""
    found = []
    for entry in _read_index(dataset).get("manifests", []):
        bucket, key = parse_uri(entry["uri"])
        item = _head(bucket, key)
        if item is None:
            raise ExportEventError(f"manifest {entry['uri']} recorded in {_index_key(dataset)} no longer exists")
        classes = entry.get("classes")
        found.append(
            ManifestInput(
                bucket,
                key,
                item.modified,
                label_attribute=entry.get("label_attribute"),
                job_classes=tuple(classes) if classes else None,
            )
        )
    return found


def _read_index(dataset: str) -> dict[str, Any]:
    cfg = settings()
    try:
        body = _s3().get_object(Bucket=cfg.bucket, Key=_index_key(dataset))["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
            return {"dataset": dataset, "manifests": []}
        raise
    return dict(json.loads(body))


def _record_in_index(
    dataset: str, job_name: str, manifest_uri: str, label_attribute: str | None, classes: list[str] | None
) -> None:
    """Add an outside job's manifest to the dataset's index (idempotent: keyed by job name)."""
    index = _read_index(dataset)
    entries = [e for e in index.get("manifests", []) if e.get("job") != job_name]
    entries.append({"job": job_name, "uri": manifest_uri, "label_attribute": label_attribute, "classes": classes})
    index["manifests"] = entries
    body = json.dumps(index, ensure_ascii=False, indent=1).encode()
    _s3().put_object(Bucket=settings().bucket, Key=_index_key(dataset), Body=body, ContentType="application/json")


def _lines(item: ManifestInput) -> Iterator[bytes | OverlongLine]:
    """The manifest's lines, streamed; a line over `MAX_LINE_BYTES` arrives as an `OverlongLine`."""
    body = _s3().get_object(Bucket=item.bucket, Key=item.key)["Body"]
    yield from bounded_lines(body.iter_chunks(CHUNK_BYTES))


# -- export -------------------------------------------------------------------------------------
StopFn = Callable[[], bool]


def export_dataset(
    dataset: str,
    *,
    trigger: dict[str, Any],
    should_stop: StopFn | None = None,
    announced: ManifestInput | None = None,
) -> dict[str, Any]:
    """Export the union of the dataset's labeled manifests as a new (or the existing) version.

    ``announced`` is the manifest the triggering event named; it is part of the union even when
    it does not sit at the conventional ``work/batches/<dataset>/<batch>/output.manifest`` key.
    """
    cfg = settings()
    inputs = _batch_manifests(dataset) + _indexed_manifests(dataset)
    if announced is not None and announced.uri not in {m.uri for m in inputs}:
        inputs.append(announced)
    if not inputs:
        raise ExportEventError(f"dataset {dataset!r} has no labeled manifest to export")
    inputs.sort(key=lambda m: (m.modified, m.uri))
    registry = ClassRegistry(cfg.labels)
    for item in inputs:  # outside jobs' categories get stable ids after the configured labels
        for name in item.job_classes or ():
            registry.add(name)
    # Images are copied from the data bucket only: a line naming another bucket is skipped with a reason.
    planner = ExportPlanner(registry, val_fraction=cfg.val_fraction, allowed_buckets={cfg.bucket})
    for item in inputs:
        planner.label_attribute = item.label_attribute
        planner.job_classes = ClassRegistry(item.job_classes) if item.job_classes else None
        planner.add_manifest(item.uri, _lines(item))
    planner.label_attribute = None
    plan = planner.plan()
    stamp = max(m.modified for m in inputs).strftime("%Y%m%dT%H%M%SZ")
    # Sortable by age: newest input's time, then the number of inputs (the union only grows), then
    # the content hash that makes it deterministic.
    version = f"{stamp}-{len(inputs):06d}-{plan.fingerprint[:12]}"
    dataset_prefix = f"{cfg.exports_prefix}{dataset}/"
    dest = S3Destination(cfg.bucket, f"{dataset_prefix}{version}/", _s3())
    logger.info(
        "exporting",
        extra={"dataset": dataset, "version": version, "manifests": len(inputs), "images": len(plan.records)},
    )
    training = build_training_set(((m.uri, _lines(m)) for m in inputs), registry.names, cfg.evaluation_fraction)
    extra = {"trigger": trigger, "calibration": calibration_certificate(dataset)}
    if use_distributed(len(plan.records), cfg.distributed_above if cfg.state_machine_arn else None):
        write_training_data(dest, training)
        return _distribute(plan, dest, S3Destination(cfg.bucket, dataset_prefix, _s3()), dataset, version, extra)
    document = write_export(
        plan,
        dest,
        version,
        dataset=dataset,
        threads=cfg.threads,
        extra=extra,
        should_stop=should_stop,
    )
    # Before latest.json moves, so a published version always has its training data.
    write_training_data(dest, training)
    moved = publish_latest(S3Destination(cfg.bucket, dataset_prefix, _s3()), version, document, dest.uri)
    status = "already_exported" if document.get("already_complete") else "exported"
    result = {
        "status": status,
        "dataset": dataset,
        "version": version,
        "uri": dest.uri,
        "latest_updated": moved,
        "counts": document.get("counts"),
    }
    export_published(client("events"), dataset=dataset, version=version, uri=dest.uri, counts=document.get("counts"))
    logger.info("export done", extra=result)
    return result


def _distribute(
    plan: ExportPlan, dest: S3Destination, root: S3Destination, dataset: str, version: str, extra: dict[str, Any]
) -> dict[str, Any]:
    """Write the plan's shards and start the export state machine for this version (or find it running)."""
    cfg = settings()
    assert cfg.state_machine_arn is not None
    result: dict[str, Any] = {"dataset": dataset, "version": version, "uri": dest.uri, "images": len(plan.records)}
    current = dest.read_json(EXPORT_FILE)
    if current is not None and current.get("version") == version:  # published: only latest.json may move
        moved = publish_latest(root, version, current, dest.uri)
        export_published(client("events"), dataset=dataset, version=version, uri=dest.uri, counts=current.get("counts"))
        return result | {"status": "already_exported", "latest_updated": moved, "counts": current.get("counts")}
    plan_doc = write_plan(plan, dest, version, dataset=dataset, shard_size=cfg.shard_size, extra=extra)
    payload = {"bucket": cfg.bucket, "version_prefix": dest.prefix, "dataset_prefix": root.prefix}
    started = start_execution(client("stepfunctions"), cfg.state_machine_arn, dataset, version, payload)
    result |= {"status": "distributed", "shards": len(plan_doc["shards"]), **started}
    logger.info("export distributed over shards", extra=result)
    return result


#: What export.json repeats of the dataset's calibration document (the certificate, not its curve).
CERTIFICATE_KEYS = (
    "theta",
    "bound",
    "target",
    "confidence_level",
    "lower_bound",
    "pairs_used",
    "n_above",
    "reason",
    "audits",
    "model",
    "batches_folded",
    "computed_at",
)


def calibration_certificate(dataset: str) -> dict[str, Any]:
    """The certificate behind auto-accept for this dataset (``<WORK_PREFIX>calibration/<dataset>/threshold.json``).

    Every theta a batch used was certified by the same e-processes, so the latest document vouches
    for all of them at once; a dataset never calibrated says so.
    """
    cfg = settings()
    key = threshold_key(calibration_prefix(cfg.work_prefix), dataset)
    from botocore.exceptions import ClientError

    try:
        document = json.loads(_s3().get_object(Bucket=cfg.bucket, Key=key)["Body"].read())
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
            return {"theta": None, "note": "not calibrated: no auto-accepted image rests on a certificate"}
        raise
    except ValueError:
        return {"theta": None, "note": f"{key} is not valid JSON"}
    if not isinstance(document, dict):
        return {"theta": None, "note": f"{key} is not a JSON object"}
    return {name: document.get(name) for name in CERTIFICATE_KEYS}


def _batch_labeled(event: dict[str, Any], should_stop: StopFn | None) -> dict[str, Any]:
    detail = event.get("detail")
    if not isinstance(detail, dict):
        raise ExportEventError("Batch Labeled event has no detail object")
    dataset = _check_dataset(detail.get("dataset"))
    manifest = detail.get("output_manifest")
    try:
        bucket, key = parse_uri(str(manifest))
    except S3UriError as exc:
        raise ExportEventError(f"Batch Labeled detail.output_manifest: {exc}") from None
    if bucket != settings().bucket:
        raise ExportEventError(f"output manifest {manifest} is outside the data bucket {settings().bucket}")
    announced = _head(bucket, key)
    if announced is None:
        raise ExportEventError(f"output manifest {manifest} of batch {detail.get('batch_id')!r} does not exist")
    conventional = f"{settings().work_prefix}{BATCHES_DIR}{dataset}/"
    rest = key[len(conventional) :] if key.startswith(conventional) else ""
    if rest.count("/") != 1 or not rest.endswith(f"/{OUTPUT_MANIFEST}"):
        # Not where later exports look for batches: remember it, so every later version keeps it.
        _record_in_index(dataset, f"batch:{detail.get('batch_id')}", str(manifest), None, None)
    trigger = {"type": BATCH_LABELED, "event_id": event.get("id"), "batch_id": detail.get("batch_id")}
    return export_dataset(dataset, trigger=trigger, should_stop=should_stop, announced=announced)


def _task_type(job: dict[str, Any]) -> str | None:
    """Built-in task type from ``PreHumanTaskLambdaArn`` (``...:function:PRE-<type>``), None for custom."""
    arn = str(job.get("HumanTaskConfig", {}).get("PreHumanTaskLambdaArn", ""))
    name = arn.rsplit(":", 1)[-1]
    return name[4:] if name.startswith("PRE-") else None


def _job_completed(event: dict[str, Any], should_stop: StopFn | None) -> dict[str, Any]:
    detail = event.get("detail") or {}
    status = detail.get("LabelingJobStatus")
    resources = event.get("resources") or []
    if not resources or not isinstance(resources[0], str) or ":labeling-job/" not in resources[0]:
        raise ExportEventError(f"labeling job event without a job ARN in resources[0]: {resources!r}")
    job_name = resources[0].rsplit("/", 1)[-1]
    if status != "Completed":
        logger.info("job not completed; nothing to export", extra={"job": job_name, "status": status})
        return {"status": "skipped", "reason": f"job status {status}", "job": job_name}
    if job_name.startswith(WORKFLOW_JOB_PREFIX):
        logger.info("workflow job; its batch is exported on Batch Labeled", extra={"job": job_name})
        return {"status": "skipped", "reason": "started by the LabelLoop workflow", "job": job_name}
    job = client("sagemaker").describe_labeling_job(LabelingJobName=job_name)
    if job.get("LabelingJobStatus") != "Completed":
        raise ExportEventError(f"job {job_name} is {job.get('LabelingJobStatus')}, not Completed")
    task_type = _task_type(job)
    if task_type is not None and task_type not in BOX_TASK_TYPES:
        logger.info("not a bounding-box job", extra={"job": job_name, "task_type": task_type})
        return {"status": "skipped", "reason": f"task type {task_type} is not bounding boxes", "job": job_name}
    manifest = job.get("LabelingJobOutput", {}).get("OutputDatasetS3Uri")
    if not manifest:
        raise ExportEventError(f"job {job_name} has no LabelingJobOutput.OutputDatasetS3Uri")
    attribute = job.get("LabelAttributeName")
    if task_type in VERIFICATION_TASK_TYPES or _is_verdict_attribute(job):
        # The job's attribute holds verdicts: export the box label it judged (found by content);
        # the planner keeps only lines verified correct and reports the others.
        attribute = None
    tags = {t.get("Key"): t.get("Value") for t in job.get("Tags") or []}
    dataset = _check_dataset(tags.get(DATASET_TAG) or job_name)
    try:
        out_bucket, out_key = parse_uri(manifest)
    except S3UriError as exc:
        raise ExportEventError(f"job {job_name} output manifest: {exc}") from None
    if task_type is None and not _has_box_labels(out_bucket, out_key, attribute):
        logger.info("custom job without bounding-box labels", extra={"job": job_name, "attribute": attribute})
        return {"status": "skipped", "reason": "no bounding-box labels in the output manifest", "job": job_name}
    classes = None
    categories_uri = job.get("LabelCategoryConfigS3Uri")
    if categories_uri:
        bucket, key = parse_uri(categories_uri)
        try:
            document = json.loads(_s3().get_object(Bucket=bucket, Key=key)["Body"].read())
            classes = ClassRegistry.from_label_categories(document).names
        except (ClientError, ClassMapError, json.JSONDecodeError) as exc:
            # Lines with a class-map still export; lines without one are reported as invalid.
            logger.warning("label categories unreadable", extra={"uri": categories_uri, "error": str(exc)})
    _record_in_index(dataset, job_name, manifest, attribute, classes)
    trigger = {"type": JOB_STATE_CHANGE, "event_id": event.get("id"), "job": job_name}
    return export_dataset(dataset, trigger=trigger, should_stop=should_stop)


def _is_verdict_attribute(job: dict[str, Any]) -> bool:
    """A custom job whose output attribute is a verification verdict (its first labeled line says so)."""
    manifest = job.get("LabelingJobOutput", {}).get("OutputDatasetS3Uri")
    attribute = job.get("LabelAttributeName")
    if _task_type(job) is not None or not manifest or not attribute:
        return False
    try:
        item = _head(*parse_uri(manifest))
    except S3UriError:
        return False
    for raw in _lines(item) if item is not None else ():
        if isinstance(raw, OverlongLine):
            continue
        try:
            line = json.loads(raw) if raw.strip() else None
        except json.JSONDecodeError:
            continue
        if isinstance(line, dict) and f"{attribute}-metadata" in line:
            return attribute in find_verification_attributes(line)
    return False


def _has_box_labels(bucket: str, key: str, attribute: str | None) -> bool:
    """True when some line of the manifest carries a bounding-box label (stops at the first one)."""
    item = _head(bucket, key)
    if item is None:
        raise ExportEventError(f"output manifest s3://{bucket}/{key} does not exist")
    for raw in _lines(item):
        if isinstance(raw, OverlongLine) or not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except json.JSONDecodeError:
            continue
        if isinstance(line, dict):
            try:
                if select_label_attribute(line, attribute) is not None:
                    return True
            except ManifestError:
                continue
    return False


def _deadline(context: Any) -> StopFn | None:
    """True once the invocation has less than `SAFETY_MARGIN_MS` left (None outside Lambda)."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return None
    ends = time.monotonic() + remaining() / 1000.0
    return lambda: (ends - time.monotonic()) * 1000.0 < SAFETY_MARGIN_MS


def _continue_later(event: dict[str, Any], continuation: int, exc: ExportIncomplete) -> dict[str, Any]:
    """Re-trigger the same export through EventBridge; the next invocation resumes the same version."""
    if continuation >= MAX_CONTINUATIONS:
        raise ExportEventError(f"export still incomplete after {continuation} continuations: {exc}")
    detail = {"event": event, "continuation": continuation + 1, "done": exc.done, "total": exc.total}
    response = client("events").put_events(
        Entries=[{"Source": CONTINUATION_SOURCE, "DetailType": CONTINUATION, "Detail": json.dumps(detail)}]
    )
    if response.get("FailedEntryCount"):
        raise RuntimeError(f"could not schedule the export's continuation: {response.get('Entries')}")
    logger.info("export continues in a new invocation", extra=detail | {"event": None})
    return {"status": "continued", "done": exc.done, "total": exc.total, "continuation": continuation + 1}


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Route an EventBridge event to the matching export; unsupported events are errors (DLQ).

    When the time left runs short, the export stops submitting copies, and an "Export
    Continuation" event carrying the original event re-triggers this function, which plans the
    same version again and skips every image already written (up to `MAX_CONTINUATIONS` times).
    """
    settings()
    continuation = 0
    if event.get("source") == CONTINUATION_SOURCE and event.get("detail-type") == CONTINUATION:
        detail = event.get("detail") or {}
        original = detail.get("event")
        if not isinstance(original, dict):
            raise ExportEventError("Export Continuation event without the original event in detail.event")
        continuation = int(detail.get("continuation", 1))
        event = original
    source = event.get("source")
    detail_type = event.get("detail-type")
    should_stop = _deadline(context)
    try:
        if source == WORKFLOW_SOURCE and detail_type == BATCH_LABELED:
            return _batch_labeled(event, should_stop)
        if source == SAGEMAKER_SOURCE and detail_type == JOB_STATE_CHANGE:
            return _job_completed(event, should_stop)
    except ExportIncomplete as exc:
        return _continue_later(event, continuation, exc)
    raise ExportEventError(f"unsupported event: source={source!r} detail-type={detail_type!r}")
