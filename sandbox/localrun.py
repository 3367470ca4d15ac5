"""`labelloop local run` as a library: the deployed pipeline, end to end, on a laptop.

``run_local(spec)`` synthesizes the stack with context overrides matching the run (labels, model,
threshold, workers), deploys it into the in-process emulation (`sandbox.harness.LocalCloud`),
uploads a folder into ``incoming/<dataset>/`` exactly as a user would (keys = relative paths),
lets the DEPLOYED pipeline run (S3 events -> intake queue -> batch starter -> Step Functions ->
Ground Truth emulator -> merge/calibrate -> "Batch Labeled" -> export Lambda), downloads the latest
YOLO export and writes ``report.json``. Every number in the report is read back from what the
pipeline wrote (per-batch ``report.json``, ``rejected.jsonl``, output manifests, ``export.json``,
the intake dead-letter queue); the two accounting invariants are then CHECKED, never assumed.

The intake queue is drained by `IntakePoller`, Lambda's SQS poller played deterministically: after
each upload wave, receive what the queue holds (everything uploaded arrived within the batching
window), invoke the deployed batch starter with up to ``BatchSize`` records, delete what succeeded,
and make failed records (``batchItemFailures``, function errors) visible again AT ONCE, so they are
retried until the queue's redrive policy moves them to the dead-letter queue within the run. (The
harness's own poller, `sandbox.event_sources`, leaves a failed batch in flight for the queue's
visibility timeout, 30 minutes on the intake queue, as AWS does: right for tests of that timing,
too slow for a local run that must account for every image before it ends.)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import mimetypes
import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote_plus

from sandbox.imagerefs import ImageRef, load_records
from sandbox.models import FAULTS as FAULT_KINDS
from sandbox.models import NoPredictor, Predictor, ReplayPredictions, SyntheticDetector
from sandbox.workforce import AcceptPrelabels, FailingWorkforce, Oracle, ReplayAnswers, Task, WorkerAnswer, Workforce

LOCAL_ENDPOINT = "labelloop-local"
LOCAL_WORKTEAM = "labelloop-local"
ASSEMBLY_CACHE_ENV = "LABELLOOP_ASSEMBLY_CACHE"
#: moto's default account and the region the emulation runs in.
ACCOUNT, REGION = "123456789012", "us-east-1"
AUTO_ATTRIBUTE = "labelloop-auto"
PRELABEL_ATTRIBUTE = "labelloop-prelabel"
TERMINAL_EXECUTION = ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")

Progress = Callable[[str], None]


class LocalRunError(ValueError):
    """A problem with the run's inputs the user can fix (bad folder, bad spec, malformed file)."""


# ---------------------------------------------------------------------------------------- spec


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
    oracle_noise: float = 0.02
    seed: int = 0
    timeout_s: float = 900.0
    model_faults: dict[str, str] = field(default_factory=dict)
    duplicate_job_events: bool = False
    upload_twice: bool = False
    #: Dotted ``labelloop.KEY`` -> VALUE overrides (``--context``), applied last, as ``cdk deploy -c``.
    context: dict[str, str] = field(default_factory=dict)


@dataclass
class ModelChoice:
    """The parsed ``--model``: what the stack is configured with and who answers for the model."""

    kind: str  # none | replay | synthetic
    file: Path | None = None
    records: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ReviewerChoice:
    """The parsed ``--reviewer``."""

    kind: str  # accept | answers | oracle | fail
    file: Path | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    reason: str | None = None


def _spec_file(value: str, prefix: str, option: str) -> Path:
    path = Path(value[len(prefix) :]).expanduser()
    if not value[len(prefix) :]:
        raise LocalRunError(f"{option} {prefix}FILE needs a file name")
    if not path.is_file():
        raise LocalRunError(f"{option} {value}: no such file {path}")
    return path


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
        if not isinstance(record.get(required), list):
            raise LocalRunError(f"{option}: {path} record {number} has no list {required!r}: {str(record)[:200]}")
        name = record["image"]
        candidate = Path(name)
        if candidate.is_absolute():
            try:
                name = candidate.resolve().relative_to(root).as_posix()
            except ValueError as exc:
                raise LocalRunError(f"{option}: {path} record {number} names {name}, outside {images}") from exc
        name = PurePosixPath(name.replace("\\", "/")).as_posix()
        name = name[2:] if name.startswith("./") else name
        records.append({**record, "image": name, "_base": str(images)})
    return records


def parse_model(value: str, images: Path) -> ModelChoice:
    """``none`` | ``synthetic`` | ``replay:FILE``."""
    if value == "none":
        return ModelChoice("none")
    if value == "synthetic":
        return ModelChoice("synthetic")
    if value.startswith("replay:"):
        path = _spec_file(value, "replay:", "--model")
        return ModelChoice("replay", path, _records(path, images, "detections", "--model"))
    raise LocalRunError(f"--model must be none, synthetic or replay:FILE, got {value!r}")


def parse_reviewer(value: str, images: Path) -> ReviewerChoice:
    """``accept`` | ``answers:FILE`` | ``oracle:FILE`` | ``fail[:REASON]`` (rehearse a failed job)."""
    if value == "accept":
        return ReviewerChoice("accept")
    if value.startswith("answers:"):
        path = _spec_file(value, "answers:", "--reviewer")
        return ReviewerChoice("answers", path, _records(path, images, "workers", "--reviewer"))
    if value.startswith("oracle:"):
        path = _spec_file(value, "oracle:", "--reviewer")
        return ReviewerChoice("oracle", path, _records(path, images, "detections", "--reviewer"))
    if value == "fail" or value.startswith("fail:"):
        reason = value[5:] or "The workforce failed to complete the tasks (rehearsed failure)."
        return ReviewerChoice("fail", reason=reason)
    raise LocalRunError(f"--reviewer must be accept, answers:FILE, oracle:FILE or fail[:REASON], got {value!r}")


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


