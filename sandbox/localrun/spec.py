"""The run's inputs: `RunSpec` (the options as given) and `RunPlan` (checked and parsed, at the CLI boundary).

Every problem a user can fix (bad folder, bad option, malformed file) is a `LocalRunError` raised
here, before anything is synthesized or deployed.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from labelloop_core import limits
from sandbox.faults import FaultSpecError, injector_from_options
from sandbox.imagerefs import load_records
from sandbox.model_emulation import FAULTS as FAULT_KINDS

LOCAL_ENDPOINT = "labelloop-local"
LOCAL_WORKTEAM = "labelloop-local"
#: The ``--context`` key ``--task-mode`` sets (keys arrive dotted, `cli.context`).
TASK_MODE_KEY = "labelloop.taskMode"
#: moto's default account and the region the emulation runs in.
ACCOUNT, REGION = "123456789012", "us-east-1"
#: ``--model learn``: the first version is an untrained local detector hosted as this Rekognition version.
LEARN_PROJECT = "labelloop-local"
LEARN_V1_ARN = (
    f"arn:aws:rekognition:{REGION}:{ACCOUNT}:project/{LEARN_PROJECT}/version/{LEARN_PROJECT}.v1/1700000000000"
)
#: ``--model learn-sagemaker``: the endpoint v1 runs on, and the training image its jobs name (never pulled:
#: the emulation trains the learned detector).
LEARN_SAGEMAKER_IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/labelloop-local/learned-detector:1"
#: The models whose versions the retrain loop trains: ``--model`` value → retrain backend.
LEARN_MODELS = {"learn": "rekognition", "learn-sagemaker": "sagemaker"}
#: The retrain settings ``--model learn`` deploys with (demo-sized; ``--context labelloop.retrain.KEY=V`` wins).
LEARN_RETRAIN = {
    "enabled": True,
    "pollSeconds": 1,
    "minNewLabels": 8,
    "minPerClass": 3,
    "minEvaluationImages": 10,
    "evaluationFraction": 0.3,
}
#: ``--model learn``: the hosting life cycle at demo speed (the sweep stops a version 15 s after the last
#: batch let go, the next wave starts it again; docs/model-lifecycle.md).
LEARN_HOSTING = {"idleMinutes": 0.25, "startPollSeconds": 1}
#: ``--model learn``: batches of at most this many images, so the first export (and training) comes early.
LEARN_MAX_BATCH_SIZE = 12
#: ``--model learn``: calibration pairs before a version's theta is tested (the bound is valid at any
#: count; a new version starts from its few evaluation pairs). ``--min-pairs`` wins.
LEARN_MIN_PAIRS = 10
MAX_WAVES = 20


class LocalRunError(ValueError):
    """A problem with the run's inputs the user can fix (bad folder, bad spec, malformed file)."""


@dataclass(frozen=True)
class RunSpec:
    """Everything one local run needs; the CLI builds it from its arguments.

    ``first_wave`` < 1 uploads that fraction of the images first and waits for its batch to finish
    before uploading the rest (data arriving over time, which lets calibration learn from the first
    wave). The rehearsal knobs (``model_faults``, ``duplicate_job_events``, ``upload_twice``, a
    ``fail`` reviewer) inject the failures the pipeline must survive.
    """

    images: Path
    out: Path
    dataset: str = "local"
    labels: tuple[str, ...] | None = None
    model: str = "none"
    reviewer: str = "accept"
    workers: int = 1
    threshold: float | None = None
    target_quality: float | None = None
    min_pairs: int | None = None
    first_wave: float = 1.0
    #: Upload the images in this many equal waves, each waited for (its retraining included).
    waves: int = 1
    oracle_noise: float = 0.02
    seed: int = 0
    timeout_s: float = 900.0
    model_faults: dict[str, str] = field(default_factory=dict)
    duplicate_job_events: bool = False
    upload_twice: bool = False
    #: Dotted ``labelloop.KEY`` -> VALUE overrides (``--context``), applied last, as ``cdk deploy -c``.
    context: dict[str, str] = field(default_factory=dict)
    #: ``adjust`` | ``verify`` (verify-then-adjust); None = the stack's ``taskMode``.
    task_mode: str | None = None
    #: ``labelstudio``: review on a real Label Studio server (token from LABEL_STUDIO_API_KEY).
    review_backend: str = "groundtruth"
    labelstudio_url: str | None = None
    #: ``SERVICE:OPERATION:RATE`` rules failing the deployed functions' AWS calls (`sandbox.faults`).
    inject_faults: tuple[str, ...] = ()
    #: ``FUNCTION[:CALL]``: one invocation of that function dies at its CALL-th AWS call.
    crash: str | None = None


