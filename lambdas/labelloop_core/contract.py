"""Names that cross LabelLoop's components, defined once (see docs/contracts.md).

Handlers, infrastructure (IAM prefixes, environment), the emulation, the CLI and the tests import
these instead of repeating literals: manifest attribute names, ``labelloop-meta`` keys, the batch
folder layout, calibration keys, event names, environment variable names, and the typed shapes of
``batch.json``, ``route.json`` and ``report.json``. Pure: no AWS imports.
"""

from __future__ import annotations

from typing import Any, Final, TypedDict

# -- manifest attributes -----------------------------------------------------------------------------
#: The model's pre-labels (Ground Truth bounding-box format); also their metadata ``job-name``.
PRELABEL_ATTRIBUTE: Final = "labelloop-prelabel"
#: The final label of an auto-accepted image (``human-annotated: no``); also its ``job-name``.
AUTO_ATTRIBUTE: Final = "labelloop-auto"
#: The one label attribute of every training manifest line (Rekognition wants one name per dataset).
TRAINING_ATTRIBUTE: Final = "labelloop-training"
#: Job name recorded in training manifest lines written by LabelLoop.
TRAINING_JOB_NAME: Final = "labelloop-training-data"
#: LabelLoop's bookkeeping for one image (keys below).
META_KEY: Final = "labelloop-meta"
#: Metadata key telling which LabelLoop task (adjust/verify) produced a label.
TASK_KEY: Final = "labelloop-task"
#: Metadata keys the post-annotation Lambda adds to a consolidated label.
STATUS_KEY: Final = "labelloop-status"
ISSUES_KEY: Final = "labelloop-issues"
#: The ``<crowd-bounding-box name=...>`` of LabelLoop's templates (the key of each worker answer).
ELEMENT_NAME: Final = "annotatedResult"
#: The final-label attribute of an image whose model boxes people verified as correct.
VERIFIED_ATTRIBUTE: Final = "labelloop-verified"
#: S3 object metadata of a normalised image copy.
SOURCE_ETAG_METADATA: Final = "labelloop-source-etag"
ORIENTATION_METADATA: Final = "labelloop-orientation"
#: The ``type`` of a bounding-box label's metadata, and of a verification label's (Ground Truth's values).
BBOX_TYPE: Final = "groundtruth/object-detection"
VERIFICATION_TYPE: Final = "groundtruth/label-verification"


class Meta:
    """Keys of ``labelloop-meta``."""

    DATASET: Final = "dataset"
    BATCH_ID: Final = "batch_id"
    KEY: Final = "key"  # the original incoming object key
    LABELED_KEY: Final = "labeled_key"  # the (orientation-normalised) copy workers see
    WIDTH: Final = "width"
    HEIGHT: Final = "height"
    DEPTH: Final = "depth"
    ORIENTATION: Final = "orientation"
    ROUTE: Final = "route"
    ROUTE_REASON: Final = "route_reason"
    AUDIT: Final = "audit"
    SKIP_REVIEW: Final = "skip_review"
    LABEL_ATTRIBUTE: Final = "label_attribute"  # the attribute holding the final label
    REVIEW_JOB: Final = "review_job"
    TASK: Final = "task"  # the task (adjust/verify) a line is shown as; the pre/post Lambdas read it
    PROVENANCE: Final = "provenance"  # who made the final label (labelloop_core.verification)