def stack_context(spec: RunSpec, labels: tuple[str, ...]) -> dict[str, Any]:
    """camelCase context overrides for `infra.synth.synthesize` matching this run.

    A model (synthetic or replay) is an emulated SageMaker endpoint answered by the local predictor.
    """
    model = (
        {"kind": "none"}
        if spec.model == "none"
        else {"kind": "sagemaker", "endpointName": LOCAL_ENDPOINT, "endpointFormat": "builtin"}
    )
    context: dict[str, Any] = {
        "labels": list(labels),
        "model": model,
        "workersPerObject": spec.workers,
        "workteamArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:workteam/private-crowd/{LOCAL_WORKTEAM}",
        "batchWindowSeconds": 1,
        "autoAcceptThreshold": spec.threshold,
    }
    calibration = {}
    if spec.target_quality is not None:
        calibration["targetQuality"] = spec.target_quality
    if spec.min_pairs is not None:
        calibration["minPairs"] = spec.min_pairs
    if calibration:
        context["calibration"] = calibration
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


def synthesize_stack(spec: RunSpec, labels: tuple[str, ...], outdir: Path) -> Path:
    """Synthesize the stack for this run into ``outdir``; returns the assembly directory.

    With ``LABELLOOP_ASSEMBLY_CACHE`` set to a folder, an assembly synthesized before from the same
    context and the same sources (infra/, lambdas/, cdk.json, requirements.txt) is reused.
    """
    from infra.synth import synthesize

    context = stack_context(spec, labels)
    cache = os.environ.get(ASSEMBLY_CACHE_ENV)
    target = outdir
    if cache:
        target = Path(cache) / _assembly_fingerprint(context)
        if (target / ".complete").is_file():
            return target
        if target.exists():
            shutil.rmtree(target)
    try:
        assembly = synthesize(target, context=context)
    except Exception as exc:
        raise LocalRunError(f"the stack does not synthesize with these options: {exc}") from exc
    if cache:
        (target / ".complete").write_text("ok\n")
    return assembly


def _assembly_fingerprint(context: dict[str, Any]) -> str:
    """Hash of the context and of every source file that shapes the synthesized assembly."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256(json.dumps(context, sort_keys=True).encode())
    files = [root / "cdk.json", root / "requirements.txt"]
    for folder in ("infra", "lambdas"):
        files += sorted(p for p in (root / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for path in files:
        if path.is_file():
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:24]


# ------------------------------------------------------------------- image names at run time


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ImageNames:
    """Maps what an emulated service sees of an image (bytes, S3 key) back to its path under --images.

    Originals are known by content hash and by their ``incoming/<dataset>/`` key; EXIF-normalised
    copies under ``work/derived/<dataset>/`` by key, or by content once they exist in the bucket
    (InvokeEndpoint only sees bytes).
    """

    def __init__(self, files: Iterable[tuple[Path, str]]) -> None:
        self._by_sha: dict[str, str] = {}
        for path, relative in files:
            self._by_sha.setdefault(_sha(path.read_bytes()), relative)
        self._prefixes: list[str] = []
        self._derived_prefix: str | None = None
        self._seen_derived: set[str] = set()
        self._s3: Any = None
        self._bucket: str | None = None
        self._lock = threading.Lock()

    def attach(self, s3: Any, bucket: str, incoming_prefix: str, work_prefix: str, dataset: str) -> None:
        """Learn the deployed bucket and prefixes (after deploy)."""
        self._s3, self._bucket = s3, bucket
        self._derived_prefix = f"{work_prefix}derived/{dataset}/"
        self._prefixes = [f"{incoming_prefix}{dataset}/", self._derived_prefix]

    def resolve(self, ref: ImageRef) -> str | None:
        if ref.key:
            for key in (ref.key, unquote_plus(ref.key)):
                for prefix in self._prefixes:
                    if key.startswith(prefix):
                        return key[len(prefix) :]
        if ref.data is None:
            return None
        digest = _sha(ref.data)
        if digest not in self._by_sha:
            self._learn_derived()
        return self._by_sha.get(digest)

    def _learn_derived(self) -> None:
        if self._s3 is None or self._derived_prefix is None:
            return
        with self._lock:
            pages = self._s3.get_paginator("list_objects_v2").paginate(Bucket=self._bucket, Prefix=self._derived_prefix)
            for page in pages:
                for item in page.get("Contents", []):
                    key = item["Key"]
                    if key in self._seen_derived:
                        continue
                    body = self._s3.get_object(Bucket=self._bucket, Key=key)["Body"].read()
                    self._seen_derived.add(key)
                    self._by_sha.setdefault(_sha(body), key[len(self._derived_prefix) :])


@dataclass
class NamedPredictor:
    """A replay predictor that finds its record by the image's path under --images."""

    names: ImageNames
    inner: ReplayPredictions

    def predict(self, image: ImageRef, labels: list[str]) -> list[dict[str, Any]]:
        relative = self.names.resolve(image)
        if relative is None:
            return self.inner.predict(image, labels)
        return self.inner.predict(ImageRef(data=image.data, key=relative), labels)


@dataclass
class NamedWorkforce:
    """A file-driven workforce (answers/oracle) that finds its record by the path under --images."""

    names: ImageNames
    inner: Workforce

    def answer(self, task: Task) -> list[WorkerAnswer]:
        relative = self.names.resolve(task.image)
        if relative is None:
            meta = task.data_object.get("labelloop-meta")
            if isinstance(meta, dict) and isinstance(meta.get("key"), str):
                relative = self.names.resolve(ImageRef(key=meta["key"]))
        if relative is None:
            return self.inner.answer(task)
        return self.inner.answer(dataclasses.replace(task, image=ImageRef(key=relative)))