@dataclass
class ModelChoice:
    """The parsed ``--model``: what the stack is configured with and who answers for the model."""

    kind: str  # none | replay | synthetic | learn | learn-sagemaker

    @property
    def learns(self) -> bool:
        """Whether the retrain loop trains this model's next versions (``learn``, ``learn-sagemaker``)."""
        return self.kind in LEARN_MODELS

    file: Path | None = None
    records: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ReviewerChoice:
    """The parsed ``--reviewer``."""

    kind: str  # accept | answers | oracle | fail | fail-adjust
    file: Path | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    reason: str | None = None


@dataclass(frozen=True)
class RunPlan:
    """A checked `RunSpec` with its parsed model/reviewer, the deployed labels and work team, the files to
    upload and the model faults. ``spec`` carries the deployed threshold and workers, whichever option set them.
    """

    spec: RunSpec
    model: ModelChoice
    reviewer: ReviewerChoice
    labels: tuple[str, ...]
    workteam: str
    files: list[tuple[Path, str]]
    not_uploaded: list[str]
    faults: dict[str, str]
    #: The Label Studio token (from the environment) when the run reviews there; never printed.
    labelstudio_token: str | None = field(default=None, repr=False)
    #: The `sandbox.faults.FaultInjector` for ``--inject-faults``/``--crash-once`` (None without either).
    fault_injector: Any = None


def sha256_hex(data: bytes) -> str:
    """Content hash by which images are recognised (InvokeEndpoint only sees bytes)."""
    return hashlib.sha256(data).hexdigest()


def _spec_file(value: str, prefix: str, option: str) -> Path:
    path = Path(value[len(prefix) :]).expanduser()
    if not value[len(prefix) :]:
        raise LocalRunError(f"{option} {prefix}FILE needs a file name")
    if not path.is_file():
        raise LocalRunError(f"{option} {value}: no such file {path}")
    return path


def _image_name(name: str, root: Path, location: str, images: Path) -> str:
    """``name`` as a POSIX path relative to the images folder (absolute paths must lie inside it)."""
    candidate = Path(name)
    if candidate.is_absolute():
        try:
            name = candidate.resolve().relative_to(root).as_posix()
        except ValueError as exc:
            raise LocalRunError(f"{location} names {name}, outside {images}") from exc
    name = PurePosixPath(name.replace("\\", "/")).as_posix()
    return name[2:] if name.startswith("./") else name


def _records(path: Path, images: Path, required: str, option: str) -> list[dict[str, Any]]:
    """JSON Lines records whose ``image`` is a path relative to the images folder, normalised."""
    try:
        raw = load_records(path)
    except Exception as exc:
        raise LocalRunError(f"{option}: {path} is malformed: {exc}") from exc
    records = []
    root = images.resolve()
    for number, record in enumerate(raw, start=1):
        record.pop("_base", None)
        wanted = required.split("|")  # any of them (answers: box lists and/or verify-task verdicts)
        if not any(isinstance(record.get(name), list) for name in wanted):
            shown = " or ".join(repr(name) for name in wanted)
            raise LocalRunError(f"{option}: {path} record {number} has no list {shown}: {str(record)[:200]}")
        name = _image_name(record["image"], root, f"{option}: {path} record {number}", images)
        records.append({**record, "image": name, "_base": str(images)})
    return records