# -- events ------------------------------------------------------------------------------------------
WORKFLOW_EVENT_SOURCE: Final = "labelloop.workflow"
BATCH_LABELED: Final = "Batch Labeled"
EXPORT_EVENT_SOURCE: Final = "labelloop.export"
EXPORT_CONTINUATION: Final = "Export Continuation"
#: A dataset's export moved ``latest.json``: the retrain workflow starts from it (docs/retrain.md).
EXPORT_PUBLISHED: Final = "Export Published"
RETRAIN_EVENT_SOURCE: Final = "labelloop.retrain"
#: A model version was promoted, rejected or failed (detail: version, status, reason, evaluation).
MODEL_VERSION_CHANGE: Final = "Model Version State Change"
SAGEMAKER_EVENT_SOURCE: Final = "aws.sagemaker"
JOB_STATE_CHANGE: Final = "SageMaker Ground Truth Labeling Job State Change"
#: Every labeling job the workflow starts is named with this prefix (IAM scopes use it too).
WORKFLOW_JOB_PREFIX: Final = "labelloop-"
#: State machine names are ``<stack name><suffix>``: fixed, so functions can be granted on the ARN and
#: tools can tell the per-batch workflow from the distributed export.
WORKFLOW_STATE_MACHINE_SUFFIX: Final = "-batch-workflow"
EXPORT_STATE_MACHINE_SUFFIX: Final = "-export"
RETRAIN_STATE_MACHINE_SUFFIX: Final = "-retrain"
#: Tag naming the dataset of a Ground Truth job started outside the workflow.
DATASET_TAG: Final = "labelloop:dataset"

# -- bucket layout -----------------------------------------------------------------------------------
DEFAULT_INCOMING_PREFIX: Final = "incoming/"
DEFAULT_WORK_PREFIX: Final = "work/"
DEFAULT_EXPORTS_PREFIX: Final = "exports/"
#: Folders under the work prefix.
BATCHES_DIR: Final = "batches/"
CALIBRATION_DIR: Final = "calibration/"
LABELING_JOBS_DIR: Final = "labeling-jobs/"
EXPORTS_INDEX_DIR: Final = "exports-index/"
DERIVED_DIR: Final = "derived/"  # orientation-normalised copies, mirroring the incoming keys
INTAKE_CLAIMS_DIR: Final = "intake/claims/"  # one claim per object version (no double intake)
#: Task tokens of waiting workflows, under the labeling-jobs folder.
TOKENS_DIR: Final = "tokens/"

#: File and folder names inside one batch folder.
OBJECTS_FILE: Final = "objects.jsonl"
BATCH_FILE: Final = "batch.json"
BUILD_FILE: Final = "build.json"
BUILD_PARTS_DIR: Final = "build/parts/"
INPUT_MANIFEST: Final = "input.manifest"
REJECTED_FILE: Final = "rejected.jsonl"
SHARDS_DIR: Final = "shards/"
PRELABELED_DIR: Final = "prelabeled/"
ACCEPTED_MANIFEST: Final = "accepted.manifest"
REVIEW_MANIFEST: Final = "review.manifest"
ROUTE_FILE: Final = "route.json"
REVIEW_FILE: Final = "review.json"
OUTPUT_MANIFEST: Final = "output.manifest"
#: The model version a batch pinned when it started (pre-label, route and calibrate all use it).
MODEL_PIN_FILE: Final = "model.json"
#: The batch report (``ReportDoc``): merge, calibrate and record-failure write it into the batch folder.
BATCH_REPORT_FILE: Final = "report.json"
#: The run report ``labelloop local run`` writes into its ``--out`` folder: another schema (the run's
#: accounting over every batch), so another name, though the file is also called ``report.json``.
RUN_REPORT_FILE: Final = "report.json"
#: Verify-then-adjust: the manifest each stage's job labels, and the lines people verified correct.
VERIFY_MANIFEST: Final = "verify.manifest"
ADJUST_MANIFEST: Final = "adjust.manifest"
VERIFIED_MANIFEST: Final = "verified.manifest"