def build_predictor(model: ModelChoice, names: ImageNames, labels: tuple[str, ...]) -> Predictor:
    if model.kind == "synthetic":
        return SyntheticDetector(list(labels))
    if model.kind == "replay":
        try:
            return NamedPredictor(names, ReplayPredictions(model.records))
        except ValueError as exc:
            raise LocalRunError(f"--model replay:{model.file}: {exc}") from exc
    return NoPredictor()


def build_workforce(reviewer: ReviewerChoice, names: ImageNames, spec: RunSpec) -> Workforce:
    try:
        if reviewer.kind == "answers":
            return NamedWorkforce(names, ReplayAnswers(reviewer.records))
        if reviewer.kind == "oracle":
            return NamedWorkforce(names, Oracle(reviewer.records, noise=spec.oracle_noise, seed=spec.seed))
    except Exception as exc:
        raise LocalRunError(f"--reviewer {reviewer.kind}:{reviewer.file}: {exc}") from exc
    if reviewer.kind == "fail":
        return FailingWorkforce(reviewer.reason or "rehearsed failure")
    return AcceptPrelabels()


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
        faults[_sha(path.read_bytes())] = fault
        faults[name] = fault
    return faults


# ------------------------------------------------------------------------- the intake poller


@dataclass
class IntakePoller:
    """Lambda's SQS poller for the deployed event source mappings (see the module doc)."""

    cloud: Any
    mappings: list[dict[str, Any]]
    invocations: int = 0
    failures: list[str] = field(default_factory=list)

    @classmethod
    def take_over(cls, cloud: Any) -> IntakePoller:
        """Disable moto's one-record-per-SendMessage delivery and return a poller for the mappings."""
        lam = cloud.client("lambda")
        mappings = []
        for page in lam.get_paginator("list_event_source_mappings").paginate():
            for mapping in page["EventSourceMappings"]:
                if str(mapping.get("EventSourceArn", "")).startswith("arn:aws:sqs:"):
                    lam.update_event_source_mapping(UUID=mapping["UUID"], Enabled=False)
                    mappings.append(mapping)
        return cls(cloud, mappings)

    def _queue_url(self, arn: str) -> str:
        return str(self.cloud.client("sqs").get_queue_url(QueueName=arn.rsplit(":", 1)[-1])["QueueUrl"])

    def drain(self, max_rounds: int = 200) -> int:
        """Deliver everything the queues hold; return the number of batch-starter invocations."""
        sqs, lam = self.cloud.client("sqs"), self.cloud.client("lambda")
        calls = 0
        for mapping in self.mappings:
            url = self._queue_url(mapping["EventSourceArn"])
            batch_size = int(mapping.get("BatchSize") or 10)
            partial = "ReportBatchItemFailures" in (mapping.get("FunctionResponseTypes") or [])
            for _ in range(max_rounds):
                messages = self._receive(sqs, url, batch_size)
                if not messages:
                    break
                event = {"Records": [self._record(m, mapping["EventSourceArn"]) for m in messages]}
                result = lam.invoke(FunctionName=mapping["FunctionArn"], Payload=json.dumps(event).encode())
                calls += 1
                body = result["Payload"].read().decode("utf-8")
                ids = {m["MessageId"] for m in messages}
                if result.get("FunctionError"):
                    failed = ids
                    self.failures.append(f"batch starter failed: {body[:500]}")
                else:
                    answer = json.loads(body) if body else {}
                    reported = {f["itemIdentifier"] for f in (answer or {}).get("batchItemFailures", [])}
                    # Like Lambda: the answer only counts when the mapping enables partial responses.
                    failed = reported if partial else set()
                    if reported and not partial:
                        self.failures.append(
                            f"the batch starter reported {len(reported)} failed record(s) but its event source "
                            "mapping lacks ReportBatchItemFailures, so Lambda deletes them as processed"
                        )
                    elif reported:
                        self.failures.append(f"batch starter reported {len(reported)} failed record(s); retried")
                done = [m for m in messages if m["MessageId"] not in failed]
                for start in range(0, len(done), 10):
                    entries = [
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                        for i, m in enumerate(done[start : start + 10])
                    ]
                    sqs.delete_message_batch(QueueUrl=url, Entries=entries)
                for m in messages:
                    if m["MessageId"] in failed:
                        # Visible again at once: the retry happens in the next round, and the
                        # queue's redrive policy moves a record to the DLQ after maxReceiveCount.
                        sqs.change_message_visibility(
                            QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0
                        )
            else:
                self.failures.append(f"queue {url} still had messages after {max_rounds} rounds")
        self.invocations += calls
        return calls

    @staticmethod
    def _receive(sqs: Any, url: str, batch_size: int) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        while len(messages) < batch_size:
            got = sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=min(10, batch_size - len(messages)),
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            if not got:
                break
            messages += got
        return messages

    def _record(self, message: dict[str, Any], queue_arn: str) -> dict[str, Any]:
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": dict(message.get("Attributes", {})),
            "messageAttributes": dict(message.get("MessageAttributes", {})),
            "md5OfBody": message.get("MD5OfBody", hashlib.md5(message["Body"].encode()).hexdigest()),
            "eventSource": "aws:sqs",
            "eventSourceARN": queue_arn,
            "awsRegion": self.cloud.region,
        }

    def dead_letters(self) -> list[dict[str, Any]]:
        """Messages in the intake queues' dead-letter queues (received once each, with a visibility
        timeout that outlasts the run, so none is counted twice)."""
        sqs = self.cloud.client("sqs")
        found: list[dict[str, Any]] = []
        for mapping in self.mappings:
            url = self._queue_url(mapping["EventSourceArn"])
            attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"]).get("Attributes", {})
            if "RedrivePolicy" not in attrs:
                continue
            dlq_url = self._queue_url(json.loads(attrs["RedrivePolicy"])["deadLetterTargetArn"])
            while True:
                got = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=600).get(
                    "Messages", []
                )
                if not got:
                    break
                found += got
        return found