def parse_model(value: str, images: Path) -> ModelChoice:
    """``none`` | ``synthetic`` | ``replay:FILE``."""
    if value == "none":
        return ModelChoice("none")
    if value == "synthetic":
        return ModelChoice("synthetic")
    if value in LEARN_MODELS:
        return ModelChoice(value)
    if value.startswith("replay:"):
        path = _spec_file(value, "replay:", "--model")
        return ModelChoice("replay", path, _records(path, images, "detections", "--model"))
    raise LocalRunError(f"--model must be none, synthetic, learn, learn-sagemaker or replay:FILE, got {value!r}")


def parse_reviewer(value: str, images: Path) -> ReviewerChoice:
    """``accept`` | ``answers:FILE`` | ``oracle:FILE`` | ``fail[:REASON]`` (rehearse a failed job) |
    ``fail-adjust[:REASON]`` (verify tasks judged correct, the adjustment job fails)."""
    if value == "accept":
        return ReviewerChoice("accept")
    if value == "human":
        return ReviewerChoice("human")
    if value.startswith("answers:"):
        path = _spec_file(value, "answers:", "--reviewer")
        return ReviewerChoice("answers", path, _records(path, images, "workers|verdicts", "--reviewer"))
    if value.startswith("oracle:"):
        path = _spec_file(value, "oracle:", "--reviewer")
        return ReviewerChoice("oracle", path, _records(path, images, "detections", "--reviewer"))
    if value == "fail" or value.startswith("fail:"):
        reason = value[5:] or "The workforce failed to complete the tasks (rehearsed failure)."
        return ReviewerChoice("fail", reason=reason)
    if value == "fail-adjust" or value.startswith("fail-adjust:"):
        # Verify tasks are answered "correct"; the adjustment job then fails (verify-then-adjust rehearsal).
        reason = value[12:] or "The workforce failed to complete the adjustment tasks (rehearsed failure)."
        return ReviewerChoice("fail-adjust", reason=reason)
    raise LocalRunError(
        "--reviewer must be accept, answers:FILE, oracle:FILE, human, fail[:REASON] or fail-adjust[:REASON], "
        f"got {value!r}"
    )


def labels_for(spec: RunSpec, model: ModelChoice, reviewer: ReviewerChoice) -> tuple[str, ...]:
    """``--labels`` when given, else every label the model/reviewer files use (sorted), else ``object``."""
    if spec.labels:
        return tuple(spec.labels)
    found: set[str] = set()
    for record in model.records + reviewer.records:
        boxes = record.get("detections") or [b for worker in record.get("workers", []) for b in worker]
        found.update(str(b["label"]) for b in boxes if isinstance(b, dict) and "label" in b)
    return tuple(sorted(found)) or ("object",)


def list_images(images: Path, skip: Iterable[Path]) -> list[tuple[Path, str]]:
    """Every file under ``images`` (relative POSIX path), minus the run's own spec files."""
    if not images.is_dir():
        raise LocalRunError(f"--images {images}: not a folder")
    skipped = {p.resolve() for p in skip}
    files = [
        (p, p.relative_to(images).as_posix())
        for p in sorted(images.rglob("*"))
        if p.is_file() and p.resolve() not in skipped
    ]
    if not files:
        raise LocalRunError(f"--images {images}: no files to upload")
    return files


def fault_names(spec: RunSpec, files: list[tuple[Path, str]]) -> dict[str, str]:
    """Model faults keyed so the model emulation finds them: content hash (InvokeEndpoint sees
    bytes only) plus the key and file name."""
    by_relative = {relative: path for path, relative in files}
    faults: dict[str, str] = {}
    for name, fault in spec.model_faults.items():
        if fault not in FAULT_KINDS:
            raise LocalRunError(f"--model-fault {name}={fault}: the kind must be one of {', '.join(FAULT_KINDS)}")
        path = by_relative.get(name)
        if path is None:
            raise LocalRunError(f"--model-fault {name}={fault}: no such image under {spec.images}")
        faults[sha256_hex(path.read_bytes())] = fault
        faults[name] = fault
    return faults