#: Inside one export version (``<exports prefix><dataset>/<version>/``): the distributed export's
#: plan (its shard files, one done marker per finished shard) and the report of a failed export.
EXPORT_FILE: Final = "export.json"
#: Training data beside an export's YOLO files: human-labeled images only (docs/retrain.md).
TRAINING_DIR: Final = "training/"
TRAINING_TRAIN_MANIFEST: Final = "training/rekognition-train.manifest"
TRAINING_EVALUATION_MANIFEST: Final = "training/rekognition-evaluation.manifest"
TRAINING_FILE: Final = "training/training.json"
#: The model registry of the stack (labelloop_core.registry), in the data bucket.
MODEL_REGISTRY_KEY: Final = "models/registry.json"
#: Where trained versions write their output (Rekognition OutputConfig, training artifacts).
MODEL_OUTPUT_PREFIX: Final = "models/versions/"
#: SageMaker backend: the training job's input channel (the export version's YOLO files), the
#: artifact it writes under ``<MODEL_OUTPUT_PREFIX><vN>/<job>/output/``, and the prefix of the
#: production variant that hosts version ``vN`` on the configured endpoint (``labelloop-vN``).
SAGEMAKER_TRAINING_CHANNEL: Final = "training"
SAGEMAKER_ARTIFACT: Final = "model.tar.gz"
SAGEMAKER_VARIANT_PREFIX: Final = "labelloop-"
#: One hosting document per model version (`labelloop_core.hosting`): its leases and hosting intervals.
MODEL_HOSTING_PREFIX: Final = "models/hosting/"


def hosting_key(version: str) -> str:
    """``models/hosting/<version>.json``: the leases and hosting intervals of one model version."""
    return f"{MODEL_HOSTING_PREFIX}{version}.json"


EXPORT_PLAN_DIR: Final = "plan/"
EXPORT_PLAN_FILE: Final = "plan/plan.json"
EXPORT_SHARDS_DIR: Final = "plan/shards/"
EXPORT_SHARD_DONE_DIR: Final = "plan/done/"
EXPORT_SHARD_ERRORS_DIR: Final = "plan/errors/"
EXPORT_FAILED_FILE: Final = "failed.json"
#: What the export state machine's tasks ask the shard function to do.
EXPORT_ACTION_SHARD: Final = "shard"
EXPORT_ACTION_PUBLISH: Final = "publish"
EXPORT_ACTION_FAIL: Final = "fail"


def export_shard_path(index: int) -> str:
    """A shard file of a distributed export, relative to the version folder."""
    return f"{EXPORT_SHARDS_DIR}{index:05d}.jsonl"


def export_shard_error_path(index: int) -> str:
    """Why the last attempt at shard ``index`` failed (read into ``failed.json``)."""
    return f"{EXPORT_SHARD_ERRORS_DIR}{index:05d}.json"


def export_shard_done_path(index: int) -> str:
    """The marker a shard worker writes when every image of shard ``index`` is in place."""
    return f"{EXPORT_SHARD_DONE_DIR}{index:05d}.json"


class ExportSplit(TypedDict):
    """``export.json`` -> ``split``: how the images were split and which folders data.yaml names.

    The split is a hash of each image key; an export moves the fewest images needed so train and
    val each hold one (``moved_to_val`` / ``moved_to_train`` list their keys). ``train_path`` and
    ``val_path`` are data.yaml's ``train`` and ``val``; a split without images reads the other
    split's folder (one image: ``val_path`` is ``images/train``), and ``note`` says why.
    """

    train: int
    val: int
    moved_to_val: list[str]
    moved_to_train: list[str]
    train_path: str
    val_path: str
    note: str | None


#: Calibration files under ``<calibration prefix><dataset>/``.
PAIRS_DIR: Final = "pairs/"
STATE_DIR: Final = "state/"
THRESHOLD_FILE: Final = "threshold.json"


def batch_prefix(work_prefix: str, dataset: str, batch_id: str) -> str:
    """``<work prefix>batches/<dataset>/<batch_id>/``: the folder holding everything of one batch."""
    return f"{work_prefix}{BATCHES_DIR}{dataset}/{batch_id}/"


def calibration_prefix(work_prefix: str) -> str:
    """``<work prefix>calibration/``: pairs and thresholds of every dataset."""
    return work_prefix + CALIBRATION_DIR