# ----------------------------------------------------------------------------- the run itself


@dataclass
class RunResult:
    """What a run produced: the report (also written to OUT/report.json) and any problems."""

    report: dict[str, Any]
    problems: list[str]
    dataset_dir: Path | None

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def failed_batches(self) -> list[dict[str, Any]]:
        """Batches the workflow ended as failed (their images are listed as rejected with the cause)."""
        return [b for b in self.report.get("batches", []) if b.get("status") == "failed"]


def _waves(files: list[tuple[Path, str]], first_wave: float) -> list[list[tuple[Path, str]]]:
    """Split the upload into waves; wave membership is a hash of the path, so it is spread evenly."""
    if first_wave >= 1.0 or len(files) < 2:
        return [files]
    ordered = sorted(files, key=lambda f: hashlib.sha256(f[1].encode()).hexdigest())
    cut = min(len(files) - 1, max(1, round(first_wave * len(files))))
    first = {rel for _, rel in ordered[:cut]}
    return [[f for f in files if f[1] in first], [f for f in files if f[1] not in first]]


class _Stopwatch:
    def __init__(self, progress: Progress) -> None:
        self.started = time.monotonic()
        self.progress = progress

    def say(self, text: str) -> None:
        self.progress(f"[{time.monotonic() - self.started:6.1f}s] {text}")


def run_local(spec: RunSpec, progress: Progress | None = None, assembly: Path | None = None) -> RunResult:
    """Run the pipeline on ``spec.images``; see the module doc. Raises `LocalRunError` for bad input.

    ``assembly`` is a stack already synthesized with `synthesize_stack` for the same spec (the demo
    synthesizes while it generates images); without it the stack is synthesized here.
    """
    from sandbox.harness import LocalCloud

    clock = _Stopwatch(progress or (lambda _text: None))
    if not spec.dataset or "/" in spec.dataset:
        raise LocalRunError(f"--dataset must be a non-empty name without '/', got {spec.dataset!r}")
    if spec.workers < 1 or spec.workers > 9:
        raise LocalRunError(f"--workers must be within 1-9, got {spec.workers}")
    if spec.threshold is not None and not 0.0 <= spec.threshold <= 1.0:
        raise LocalRunError(f"--threshold must be within [0, 1], got {spec.threshold}")
    if not 0.0 < spec.first_wave <= 1.0:
        raise LocalRunError(f"--first-wave must be within (0, 1], got {spec.first_wave}")
    if spec.out.resolve().is_relative_to(spec.images.resolve()):
        raise LocalRunError(f"--out {spec.out} is inside --images {spec.images}: its files would be uploaded as images")
    model = parse_model(spec.model, spec.images)
    reviewer = parse_reviewer(spec.reviewer, spec.images)
    config = run_config(spec, labels_for(spec, model, reviewer))
    labels = tuple(config.labels)  # --context labels=... wins over --labels and the files' labels
    workteam = (config.workteam_arn or LOCAL_WORKTEAM).rsplit("/", 1)[-1]
    # The report speaks of the deployed values, whichever option set them.
    spec = dataclasses.replace(spec, threshold=config.auto_accept_threshold, workers=config.workers_per_object)
    spec_files = [p for p in (model.file, reviewer.file) if p is not None]
    files = list_images(spec.images, spec_files)
    not_uploaded = [p.name for p in spec_files if p.resolve().is_relative_to(spec.images.resolve())]
    names = ImageNames(files)
    faults = fault_names(spec, files)
    predictor = build_predictor(model, names, labels)
    workforce = build_workforce(reviewer, names, spec)

    with tempfile.TemporaryDirectory(prefix="labelloop-local-") as tmp:
        if assembly is None:
            clock.say(
                f"synthesizing the stack (labels {', '.join(labels)}; model {spec.model}; reviewer {reviewer.kind})"
            )
            assembly = synthesize_stack(spec, labels, Path(tmp) / "cdk.out")
        with LocalCloud.start(
            assembly,
            workforce=workforce,
            predictor=predictor,
            labels=labels,
            model_faults=faults,
            duplicate_gt_events=spec.duplicate_job_events,
            esm_mode="manual",  # the IntakePoller below delivers the upload events
            workteams=[workteam],  # the private workteam the stack's config names
            region=REGION,
        ) as cloud:
            if cloud.deployment.account != ACCOUNT:
                raise LocalRunError(f"the emulation runs in account {cloud.deployment.account}, expected {ACCOUNT}")
            clock.say(f"deployed into the in-process emulation ({cloud.deployment.duration_s:.1f}s)")
            return _run_deployed(spec, cloud, files, names, labels, reviewer, clock, not_uploaded)


