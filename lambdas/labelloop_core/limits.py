"""Bounds on LabelLoop's settings, defined once: `infra.config` validates ``cdk.json`` through them
at synth, and the Lambda adapters validate their environment and requests through the same values.

Where a bound is AWS's, the comment names the API field it comes from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final


class LimitError(ValueError):
    """A value outside its bound; the message names the setting."""


@dataclass(frozen=True, slots=True)
class IntRange:
    """An integer setting: its default and inclusive bounds."""

    default: int
    lo: int
    hi: int

    def __contains__(self, value: object) -> bool:
        return not isinstance(value, bool) and isinstance(value, int) and self.lo <= value <= self.hi

    @property
    def span(self) -> str:
        """``lo-hi``, as option errors print it."""
        return f"{self.lo}-{self.hi}"

    def check(self, value: object, name: str) -> int:
        """``value`` when it is an integer within bounds, else a `LimitError` naming ``name``."""
        if isinstance(value, bool) or not isinstance(value, int) or not self.lo <= value <= self.hi:
            raise LimitError(f"{name} must be an integer in [{self.lo}, {self.hi}], got {value!r}")
        return value


@dataclass(frozen=True, slots=True)
class FloatRange:
    """A number setting: its default and inclusive bounds."""

    default: float
    lo: float
    hi: float

    def __contains__(self, value: object) -> bool:
        return not isinstance(value, bool) and isinstance(value, int | float) and self.lo <= value <= self.hi

    @property
    def span(self) -> str:
        """``[lo, hi]``, as option errors print it."""
        return f"[{self.lo:g}, {self.hi:g}]"

    def check(self, value: object, name: str) -> float:
        """``value`` as a float when it is a number within bounds, else a `LimitError` naming ``name``."""
        if isinstance(value, bool) or not isinstance(value, int | float) or not self.lo <= value <= self.hi:
            raise LimitError(f"{name} must be a number in [{self.lo}, {self.hi}], got {value!r}")
        return float(value)


# -- Ground Truth (CreateLabelingJob HumanTaskConfig) ------------------------------------------------
#: NumberOfHumanWorkersPerDataObject.
WORKERS_PER_OBJECT: Final = IntRange(1, 1, 9)
#: TaskTimeLimitInSeconds (up to 8 hours).
TASK_TIME_LIMIT_SECONDS: Final = IntRange(600, 30, 28800)
#: TaskAvailabilityLifetimeInSeconds for private and vendor work teams (up to 10 days).
TASK_AVAILABILITY_SECONDS: Final = IntRange(864000, 60, 864000)
#: TaskAvailabilityLifetimeInSeconds for the public crowd (up to 12 hours).
PUBLIC_TASK_AVAILABILITY_SECONDS: Final = IntRange(43200, 60, 43200)
#: MaxConcurrentTaskCount.
MAX_CONCURRENT_TASKS: Final = IntRange(1000, 1, 5000)
#: Bounding-box jobs accept at most this many label categories.
MAX_LABELS: Final = 50
#: The public crowd (Amazon Mechanical Turk) work team: ``...:394669845002:workteam/public-crowd/default``.
PUBLIC_WORKTEAM: Final = re.compile(r":394669845002:workteam/public-crowd/")


def is_public_workteam(arn: str | None) -> bool:
    """Whether ``arn`` names the public crowd (which needs a task price and a shorter availability)."""
    return bool(arn) and bool(PUBLIC_WORKTEAM.search(arn or ""))


def task_availability(workteam_arn: str | None) -> IntRange:
    """The availability bound that applies to this work team."""
    return PUBLIC_TASK_AVAILABILITY_SECONDS if is_public_workteam(workteam_arn) else TASK_AVAILABILITY_SECONDS


# -- reviewer time model (the report's time estimate: estimates from these constants, not measurements) -
#: Seconds to verify one shown box (yes/no): 1.6 s, Papadopoulos, Uijlings, Keller, Ferrari, "We don't need
#: no bounding-boxes: Training object class detectors using only human verification", CVPR 2016.
VERIFY_SECONDS_PER_BOX: Final = FloatRange(1.6, 0.1, 600.0)
#: Seconds to draw one box, quality checks included: 34.5 s, Papadopoulos, Uijlings, Keller, Ferrari,
#: "Extreme clicking for efficient object annotation", ICCV 2017, citing Su, Deng, Fei-Fei, "Crowdsourcing
#: annotations for visual object detection", AAAI 2012 Workshop on Human Computation.
DRAW_SECONDS_PER_BOX: Final = FloatRange(34.5, 0.1, 3600.0)

# -- review wait -------------------------------------------------------------------------------------
#: How long a batch waits for its review job before it is stopped and the batch fails.
REVIEW_TIMEOUT_HOURS: Final = IntRange(240, 1, 24 * 30)
#: The same bound in seconds, as the job-event function reads it (at least a minute).
REVIEW_TIMEOUT_SECONDS: Final = IntRange(REVIEW_TIMEOUT_HOURS.default * 3600, 60, REVIEW_TIMEOUT_HOURS.hi * 3600)
#: How long one wait for a review's task token lasts before the workflow checks again.
REVIEW_WAIT_SECONDS: Final = IntRange(3600, 1, 365 * 86400)

# -- Label Studio review backend ---------------------------------------------------------------------
#: Minutes between reconcile sweeps of open Label Studio projects.
LABEL_STUDIO_SYNC_MINUTES: Final = IntRange(5, 1, 60)
#: Lifetime of the presigned image URLs handed to Label Studio (up to 7 days, SigV4's limit).
LABEL_STUDIO_PRESIGN_TTL_MINUTES: Final = IntRange(60, 1, 10080)

# -- export ------------------------------------------------------------------------------------------
#: Share of images in the validation split (a 100% validation split leaves nothing to train on).
VAL_FRACTION: Final = FloatRange(0.2, 0.0, 0.9)
#: Threads copying images and writing labels in one export invocation.
COPY_THREADS: Final = IntRange(48, 1, 256)
#: Exports of more images than this fan out over a Step Functions Distributed Map of shard workers
#: (sized from the measured per-image cost: bench/README.md, "Distributed export").
EXPORT_DISTRIBUTED_ABOVE: Final = IntRange(10_000, 0, 10_000_000)
#: Images per shard of a distributed export (one shard worker invocation each; S3 lists 1,000 keys a page).
EXPORT_SHARD_SIZE: Final = IntRange(2_000, 1, 100_000)
#: Shard workers running at once (Distributed Map MaxConcurrency; AWS allows up to 10,000).
EXPORT_MAX_CONCURRENCY: Final = IntRange(10, 1, 10_000)

# -- reserved concurrency (labelloop.reservedConcurrency, off unless set) ----------------------------
#: Exports running at once when reserved (one per dataset being exported, plus continuations).
EXPORT_RESERVED_CONCURRENCY: Final = IntRange(5, 1, 1000)
#: Label Studio sync sweeps running at once when reserved (the schedule plus webhook-queued sweeps).
LABEL_STUDIO_SYNC_RESERVED_CONCURRENCY: Final = IntRange(2, 1, 1000)
#: Lambda keeps this much of the account's concurrency unreserved (all of it below 100: new accounts).
LAMBDA_MIN_UNRESERVED_CONCURRENCY: Final = 100

# -- model and calibration ---------------------------------------------------------------------------
MIN_CONFIDENCE: Final = FloatRange(0.05, 0.0, 1.0)
AUTO_ACCEPT_THRESHOLD: Final = FloatRange(0.0, 0.0, 1.0)
TARGET_QUALITY: Final = FloatRange(0.6, 0.0, 1.0)
CONFIDENCE_LEVEL: Final = FloatRange(0.95, 0.5, 0.999)
MIN_PAIRS: Final = IntRange(30, 5, 1_000_000)
AUDIT_FRACTION: Final = FloatRange(0.05, 0.0, 1.0)

# -- intake and batches ------------------------------------------------------------------------------
BATCH_WINDOW_SECONDS: Final = IntRange(60, 0, 300)  # SQS event source MaximumBatchingWindowInSeconds
MAX_BATCH_SIZE: Final = IntRange(1000, 1, 100_000)
#: Objects one build invocation validates before handing over to the next (continuation loop).
BUILD_CHUNK: Final = IntRange(2000, 1, 100_000)
PRELABEL_SHARD_SIZE: Final = IntRange(200, 1, 10_000)
PRELABEL_MAX_CONCURRENCY: Final = IntRange(4, 1, 1000)
MAX_IMAGE_BYTES: Final = IntRange(40 * 1024 * 1024, 1024, 100 * 1024 * 1024)
MAX_IMAGE_PIXELS: Final = IntRange(100_000_000, 64 * 64, 500_000_000)

# -- logs --------------------------------------------------------------------------------------------
LOG_RETENTION_DAYS_DEFAULT: Final = 30
#: Retention values CloudWatch Logs accepts (PutRetentionPolicy retentionInDays).
LOG_RETENTION_DAYS: Final = frozenset(
    {1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653}
)
#: Fewest human-labeled evaluation images on which a candidate model version may be promoted.
MIN_EVALUATION_IMAGES: Final = IntRange(30, 5, 1_000_000)

# -- training data (Rekognition Custom Labels object detection; docs/retrain.md) ---------------------
#: Share of human-labeled images held out as the fixed evaluation set (a stable hash of the image key).
EVALUATION_FRACTION: Final = FloatRange(0.2, 0.05, 0.5)
#: Rekognition Custom Labels' limits on one training image and on a dataset.
REKOGNITION_MIN_SIDE_PX: Final = 64
REKOGNITION_MAX_SIDE_PX: Final = 4096
REKOGNITION_MAX_ASPECT: Final = 20.0
REKOGNITION_MAX_BOXES: Final = 50
REKOGNITION_MAX_LABELS: Final = 250
#: Images with a side longer than this are resized by Rekognition; each box must stay over 1x1 px.
REKOGNITION_RESIZE_SIDE_PX: Final = 1280
#: More than this share of invalid lines fails a Rekognition dataset.
REKOGNITION_MAX_INVALID_SHARE: Final = 0.2

# -- the retrain loop (docs/retrain.md) -------------------------------------------------------------
#: Human-labeled training images that must have arrived since the active version was trained.
RETRAIN_MIN_NEW_LABELS: Final = IntRange(50, 1, 10_000_000)
#: Fewest training boxes of every class a version is trained on (fewer: no training, with the reason).
RETRAIN_MIN_PER_CLASS: Final = IntRange(5, 1, 1_000_000)
#: Rekognition inference units a candidate is started with for its evaluation.
RETRAIN_INFERENCE_UNITS: Final = IntRange(1, 1, 100)
#: Seconds between two looks at a training, a dataset or a starting model (the state machine's Wait).
RETRAIN_POLL_SECONDS: Final = IntRange(120, 1, 3600)
#: Longest a retraining may take end to end (the retrain state machine's timeout).
RETRAIN_MAX_HOURS: Final = IntRange(36, 1, 72)
#: SageMaker backend: a training job's MaxRuntimeInSeconds, in hours (managed spot waits at most twice that).
RETRAIN_MAX_RUNTIME_HOURS: Final = IntRange(12, 1, 672)
#: SageMaker backend: hyperparameters a training job accepts (its API limits: count, key and value length).
SAGEMAKER_MAX_HYPERPARAMETERS: Final = 100
SAGEMAKER_HYPERPARAMETER_KEY_CHARS: Final = 256
SAGEMAKER_HYPERPARAMETER_VALUE_CHARS: Final = 2500
#: Evaluation images predicted per invocation of the advance step (it returns and is called again).
RETRAIN_EVALUATION_CHUNK: Final = 500

# -- model hosting (docs/model-lifecycle.md) --------------------------------------------------------
#: Inference units a Rekognition version is started with (StartProjectVersion MinInferenceUnits).
MODEL_INFERENCE_UNITS: Final = IntRange(1, 1, 100)
#: Minutes a started version may stay RUNNING with no batch holding it before the sweep stops it.
MODEL_IDLE_MINUTES: Final = FloatRange(30.0, 0.0, 7 * 24 * 60.0)
#: Seconds between two looks at a starting version (the batch state machine's Wait).
MODEL_START_POLL_SECONDS: Final = IntRange(30, 1, 600)
#: Longest a batch waits for its version to reach RUNNING (real starts take 5-20 minutes).
MODEL_START_TIMEOUT_SECONDS: Final = 40 * 60
#: A batch's lease on its version lasts this long unless renewed (a crashed batch's lease expires).
MODEL_LEASE_SECONDS: Final = 60 * 60
#: A pre-label shard renews its batch's lease when less than this is left.
MODEL_LEASE_RENEW_SECONDS: Final = 30 * 60
#: A sweep's stop mark younger than this keeps batches waiting (an older one was a crashed sweep).
MODEL_STOP_MARK_SECONDS: Final = 5 * 60
#: Minutes between two sweeps of the idle-stop schedule.
MODEL_SWEEP_MINUTES: Final = 5
#: Consecutive failed stops of one version before the sweep fails (its Errors alarm fires).
MODEL_STOP_FAILURES_ALARM: Final = 3