def pairs_key(calibration_root: str, dataset: str, batch_id: str) -> str:
    """Calibration pairs of one batch (a rerun overwrites, never doubles)."""
    return f"{calibration_root}{dataset}/{PAIRS_DIR}{batch_id}.jsonl"


def pairs_prefix(calibration_root: str, dataset: str) -> str:
    return f"{calibration_root}{dataset}/{PAIRS_DIR}"


def calibration_state_key(calibration_root: str, dataset: str, digest: str) -> str:
    """The dataset's calibration state for one design (model and settings digest)."""
    return f"{calibration_root}{dataset}/{STATE_DIR}{digest}.json"


def threshold_key(calibration_root: str, dataset: str) -> str:
    """The dataset's current threshold document."""
    return f"{calibration_root}{dataset}/{THRESHOLD_FILE}"


def labeling_jobs_prefix(work_prefix: str) -> str:
    """Where Ground Truth jobs write (outputs, templates, label categories, task tokens)."""
    return work_prefix + LABELING_JOBS_DIR


def exports_index_key(work_prefix: str, dataset: str) -> str:
    """The list of every manifest that feeds a dataset's exports."""
    return f"{work_prefix}{EXPORTS_INDEX_DIR}{dataset}.json"


# -- the rest of the bucket layout: task files, open reviews, scratch space, export files -------------
#: Folders under the work prefix: Ground Truth task files (content-addressed worker templates and label
#: category files), one marker per open Label Studio review, and scratch objects a lifecycle rule expires.
GROUNDTRUTH_DIR: Final = "groundtruth/"
TEMPLATES_DIR: Final = "templates/"
LABEL_CATEGORIES_DIR: Final = "label-categories/"
LABELSTUDIO_OPEN_DIR: Final = "labelstudio/open/"
TMP_DIR: Final = "tmp/"
#: Where a labeling job's output manifest is, under ``<labeling-jobs>/<job>/`` (Ground Truth's layout).
JOB_OUTPUT_DIR: Final = "manifests/output/"
#: Files of one export version (``<exports prefix><dataset>/<version>/``) beside ``export.json``, and the
#: pointer to a dataset's newest version (``<exports prefix><dataset>/latest.json``).
IMAGES_DIR: Final = "images/"
LABELS_DIR: Final = "labels/"
DATA_YAML_FILE: Final = "data.yaml"
DROPPED_FILE: Final = "dropped.jsonl"
SKIPPED_FILE: Final = "skipped.jsonl"
MISSING_FILE: Final = "missing.jsonl"
LATEST_FILE: Final = "latest.json"
#: A Label Studio review's state in the batch folder (``labelstudio-<stage>.json`` for a verify-then-adjust
#: stage).
LABELSTUDIO_STATE_FILE: Final = "labelstudio.json"


def labelstudio_state_file(stage: str = "") -> str:
    """``labelstudio.json`` (adjust mode), ``labelstudio-verify.json`` / ``labelstudio-adjust.json`` (stages)."""
    stem, dot, suffix = LABELSTUDIO_STATE_FILE.rpartition(".")
    return f"{stem}-{stage}{dot}{suffix}" if stage else LABELSTUDIO_STATE_FILE


def is_labelstudio_state_file(name: str) -> bool:
    """Whether a batch-folder file name is a Label Studio review's state (of any stage)."""
    stem, dot, suffix = LABELSTUDIO_STATE_FILE.rpartition(".")
    return name == LABELSTUDIO_STATE_FILE or (name.startswith(f"{stem}-") and name.endswith(dot + suffix))


def groundtruth_prefix(work_prefix: str) -> str:
    """``<work prefix>groundtruth/``: the worker templates and label category files of review jobs."""
    return work_prefix + GROUNDTRUTH_DIR


def labelstudio_open_prefix(work_prefix: str) -> str:
    """``<work prefix>labelstudio/open/``: one marker per Label Studio review still waiting for people."""
    return work_prefix + LABELSTUDIO_OPEN_DIR


def labelstudio_open_key(work_prefix: str, job_name: str) -> str:
    """The marker of one open Label Studio review."""
    return f"{labelstudio_open_prefix(work_prefix)}{job_name}.json"