def _run_deployed(
    spec: RunSpec,
    cloud: Any,
    files: list[tuple[Path, str]],
    names: ImageNames,
    labels: tuple[str, ...],
    reviewer: ReviewerChoice,
    clock: _Stopwatch,
    not_uploaded: list[str],
) -> RunResult:
    env = _function_env(cloud)
    work_prefix = env.get("WORK_PREFIX", "work/")
    exports_prefix = cloud.outputs.get("ExportsPrefix", "exports/")
    names.attach(cloud.client("s3"), cloud.bucket, cloud.incoming_prefix, work_prefix, spec.dataset)
    intake = IntakePoller.take_over(cloud)
    problems: list[str] = []
    if not intake.mappings:
        problems.append("the deployed stack has no SQS event source mapping: nothing starts batches (intake missing)")
    machine = _workflow_arn(cloud, env)
    if machine is None:
        problems.append("the deployed stack has no workflow state machine: images can be uploaded but not labeled")
    watcher = _Watcher(cloud, spec.dataset, work_prefix, machine, clock)
    uploaded: list[str] = []
    waves = _waves(files, spec.first_wave)
    if not_uploaded:
        clock.say(f"not uploaded (the run's own input files): {', '.join(not_uploaded)}")
    deadline = time.monotonic() + spec.timeout_s
    for number, wave in enumerate(waves, start=1):
        keys = _upload(cloud, spec.dataset, wave, spec.upload_twice)
        uploaded += keys
        label = f"wave {number}/{len(waves)}: " if len(waves) > 1 else ""
        twice = " (each twice)" if spec.upload_twice else ""
        clock.say(
            f"{label}uploaded {len(keys)} image(s){twice} to s3://{cloud.bucket}/{cloud.incoming_prefix}{spec.dataset}/"
        )
        calls = intake.drain()
        clock.say(f"{label}intake delivered the upload events in {calls} batch-starter call(s)")
        if machine is not None and not watcher.wait(deadline):
            problems.append(f"the pipeline did not finish within {spec.timeout_s:.0f}s: {watcher.running()}")
            break
    problems += [f"intake: {failure}" for failure in intake.failures]
    latest = _read_json(cloud, f"{exports_prefix}{spec.dataset}/latest.json")
    dataset_dir: Path | None = None
    document: dict[str, Any] | None = None
    if (spec.out / "dataset").exists():
        shutil.rmtree(spec.out / "dataset")  # never leave an earlier run's dataset looking like this one's
    if latest:
        clock.say(f"export version {latest['version']} is the latest ({latest.get('images')} images)")
        version_prefix = f"{exports_prefix}{spec.dataset}/{latest['version']}/"
        document = _read_json(cloud, f"{version_prefix}export.json")
        dataset_dir = spec.out / "dataset"
        count = _download(cloud, version_prefix, dataset_dir)
        clock.say(f"downloaded the export ({count} files) to {dataset_dir}")
    records = collect_records(cloud, spec.dataset, work_prefix, uploaded, intake, latest, document, watcher)
    report = aggregate(records, spec, labels, reviewer)
    versions = {
        key[len(exports_prefix) + len(spec.dataset) + 1 :].split("/", 1)[0]
        for key in cloud.list_keys(f"{exports_prefix}{spec.dataset}/")
        if key.endswith("/export.json")
    }
    report["export_versions"] = sorted(versions)
    problems += report.pop("_problems")
    if latest is None and (report["auto_accepted"] or report["human_reviewed"]):
        problems.append(f"labeled images but no export was written; what the emulation saw:\n{cloud.diagnostics()}")
    # The pipeline's own per-batch records, next to the run report, for anyone who wants the detail.
    batches_dir = spec.out / "batches"
    if batches_dir.exists():
        shutil.rmtree(batches_dir)
    for entry in report["batches"]:
        for name, field_name in (("report.json", "report"), ("output.manifest", "output_manifest")):
            source = f"{work_prefix}batches/{spec.dataset}/{entry['batch_id']}/{name}"
            try:
                body = cloud.client("s3").get_object(Bucket=cloud.bucket, Key=source)["Body"].read()
            except Exception:
                continue
            target = batches_dir / entry["batch_id"] / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(body)
            entry[field_name] = str(target)
    report["problems"] = problems
    spec.out.mkdir(parents=True, exist_ok=True)
    (spec.out / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return RunResult(report, problems, dataset_dir)


def _function_env(cloud: Any) -> dict[str, str]:
    """Environment shared by the deployed functions (prefixes), read from the batch starter or any."""
    lam = cloud.client("lambda")
    merged: dict[str, str] = {}
    for name in cloud.function_names().values():
        env = lam.get_function_configuration(FunctionName=name).get("Environment", {}).get("Variables", {})
        for key, value in env.items():
            merged.setdefault(key, value)
    return merged


def _workflow_arn(cloud: Any, env: dict[str, str]) -> str | None:
    """The state machine the batch starter starts (its STATE_MACHINE_ARN), else the only one."""
    if env.get("STATE_MACHINE_ARN"):
        return env["STATE_MACHINE_ARN"]
    machines = list(cloud.state_machine_arns().values())
    return machines[0] if len(machines) == 1 else None


def _upload(cloud: Any, dataset: str, files: list[tuple[Path, str]], twice: bool) -> list[str]:
    s3 = cloud.client("s3")
    keys = []
    for _ in range(2 if twice else 1):
        for path, relative in files:
            key = f"{cloud.incoming_prefix}{dataset}/{relative}"
            content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            s3.put_object(Bucket=cloud.bucket, Key=key, Body=path.read_bytes(), ContentType=content_type)
            keys.append(key)
    return sorted(set(keys))


def _read_json(cloud: Any, key: str) -> Any:
    try:
        return cloud.read_json(key)
    except Exception:
        return None


def _read_jsonl(cloud: Any, key: str) -> list[dict[str, Any]]:
    try:
        return list(cloud.read_jsonl(key))
    except Exception:
        return []


def _download(cloud: Any, prefix: str, dest: Path) -> int:
    s3 = cloud.client("s3")
    count = 0
    # S3 has no empty folders: a split with no image still needs its folders for a YOLO loader.
    for folder in ("images/train", "images/val", "labels/train", "labels/val"):
        (dest / folder).mkdir(parents=True, exist_ok=True)
    for key in cloud.list_keys(prefix):
        target = dest / key[len(prefix) :]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(s3.get_object(Bucket=cloud.bucket, Key=key)["Body"].read())
        count += 1
    return count


# ----------------------------------------------------------------------------- progress watch


class _Watcher:
    """Polls the pipeline's own artifacts and prints each stage once per batch as it happens."""

    def __init__(self, cloud: Any, dataset: str, work_prefix: str, machine: str | None, clock: _Stopwatch) -> None:
        self.cloud, self.dataset, self.clock, self.machine = cloud, dataset, clock, machine
        self.batches_prefix = f"{work_prefix}batches/{dataset}/"
        self.said: set[tuple[str, str]] = set()
        self.executions: dict[str, str] = {}

    def _say_once(self, batch: str, stage: str, text: str) -> None:
        if (batch, stage) not in self.said:
            self.said.add((batch, stage))
            self.clock.say(f"batch {batch[:24]}: {text}")

    def _executions(self) -> dict[str, str]:
        sfn = self.cloud.client("stepfunctions")
        found: dict[str, str] = {}
        for page in sfn.get_paginator("list_executions").paginate(stateMachineArn=self.machine):
            for execution in page["executions"]:
                found[execution["executionArn"]] = execution["status"]
        self.executions = found
        return found

    def running(self) -> str:
        states = Counter(self.executions.values())
        return ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items())) or "no executions"

    def _batches(self) -> list[str]:
        keys = self.cloud.list_keys(self.batches_prefix)
        return sorted(
            {k[len(self.batches_prefix) :].split("/", 1)[0] for k in keys if "/" in k[len(self.batches_prefix) :]}
        )

    def poll(self) -> None:
        for batch in self._batches():
            prefix = f"{self.batches_prefix}{batch}/"
            keys = set(self.cloud.list_keys(prefix))
            if f"{prefix}objects.jsonl" in keys:
                count = len(_read_jsonl(self.cloud, f"{prefix}objects.jsonl"))
                self._say_once(batch, "started", f"started with {count} image(s)")
            if f"{prefix}input.manifest" in keys:
                valid = len(_read_jsonl(self.cloud, f"{prefix}input.manifest"))
                rejected = len(_read_jsonl(self.cloud, f"{prefix}rejected.jsonl"))
                self._say_once(batch, "validated", f"validated: {valid} valid, {rejected} rejected")
            shards = [k for k in keys if k.startswith(f"{prefix}shards/")]
            done = [k for k in keys if k.startswith(f"{prefix}prelabeled/")]
            if shards and len(done) >= len(shards):
                self._say_once(batch, "prelabeled", f"pre-labeled ({len(done)} shard(s))")
            if f"{prefix}accepted.manifest" in keys or f"{prefix}review.manifest" in keys:
                accepted = len(_read_jsonl(self.cloud, f"{prefix}accepted.manifest"))
                review = len(_read_jsonl(self.cloud, f"{prefix}review.manifest"))
                self._say_once(batch, "routed", f"routed: {accepted} auto-accepted, {review} to human review")
            if f"{prefix}report.json" in keys:
                report = _read_json(self.cloud, f"{prefix}report.json") or {}
                if report.get("status") == "failed":
                    self._say_once(batch, "failed", f"FAILED: {report.get('error')}: {str(report.get('cause'))[:200]}")
                elif report.get("status") == "labeled":
                    counts = report.get("counts", {})
                    self._say_once(
                        batch,
                        "merged",
                        f"merged: {counts.get('accepted')} accepted + {counts.get('reviewed')} reviewed"
                        f" (jobs: {', '.join(report.get('jobs') or []) or 'none'})",
                    )
                if isinstance(report.get("calibration"), dict):
                    nxt = report["calibration"].get("next_threshold") or {}
                    self._say_once(
                        batch,
                        "calibrated",
                        f"calibrated: theta {nxt.get('theta')} (bound {nxt.get('lower_bound')}, "
                        f"{nxt.get('pairs_used')} pairs, {nxt.get('reason')})",
                    )
        for job in self.cloud.labeling_jobs().values():
            if job.status in ("Completed", "Failed", "Stopped"):
                detail = (
                    f": {job.failure_reason}"
                    if job.failure_reason
                    else f" ({job.counters.get('HumanLabeled')} labeled)"
                )
                if ("job", job.name) not in self.said:
                    self.said.add(("job", job.name))
                    self.clock.say(f"labeling job {job.name} {job.status}{detail}")

    def wait(self, deadline: float) -> bool:
        """Until every execution of the workflow has ended; False on timeout."""
        while True:
            self.poll()
            executions = self._executions()
            if executions and all(s in TERMINAL_EXECUTION for s in executions.values()):
                self.poll()
                return True
            if not executions and not self._batches():
                return True  # nothing was started (e.g. every event failed intake)
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)