def check_options(spec: RunSpec) -> None:
    """Refuse options out of range before any file is read (``local run`` and ``local up`` alike)."""
    if not spec.dataset or "/" in spec.dataset:
        raise LocalRunError(f"--dataset must be a non-empty name without '/', got {spec.dataset!r}")
    if spec.workers not in limits.WORKERS_PER_OBJECT:
        raise LocalRunError(f"--workers must be within {limits.WORKERS_PER_OBJECT.span}, got {spec.workers}")
    if spec.threshold is not None and spec.threshold not in limits.AUTO_ACCEPT_THRESHOLD:
        raise LocalRunError(f"--threshold must be within {limits.AUTO_ACCEPT_THRESHOLD.span}, got {spec.threshold}")
    if not 0.0 < spec.first_wave <= 1.0:
        raise LocalRunError(f"--first-wave must be within (0, 1], got {spec.first_wave}")
    if isinstance(spec.waves, bool) or not isinstance(spec.waves, int) or not 1 <= spec.waves <= MAX_WAVES:
        raise LocalRunError(f"--waves must be an integer within 1-{MAX_WAVES}, got {spec.waves!r}")
    if spec.waves > 1 and spec.first_wave < 1.0:
        raise LocalRunError("--waves and --first-wave both split the upload: give one of them")
    if spec.target_quality is not None and not 0.0 < spec.target_quality < 1.0:
        raise LocalRunError(f"--target-quality must be within (0, 1), got {spec.target_quality}")
    if spec.task_mode not in (None, "adjust", "verify"):
        raise LocalRunError(f"--task-mode must be adjust or verify, got {spec.task_mode!r}")
    given = spec.context.get(TASK_MODE_KEY, spec.task_mode)
    if spec.task_mode is not None and given != spec.task_mode:
        raise LocalRunError(f"--task-mode {spec.task_mode} contradicts --context taskMode={given}")


def check_out(spec: RunSpec) -> None:
    """``local run`` writes into ``--out``: it must not be a folder that is uploaded."""
    if spec.out.resolve().is_relative_to(spec.images.resolve()):
        raise LocalRunError(f"--out {spec.out} is inside --images {spec.images}: its files would be uploaded as images")


def stack_context(spec: RunSpec, labels: tuple[str, ...]) -> dict[str, Any]:
    """camelCase context overrides for `infra.synth.synthesize` matching this run.

    A model (synthetic or replay) is an emulated SageMaker endpoint answered by the local predictor;
    ``learn`` is an emulated Rekognition Custom Labels version that the retrain loop replaces;
    ``learn-sagemaker`` the emulated endpoint's first variant, replaced by SageMaker training jobs.
    """
    model: dict[str, Any] = (
        {"kind": "none"}
        if spec.model == "none"
        else {"kind": "sagemaker", "endpointName": LOCAL_ENDPOINT, "endpointFormat": "builtin"}
    )
    if spec.model == "learn":
        model = {"kind": "rekognition", "projectVersionArn": LEARN_V1_ARN, **LEARN_HOSTING}
    context: dict[str, Any] = {
        "labels": list(labels),
        "model": model,
        "workersPerObject": spec.workers,
        "workteamArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:workteam/private-crowd/{LOCAL_WORKTEAM}",
        "batchWindowSeconds": 1,
        "autoAcceptThreshold": spec.threshold,
    }
    if spec.model == "learn-sagemaker":
        context["retrain"] = {**LEARN_RETRAIN, "backend": "sagemaker", "trainingImage": LEARN_SAGEMAKER_IMAGE}
    if spec.model == "learn":
        context["retrain"] = dict(LEARN_RETRAIN)
    if spec.model in LEARN_MODELS:
        context["maxBatchSize"] = LEARN_MAX_BATCH_SIZE
    if spec.task_mode is not None:
        context["taskMode"] = spec.task_mode
    calibration: dict[str, Any] = {"minPairs": LEARN_MIN_PAIRS} if spec.model in LEARN_MODELS else {}
    if spec.target_quality is not None:
        calibration["targetQuality"] = spec.target_quality
    if spec.min_pairs is not None:
        calibration["minPairs"] = spec.min_pairs
    if calibration:
        context["calibration"] = calibration
    if spec.review_backend == "labelstudio":
        from sandbox.labelstudio_local import secret_arn

        context["reviewBackend"] = "labelstudio"
        # No webhook: nothing in the emulation serves function URLs; the run plays the schedule instead.
        context["labelStudio"] = {
            "url": spec.labelstudio_url,
            "tokenSecretArn": secret_arn(REGION, ACCOUNT),
            "webhook": False,
        }
    if spec.context:
        context, _ = _resolved_context(context, spec.context)
    return context