def tokens_prefix(work_prefix: str) -> str:
    """``<work prefix>labeling-jobs/tokens/``: the task tokens of waiting workflows."""
    return labeling_jobs_prefix(work_prefix) + TOKENS_DIR


def job_output_manifest_key(work_prefix: str, job_name: str) -> str:
    """The output manifest of a labeling job (Ground Truth's, or the one a Label Studio review writes)."""
    return f"{labeling_jobs_prefix(work_prefix)}{job_name}/{JOB_OUTPUT_DIR}{OUTPUT_MANIFEST}"


# -- environment variable names (set by infra, read by the handlers) ---------------------------------
class Env:
    """Environment variable names; infra sets them, handlers read them, nothing else spells them."""

    DATA_BUCKET: Final = "DATA_BUCKET"
    INCOMING_PREFIX: Final = "INCOMING_PREFIX"
    WORK_PREFIX: Final = "WORK_PREFIX"
    EXPORTS_PREFIX: Final = "EXPORTS_PREFIX"
    CALIBRATION_PREFIX: Final = "CALIBRATION_PREFIX"
    LABELS: Final = "LABELS"
    STATE_MACHINE_ARN: Final = "STATE_MACHINE_ARN"
    MAX_BATCH_SIZE: Final = "MAX_BATCH_SIZE"
    REVIEW_WAIT_SECONDS: Final = "REVIEW_WAIT_SECONDS"
    REVIEW_TIMEOUT_SECONDS: Final = "REVIEW_TIMEOUT_SECONDS"
    MAX_IMAGE_BYTES: Final = "MAX_IMAGE_BYTES"
    MAX_IMAGE_PIXELS: Final = "MAX_IMAGE_PIXELS"
    SHARD_SIZE: Final = "SHARD_SIZE"
    BUILD_CHUNK: Final = "BUILD_CHUNK"
    MODEL_KIND: Final = "MODEL_KIND"
    MODEL_ARN: Final = "MODEL_ARN"
    ENDPOINT_NAME: Final = "ENDPOINT_NAME"
    ENDPOINT_FORMAT: Final = "ENDPOINT_FORMAT"
    MIN_CONFIDENCE: Final = "MIN_CONFIDENCE"
    AUTO_ACCEPT_THRESHOLD: Final = "AUTO_ACCEPT_THRESHOLD"
    TARGET_QUALITY: Final = "TARGET_QUALITY"
    CONFIDENCE_LEVEL: Final = "CONFIDENCE_LEVEL"
    CALIBRATION_BOUND: Final = "CALIBRATION_BOUND"
    MIN_PAIRS: Final = "MIN_PAIRS"
    AUDIT_FRACTION: Final = "AUDIT_FRACTION"
    TASK_MODE: Final = "TASK_MODE"
    PRELABEL_ATTRIBUTE: Final = "PRELABEL_ATTRIBUTE"
    ELEMENT_NAME: Final = "ELEMENT_NAME"
    WORKTEAM_ARN: Final = "WORKTEAM_ARN"
    WORKERS_PER_OBJECT: Final = "WORKERS_PER_OBJECT"
    TASK_TIME_LIMIT_SECONDS: Final = "TASK_TIME_LIMIT_SECONDS"
    TASK_AVAILABILITY_SECONDS: Final = "TASK_AVAILABILITY_SECONDS"
    PRE_ANNOTATION_ARN: Final = "PRE_ANNOTATION_ARN"
    POST_ANNOTATION_ARN: Final = "POST_ANNOTATION_ARN"
    GROUND_TRUTH_ROLE_ARN: Final = "GROUND_TRUTH_ROLE_ARN"
    VAL_FRACTION: Final = "VAL_FRACTION"
    COPY_THREADS: Final = "COPY_THREADS"
    EXPORT_STATE_MACHINE_ARN: Final = "EXPORT_STATE_MACHINE_ARN"
    EXPORT_DISTRIBUTED_ABOVE: Final = "EXPORT_DISTRIBUTED_ABOVE"
    EXPORT_SHARD_SIZE: Final = "EXPORT_SHARD_SIZE"
    REVIEW_BACKEND: Final = "REVIEW_BACKEND"
    VERIFY_SECONDS_PER_BOX: Final = "VERIFY_SECONDS_PER_BOX"
    DRAW_SECONDS_PER_BOX: Final = "DRAW_SECONDS_PER_BOX"
    MODEL_VERSION: Final = "MODEL_VERSION"
    EVALUATION_FRACTION: Final = "EVALUATION_FRACTION"
    RETRAIN_BACKEND: Final = "RETRAIN_BACKEND"
    RETRAIN_MIN_NEW_LABELS: Final = "RETRAIN_MIN_NEW_LABELS"
    RETRAIN_MIN_PER_CLASS: Final = "RETRAIN_MIN_PER_CLASS"
    RETRAIN_PROJECT_NAME: Final = "RETRAIN_PROJECT_NAME"
    RETRAIN_MAX_HOURS: Final = "RETRAIN_MAX_HOURS"
    RETRAIN_INFERENCE_UNITS: Final = "RETRAIN_INFERENCE_UNITS"
    RETRAIN_MIN_EVALUATION_IMAGES: Final = "RETRAIN_MIN_EVALUATION_IMAGES"
    # retrain.backend sagemaker (docs/retrain.md)
    RETRAIN_TRAINING_IMAGE: Final = "RETRAIN_TRAINING_IMAGE"
    RETRAIN_INSTANCE_TYPE: Final = "RETRAIN_INSTANCE_TYPE"
    RETRAIN_MAX_RUNTIME_HOURS: Final = "RETRAIN_MAX_RUNTIME_HOURS"
    RETRAIN_HYPERPARAMETERS: Final = "RETRAIN_HYPERPARAMETERS"
    RETRAIN_SPOT: Final = "RETRAIN_SPOT"
    RETRAIN_ENDPOINT_INSTANCE_TYPE: Final = "RETRAIN_ENDPOINT_INSTANCE_TYPE"
    RETRAIN_EXECUTION_ROLE_ARN: Final = "RETRAIN_EXECUTION_ROLE_ARN"
    MODEL_KEEP_RUNNING: Final = "MODEL_KEEP_RUNNING"
    MODEL_INFERENCE_UNITS: Final = "MODEL_INFERENCE_UNITS"
    MODEL_MAX_INFERENCE_UNITS: Final = "MODEL_MAX_INFERENCE_UNITS"
    MODEL_IDLE_MINUTES: Final = "MODEL_IDLE_MINUTES"
    LABEL_STUDIO_URL: Final = "LABEL_STUDIO_URL"
    LABEL_STUDIO_TOKEN_SECRET_ARN: Final = "LABEL_STUDIO_TOKEN_SECRET_ARN"
    LABEL_STUDIO_NAMESPACE: Final = "LABEL_STUDIO_NAMESPACE"
    LABEL_STUDIO_PRESIGN_TTL_MINUTES: Final = "LABEL_STUDIO_PRESIGN_TTL_MINUTES"
    LABEL_STUDIO_WEBHOOK_URL: Final = "LABEL_STUDIO_WEBHOOK_URL"
    LABEL_STUDIO_WEBHOOK_SECRET_ARN: Final = "LABEL_STUDIO_WEBHOOK_SECRET_ARN"
    COST_PRICES: Final = "COST_PRICES"  # JSON: the ``cost`` settings' price overrides (labelloop_core.pricing)