# ------------------------------------------------------------------------------------ report


def _relative(key: str, incoming: str) -> str:
    return key[len(incoming) :] if key.startswith(incoming) else key


@dataclass
class BatchRecords:
    """What the pipeline wrote for one batch (read back from the bucket)."""

    batch_id: str
    objects: list[str]
    report: dict[str, Any] | None
    rejected: list[dict[str, Any]]
    output_lines: list[dict[str, Any]]


@dataclass
class RunRecords:
    """Everything the run report is computed from; `collect_records` reads it from the emulation."""

    incoming: str
    uploaded: list[str]
    batches: list[BatchRecords]
    dead_letter_keys: list[str] = field(default_factory=list)
    jobs: list[dict[str, Any]] = field(default_factory=list)
    latest: dict[str, Any] | None = None
    export_document: dict[str, Any] | None = None
    threshold_doc: dict[str, Any] | None = None
    intake_calls: int = 0
    execution_states: str = ""


def collect_records(
    cloud: Any,
    dataset: str,
    work_prefix: str,
    uploaded: list[str],
    intake: IntakePoller,
    latest: dict[str, Any] | None,
    document: dict[str, Any] | None,
    watcher: _Watcher,
) -> RunRecords:
    """Read the pipeline's per-batch files, the intake dead-letter queue and the labeling jobs."""
    batches_prefix = f"{work_prefix}batches/{dataset}/"
    batches = []
    for batch in watcher._batches():
        prefix = f"{batches_prefix}{batch}/"
        objects = [o["key"] for o in _read_jsonl(cloud, f"{prefix}objects.jsonl") if isinstance(o, dict) and "key" in o]
        report = _read_json(cloud, f"{prefix}report.json")
        batches.append(
            BatchRecords(
                batch_id=batch,
                objects=objects,
                report=report if isinstance(report, dict) else None,
                rejected=_read_jsonl(cloud, f"{prefix}rejected.jsonl"),
                output_lines=_read_jsonl(cloud, f"{prefix}output.manifest"),
            )
        )
    # Chronological: the order batches ran in (waves), not the order of their hash ids.
    batches.sort(
        key=lambda b: (str(((b.report or {}).get("timings") or {}).get("execution_started") or "~"), b.batch_id)
    )
    dead = [key for message in intake.dead_letters() for key in _keys_in_event(message.get("Body", ""))]
    jobs = []
    for job in cloud.labeling_jobs().values():
        entry: dict[str, Any] = {"name": job.name, "status": job.status, "counters": dict(job.counters)}
        if job.failure_reason:
            entry["failure_reason"] = job.failure_reason
        jobs.append(entry)
    return RunRecords(
        incoming=f"{cloud.incoming_prefix}{dataset}/",
        uploaded=uploaded,
        batches=batches,
        dead_letter_keys=dead,
        jobs=jobs,
        latest=latest,
        export_document=document,
        threshold_doc=_read_json(cloud, f"{work_prefix}calibration/{dataset}/threshold.json"),
        intake_calls=intake.invocations,
        execution_states=watcher.running(),
    )