def _resolved_context(context: dict[str, Any], overrides: dict[str, str]) -> tuple[dict[str, Any], Any]:
    """``--context`` overrides applied as a deploy applies ``-c`` (`infra.config.resolve_context`)."""
    from infra.config import ConfigError, resolve_context

    try:
        return resolve_context(context, overrides)
    except ConfigError as exc:
        raise LocalRunError(f"--context: {exc}") from None


def run_config(spec: RunSpec, labels: tuple[str, ...]) -> Any:
    """The validated `infra.config.LabelLoopConfig` the run's stack is synthesized with."""
    return _resolved_context(stack_context(spec, labels), {})[1]


def plan_run(spec: RunSpec) -> RunPlan:
    """Check ``spec`` and parse what it names; raises `LocalRunError` with a one-line reason."""
    check_options(spec)
    check_out(spec)
    model = parse_model(spec.model, spec.images)
    reviewer = parse_reviewer(spec.reviewer, spec.images)
    token = _check_review_backend(spec, reviewer)
    config = run_config(spec, labels_for(spec, model, reviewer))
    labels = tuple(config.labels)  # --context labels=... wins over --labels and the files' labels
    workteam = (config.workteam_arn or LOCAL_WORKTEAM).rsplit("/", 1)[-1]
    # The report speaks of the deployed values, whichever option set them.
    spec = dataclasses.replace(spec, threshold=config.auto_accept_threshold, workers=config.workers_per_object)
    spec_files = [p for p in (model.file, reviewer.file) if p is not None]
    files = list_images(spec.images, spec_files)
    not_uploaded = [p.name for p in spec_files if p.resolve().is_relative_to(spec.images.resolve())]
    try:
        injector = injector_from_options(spec.inject_faults, spec.crash, spec.seed)
    except FaultSpecError as exc:
        raise LocalRunError(str(exc)) from None
    return RunPlan(
        spec, model, reviewer, labels, workteam, files, not_uploaded, fault_names(spec, files), token, injector
    )


def _check_review_backend(spec: RunSpec, reviewer: ReviewerChoice) -> str | None:
    """The Label Studio token (from the environment) when the run reviews there; input errors otherwise."""
    if spec.review_backend not in ("groundtruth", "labelstudio"):
        raise LocalRunError(f"--review-backend must be groundtruth or labelstudio, got {spec.review_backend!r}")
    if spec.review_backend == "groundtruth":
        if reviewer.kind == "human":
            raise LocalRunError("--reviewer human needs --review-backend labelstudio (people review in its UI)")
        if spec.labelstudio_url:
            raise LocalRunError("--labelstudio-url is only used with --review-backend labelstudio")
        return None
    from sandbox.labelstudio_local import LabelStudioLocalError, check_server, token_from_env

    if not spec.labelstudio_url:
        raise LocalRunError("--review-backend labelstudio needs --labelstudio-url URL (e.g. http://127.0.0.1:8080)")
    if reviewer.kind in ("fail", "fail-adjust"):
        raise LocalRunError(
            f"--reviewer {reviewer.kind} rehearses a failed Ground Truth job; use --review-backend groundtruth"
        )
    if spec.workers != 1:
        raise LocalRunError("--review-backend labelstudio runs with --workers 1 (one annotator answers each task)")
    try:
        token = token_from_env()
        check_server(spec.labelstudio_url, token)
    except LabelStudioLocalError as exc:
        raise LocalRunError(str(exc)) from exc
    return token