# -- reviewer-time estimate (``reviewer_time_estimate`` in the batch and run reports) -----------------
class Estimate:
    """Keys of ``reviewer_time_estimate``: computed from per-box constants (``limits.py`` cites them), never
    measured, so every duration is named ``estimated_*``. Each stage (``verify``, ``adjust``) has ``tasks``
    and ``estimated_seconds``."""

    SECONDS: Final = "estimated_seconds"
    TOTAL_SECONDS: Final = "estimated_total_seconds"
    ADJUST_EVERYTHING_SECONDS: Final = "estimated_adjust_everything_seconds"
    SAVED_SECONDS: Final = "estimated_saved_seconds"


# -- the cost ledger (``cost`` in the batch and run reports; labelloop_core.pricing) ---------------------
class Cost:
    """Keys of a report's ``cost``: ``components`` (name -> USD) sum to ``total_usd``; ``basis`` says per
    component whether its inputs were measured (counted) or estimated (durations, rates), and which."""

    FIELD: Final = "cost"
    TOTAL: Final = "total_usd"
    PER_IMAGE: Final = "per_image_usd"
    LABELED_IMAGES: Final = "labeled_images"
    COMPONENTS: Final = "components"
    BASIS: Final = "basis"
    PRICES: Final = "prices"
    KIND: Final = "basis"
    MEASURED: Final = "measured"
    ESTIMATED: Final = "estimated"
    COUNTS: Final = "counts"
    ESTIMATED_INPUTS: Final = "estimated_inputs"
    NOTE: Final = "note"