def aggregate(records: RunRecords, spec: RunSpec, labels: tuple[str, ...], reviewer: ReviewerChoice) -> dict[str, Any]:
    """The run report: the pipeline's own records summed up, then the invariants CHECKED.

    ``images_received`` and the accepted/reviewed counts come from the batch reports' counts, the
    rejected list from ``rejected.jsonl``, the reports' unlabeled lists, failed batches' objects and
    the intake dead-letter queue, ``exported_images`` from ``export.json``: independent sources, so
    a lost or doubly counted image breaks an invariant. Problems are returned under ``_problems``.
    """
    incoming = records.incoming
    problems: list[str] = []
    rejected: list[dict[str, Any]] = []
    outcome: dict[str, str] = {}
    batches: list[dict[str, Any]] = []
    jobs: dict[str, dict[str, Any]] = {}
    model_errors: list[dict[str, Any]] = []
    received = accepted = reviewed = audited = 0
    thresholds: list[dict[str, Any]] = []
    seen_in_batches: Counter[str] = Counter()

    def reject(key: str, reason: Any, batch: str | None) -> None:
        row = {"image": _relative(key, incoming), "reason": str(reason) if reason else "no reason recorded"}
        if batch:
            row["batch"] = batch
        rejected.append(row)
        outcome[key] = "rejected"

    for records_of in records.batches:
        batch, objects, batch_report = records_of.batch_id, records_of.objects, records_of.report
        seen_in_batches.update(objects)
        entry: dict[str, Any] = {"batch_id": batch, "objects": len(objects)}
        batches.append(entry)
        if batch_report is None:
            entry["status"] = "unfinished"
            problems.append(f"batch {batch} has no report.json (executions: {records.execution_states})")
            received += len(objects)
            for key in objects:
                reject(key, "its batch did not finish", batch)
            continue
        entry["status"] = batch_report.get("status")
        entry["jobs"] = batch_report.get("jobs", [])
        for job in batch_report.get("jobs") or []:
            jobs.setdefault(job, {"name": job, "batch_id": batch})
        for row in records_of.rejected:
            reject(str(row.get("key")), row.get("reason"), batch)
        if batch_report.get("status") != "labeled":
            # A failed batch: its valid objects were not labeled; each is listed with the cause.
            reason = _failure_reason(batch_report)
            entry["error"] = reason
            received += len(objects)
            rejected_keys = {str(r.get("key")) for r in records_of.rejected}
            for key in objects:
                if key not in rejected_keys:
                    reject(key, reason, batch)
            continue
        counts = batch_report.get("counts", {})
        entry["counts"] = counts
        received += int(counts.get("received", 0))
        accepted += int(counts.get("accepted", 0))
        reviewed += int(counts.get("reviewed", 0))
        audited += int(counts.get("audited", 0))
        if len(records_of.rejected) != int(counts.get("rejected", 0)):
            problems.append(
                f"batch {batch}: report says {counts.get('rejected')} rejected, "
                f"rejected.jsonl has {len(records_of.rejected)}"
            )
        for row in batch_report.get("unlabeled", []):
            reject(str(row.get("key")), row.get("reason"), batch)
        if batch_report.get("lists_truncated"):
            problems.append(f"batch {batch}: the report's unlabeled list is truncated; see its report.json")
        entry["threshold"] = batch_report.get("threshold") or {}
        thresholds.append({"batch_id": batch, **entry["threshold"]})
        for line in records_of.output_lines:
            meta = line.get("labelloop-meta") or {}
            key = str(meta.get("key"))
            outcome[key] = "auto_accepted" if meta.get("label_attribute") == AUTO_ATTRIBUTE else "human_reviewed"
            error = (line.get(f"{PRELABEL_ATTRIBUTE}-metadata") or {}).get("error")
            if error:
                model_errors.append({"image": _relative(key, incoming), "error": error, "batch": batch})
        if isinstance(batch_report.get("calibration"), dict):
            entry["calibration"] = batch_report["calibration"].get("next_threshold")

    # Upload events that never made it into a batch sit in the intake dead-letter queue.
    for key in records.dead_letter_keys:
        if key in seen_in_batches:
            continue
        received += 1
        seen_in_batches[key] += 1
        reject(key, "intake failed; the upload event is in the intake dead-letter queue", None)
    lost = sorted(set(records.uploaded) - set(seen_in_batches))
    if lost:
        problems.append(f"{len(lost)} uploaded image(s) reached no batch and no dead-letter queue: {lost[:10]}")
    twice = sorted(k for k, n in seen_in_batches.items() if n > 1)
    if twice:
        problems.append(f"{len(twice)} image(s) were labeled in more than one batch: {twice[:10]}")
    for job in records.jobs:
        jobs.setdefault(job["name"], {"name": job["name"]}).update(job)

    document = records.export_document
    exported = int(document["counts"]["images"]) if document else 0
    threshold_doc = records.threshold_doc
    report: dict[str, Any] = {
        "dataset": spec.dataset,
        "labels": list(labels),
        "model": spec.model,
        "reviewer": spec.reviewer if reviewer.kind != "fail" else "fail",
        "images_uploaded": len(records.uploaded),
        "images_received": received,
        "rejected": sorted(rejected, key=lambda r: str(r["image"])),
        "auto_accepted": accepted,
        "human_reviewed": reviewed,
        "audited": audited,
        "exported_images": exported,
        "threshold": {
            "fixed": spec.threshold,
            "target_quality": (threshold_doc or {}).get("target", spec.target_quality),
            "final": threshold_doc,
            "by_batch": thresholds,
        },
        "labeling_jobs": sorted(jobs.values(), key=lambda j: j["name"]),
        "export_version": records.latest.get("version") if records.latest else None,
        "export": _export_summary(document),
        "model_errors": model_errors,
        "batches": batches,
        "intake": {"batch_starter_calls": records.intake_calls, "dead_letters": len(records.dead_letter_keys)},
        "images": {_relative(k, incoming): v for k, v in sorted(outcome.items())},
    }
    accounted = len(rejected) + accepted + reviewed
    report["invariants"] = {
        "received_equals_rejected_plus_accepted_plus_reviewed": received == accounted,
        "exported_equals_accepted_plus_reviewed": exported == accepted + reviewed,
    }
    if received != accounted:
        problems.append(
            f"INVARIANT BROKEN: images_received {received} != rejected {len(rejected)} + auto_accepted {accepted}"
            f" + human_reviewed {reviewed} (= {accounted})"
        )
    if exported != accepted + reviewed:
        problems.append(
            f"INVARIANT BROKEN: exported_images {exported} != auto_accepted {accepted} + human_reviewed {reviewed}"
            + ("" if document else " (no export was written)")
        )
    manifest_counts = Counter(outcome.values())
    if manifest_counts["auto_accepted"] != accepted or manifest_counts["human_reviewed"] != reviewed:
        problems.append(f"the output manifests ({dict(manifest_counts)}) disagree with the batch reports")
    report["_problems"] = problems
    return report


def _failure_reason(report: dict[str, Any]) -> str:
    """One line saying why a batch failed: the workflow's error and cause, and the labeling job's reason."""
    cause = report.get("cause")
    if isinstance(cause, dict):
        cause = cause.get("errorMessage") or cause.get("message") or json.dumps(cause)
    parts = [str(report.get("error") or "unknown error")]
    if cause:
        parts.append(str(cause)[:300])
    raw_review = report.get("review")
    review: dict[str, Any] = raw_review if isinstance(raw_review, dict) else {}
    if review.get("failure_reason"):
        parts.append(
            f"labeling job {review.get('job_name')} {review.get('status', 'failed')}: {review['failure_reason']}"
        )
    return "batch failed: " + ": ".join(parts)


def _keys_in_event(body: str) -> list[str]:
    """Object keys named by an S3 EventBridge event (URL-decoded like the batch starter does)."""
    try:
        event = json.loads(body)
    except json.JSONDecodeError:
        return []
    key = ((event.get("detail") or {}).get("object") or {}).get("key") if isinstance(event, dict) else None
    return [unquote_plus(key)] if isinstance(key, str) else []


def _export_summary(document: dict[str, Any] | None) -> dict[str, Any] | None:
    if not document:
        return None
    keep = ("version", "counts", "class_histogram", "background_ratio", "warnings", "missing_images", "dropped_boxes")
    return {k: document[k] for k in keep if k in document}


# ------------------------------------------------------------------------- summary and checks


def _num(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def summary_lines(result: RunResult) -> list[str]:
    """A short human summary of a run."""
    r = result.report
    final = (r.get("threshold") or {}).get("final") or {}
    reasons = Counter(str(x["reason"]).split(":")[0] for x in r["rejected"])
    lines = [
        f"images uploaded {r['images_uploaded']}, received {r['images_received']}: "
        f"{r['auto_accepted']} auto-accepted, {r['human_reviewed']} human-reviewed "
        f"({r['audited']} audit), {len(r['rejected'])} rejected",
    ]
    for reason, count in reasons.most_common(6):
        lines.append(f"  rejected {count} x {reason}")
    if r["model_errors"]:
        lines.append(f"model errors on {len(r['model_errors'])} image(s) (sent to humans without pre-labels)")
    if r["threshold"]["fixed"] is not None:
        lines.append(f"auto-accept threshold fixed at {r['threshold']['fixed']}")
    elif final:
        lines.append(
            f"calibrated theta {_num(final.get('theta'))} (target mIoU {final.get('target')},"
            f" {final.get('confidence_level')} lower bound {_num(final.get('lower_bound'))},"
            f" {final.get('pairs_used')} pairs, {final.get('reason')})"
        )
    jobs = r["labeling_jobs"]
    if jobs:
        states = Counter(j.get("status", "?") for j in jobs)
        lines.append("labeling jobs: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items())))
        for job in jobs:
            if job.get("failure_reason"):
                lines.append(f"  {job['name']}: {job['failure_reason'][:200]}")
    lines.append(
        f"exported {r['exported_images']} image(s) as version {r['export_version']}"
        + (f" -> {result.dataset_dir}" if result.dataset_dir else "")
    )
    inv = r["invariants"]
    lines.append(
        "accounting: received == rejected + accepted + reviewed: "
        f"{'OK' if inv['received_equals_rejected_plus_accepted_plus_reviewed'] else 'BROKEN'}; "
        f"exported == accepted + reviewed: {'OK' if inv['exported_equals_accepted_plus_reviewed'] else 'BROKEN'}"
    )
    return lines