# -- typed shapes of the batch documents --------------------------------------------------------------
class BatchDoc(TypedDict):
    """``batch.json``, written by the batch starter."""

    dataset: str
    batch_id: str
    execution_name: str
    objects: int
    duplicates: list[Any]
    created: str


class RouteSummary(TypedDict):
    """The route step's output in the workflow state (also the head of ``route.json``)."""

    images: int
    accepted: int
    review: int
    audit: int
    threshold: float | None
    threshold_source: str
    reasons: dict[str, int]
    prelabel_window: dict[str, Any]


class RouteDoc(RouteSummary):
    """``route.json``, written by the route step."""

    dataset: str
    batch_id: str
    threshold_note: str
    threshold_used: Any
    audit_fraction: float
    model: str | None
    model_version: str


class ReportCounts(TypedDict, total=False):
    """The accounting of a labeled batch: ``received == rejected + accepted + reviewed + unlabeled``."""

    received: int
    rejected: int
    valid: int
    accepted: int
    reviewed: int
    audited: int
    unlabeled: int
    duplicate_events_dropped: int
    duplicate_lines_dropped: int
    foreign_lines_dropped: int


class ReportIdentity(TypedDict):
    """Which batch a report is about (the head of ``report.json``)."""

    dataset: str
    batch_id: str
    execution: str | None
    task_mode: str


class ReportSummary(TypedDict):
    """The sections of a labeled batch's report that follow its lists, in this order."""

    threshold: dict[str, Any]
    reviewer_time_estimate: dict[str, Any]
    timings: dict[str, Any]
    cost_estimate: dict[str, Any]
    cost: dict[str, Any]


class ReportDoc(TypedDict, total=False):
    """``report.json``: written by merge (``status: labeled``) or record-failure (``status: failed``);
    calibrate adds the ``calibration`` and ``prelabel`` sections."""

    status: str
    dataset: str
    batch_id: str
    execution: str | None
    task_mode: str
    counts: ReportCounts
    provenance: dict[str, int]
    accounted_for: bool
    output_manifest: str
    input_manifest: str
    rejected_file: str
    objects_file: str
    rejected: list[Any]
    unlabeled: list[Any]
    dropped_lines: list[Any]
    lists_truncated: bool
    jobs: list[str]
    labeling_jobs: list[dict[str, Any]]
    review: dict[str, Any]
    label_attributes: dict[str, Any]
    verification: dict[str, Any]
    threshold: dict[str, Any]
    reviewer_time_estimate: dict[str, Any]
    timings: dict[str, Any]
    cost_estimate: dict[str, Any]
    cost: dict[str, Any]
    calibration: dict[str, Any]
    prelabel: dict[str, Any]
    error: str
    cause: Any
    advice: str
    failed_at: str
