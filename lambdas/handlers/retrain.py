"""The retrain workflow's steps: plan a training from an export, then advance it one look at a time.

Actions (the retrain state machine calls them; docs/retrain.md):

- ``{"action": "plan", "detail": <Export Published detail>}``: reads the export's ``training.json``
  and the registry; when `labelloop_core.retrain.plan_training` says train, registers the next
  version as ``training`` (conditional write; an export trains at most one version) and returns
  ``{"train": true, "version"}``, else ``{"train": false, "reason"}``.
- ``{"action": "advance", "version"}``: one step of that version's phases (Rekognition: datasets →
  training → hosting → evaluating; SageMaker: training → hosting → evaluating, `handlers.retrain_sagemaker`),
  kept in its registry entry's ``job``; returns ``{"done", "phase", "status"}``.
  The state machine waits between calls. Failures record the service's message and end ``failed``;
  the evaluation ends ``active`` (promoted, its calibration seeded with its evaluation pairs) or
  ``rejected`` (its hosting stopped; SageMaker: the endpoint back on its previous config).
  Both announce a ``Model Version State Change`` event.
- ``{"action": "fail", "version", "error", "cause"}``: the state machine's catch: the version is
  recorded ``failed`` with the cause, so the next export can train again.

The incumbent predicts the evaluation images again in the same step as the candidate: its stored
pre-labels on those images may come from an older version or another ``MinConfidence``.
"""

from __future__ import annotations

import functools
import json
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger

from adapters import env, registry
from adapters.announce import put_event
from adapters.aws import client
from adapters.hosting import HostingSettings, HostingStore, RekognitionHosting
from adapters.lifecycle import Lifecycle, StartFailed
from adapters.models import ImageInput, ModelSettings, Prelabeler, backend_for, model_client
from adapters.rekognition_versions import RekognitionVersions
from adapters.s3 import get_json, iter_lines, parse_uri, put_json, put_jsonl
from handlers.retrain_sagemaker import SageMakerRetrainSettings, SageMakerSteps
from handlers.route import state_key
from labelloop_core import limits
from labelloop_core import registry as versions
from labelloop_core.boxes import Box
from labelloop_core.calibration import calibration_state
from labelloop_core.contract import (
    MODEL_OUTPUT_PREFIX,
    MODEL_VERSION_CHANGE,
    RETRAIN_EVENT_SOURCE,
    TRAINING_ATTRIBUTE,
    TRAINING_EVALUATION_MANIFEST,
    TRAINING_FILE,
    TRAINING_TRAIN_MANIFEST,
    Env,
)
from labelloop_core.eprocess import FoldPair
from labelloop_core.evaluation import EvaluationImage, calibration_pairs, evaluate
from labelloop_core.manifest import ManifestError, parse_bbox_label
from labelloop_core.retrain import DATASET_TYPES, dataset_action, plan_training, version_name

logger = Logger()

#: The assisting-model kind each retrain backend trains versions of, and its first phase.
BACKENDS = {"rekognition": ("rekognition", "datasets"), "sagemaker": ("sagemaker", "training")}
#: Share of evaluation images a model may fail to predict before the evaluation cannot decide.
MAX_UNPREDICTED_SHARE = 0.1


class RetrainEventError(ValueError):
    """The event breaks the retrain workflow's contract."""


@dataclass(frozen=True)
class RetrainSettings:
    """The retrain loop's settings (from env), beside the model settings every batch uses."""

    model: ModelSettings
    project_name: str
    min_new_labels: int
    min_per_class: int
    inference_units: int
    min_evaluation_images: int
    max_hours: int
    backend: str = "rekognition"
    sagemaker: SageMakerRetrainSettings | None = None
    hosting: HostingSettings = field(default_factory=lambda: HostingSettings(managed=False))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RetrainSettings:
        """Read and validate the environment once; errors name the variable."""
        e = environ
        model = ModelSettings.from_env(e)
        backend = env.choice(Env.RETRAIN_BACKEND, "rekognition", tuple(BACKENDS), environ=e)
        return cls(
            model=model,
            project_name=env.text(Env.RETRAIN_PROJECT_NAME, environ=e),
            min_new_labels=env.bounded(Env.RETRAIN_MIN_NEW_LABELS, limits.RETRAIN_MIN_NEW_LABELS, environ=e),
            min_per_class=env.bounded(Env.RETRAIN_MIN_PER_CLASS, limits.RETRAIN_MIN_PER_CLASS, environ=e),
            inference_units=env.bounded(Env.RETRAIN_INFERENCE_UNITS, limits.RETRAIN_INFERENCE_UNITS, environ=e),
            min_evaluation_images=env.bounded(
                Env.RETRAIN_MIN_EVALUATION_IMAGES, limits.MIN_EVALUATION_IMAGES, environ=e
            ),
            max_hours=env.bounded(Env.RETRAIN_MAX_HOURS, limits.RETRAIN_MAX_HOURS, environ=e),
            backend=backend,
            sagemaker=SageMakerRetrainSettings.from_env(e) if backend == "sagemaker" else None,
            hosting=HostingSettings.from_env(e),
        )


@functools.cache
def settings() -> RetrainSettings:
    """Environment, validated once per container."""
    return RetrainSettings.from_env()


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _field(event: Mapping[str, Any], name: str) -> str:
    value = event.get(name)
    if not isinstance(value, str) or not value:
        raise RetrainEventError(f"event field {name!r} must be a non-empty string, got {value!r}")
    return value


@dataclass
class Retrainer:
    """The steps, with their clients injectable for tests."""

    cfg: RetrainSettings
    s3: Any
    rekognition: Any
    events: Any
    sleep: Callable[[float], None] = time.sleep
    time_left: Callable[[], float] | None = None
    sagemaker: Any = None  # the SageMaker control-plane client (backend sagemaker)
    runtime: Any = None  # sagemaker-runtime, for SageMaker-hosted versions' predictions

    def now(self) -> str:
        """The time the registry records."""
        return _now()

    @property
    def bucket(self) -> str:
        return self.cfg.model.bucket

    @property
    def steps(self) -> SageMakerSteps:
        """The SageMaker backend's phases."""
        if self.cfg.sagemaker is None:
            raise RetrainEventError("this version is trained by SageMaker but RETRAIN_BACKEND is not sagemaker")
        return SageMakerSteps(self, self.cfg.sagemaker)

    @property
    def project(self) -> RekognitionVersions:
        return RekognitionVersions(self.rekognition, self.cfg.project_name)

    @property
    def lifecycle(self) -> Lifecycle:
        """The hosting life cycle: the incumbent is held while it predicts; candidates' hosting is recorded."""
        store = HostingStore(self.s3, self.bucket)
        return Lifecycle(store, RekognitionHosting(self.rekognition), self.cfg.hosting)

    def _hold_incumbent(self, version: str, job: dict[str, Any]) -> str:
        """Hold (and start if stopped) the active version the candidate is compared with: its status."""
        if not self.cfg.hosting.managed:
            return "RUNNING"
        if "incumbent" not in job:
            active = versions.active_version(self._registry())
            identity = active["identity"]
            arn = identity.get("model_arn") if identity.get("kind") == "rekognition" else None
            job["incumbent"] = [str(active["version"]), arn]
        name, arn = job["incumbent"]
        if not arn:
            return "RUNNING"
        return self.lifecycle.ensure(name, arn, f"retrain:{version}")

    def _release_incumbent(self, version: str, job: Mapping[str, Any]) -> None:
        incumbent = job.get("incumbent")
        if self.cfg.hosting.managed and incumbent and incumbent[1]:
            self.lifecycle.release(incumbent[0], incumbent[1], f"retrain:{version}")

    def _registry(self) -> dict[str, Any]:
        document, _ = registry.read(self.s3, self.bucket)
        return document or versions.initial_registry(self.cfg.model.identity(), _now())

    def _update(self, change: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
        initial = versions.initial_registry(self.cfg.model.identity(), _now())
        return registry.update(self.s3, self.bucket, lambda current: change(current or initial))

    def _entry(self, version: str) -> dict[str, Any]:
        for entry in self._registry()["versions"]:
            if entry["version"] == version:
                return dict(entry)
        raise RetrainEventError(f"no version {version!r} in the model registry")

    # ------------------------------------------------------------------ plan

    def plan(self, detail: Mapping[str, Any]) -> dict[str, Any]:
        """Register a training for this export when the plan says so."""
        dataset, export_version, uri = _field(detail, "dataset"), _field(detail, "version"), _field(detail, "uri")
        bucket, prefix = parse_uri(uri if uri.endswith("/") else uri + "/")
        if bucket != self.bucket:
            raise RetrainEventError(f"export {uri} is not in the data bucket {self.bucket}")
        kind, first_phase = BACKENDS[self.cfg.backend]
        if self.cfg.model.kind != kind:
            return {"train": False, "reason": f"the assisting model is {self.cfg.model.kind!r}, not {kind}"}
        report = get_json(bucket, prefix + TRAINING_FILE, self.s3)
        self._expire_stale()
        decision = plan_training(
            self._registry(),
            report,
            dataset=dataset,
            export_version=export_version,
            export_uri=f"s3://{bucket}/{prefix}",
            min_new_labels=self.cfg.min_new_labels,
            min_per_class=self.cfg.min_per_class,
            min_evaluation_images=self.cfg.min_evaluation_images,
        )
        if not decision.train:
            logger.info("no training", extra={"reason": decision.reason, "export": export_version})
            return {"train": False, "reason": decision.reason}
        registered: dict[str, str] = {}

        def add(document: dict[str, Any]) -> dict[str, Any]:
            updated, name = versions.add_candidate(document, {"kind": kind}, decision.trained_on, _now())
            registered["version"] = name
            job = {"phase": first_phase, "backend": self.cfg.backend, "started_at": time.time(), "looks": 0}
            return versions.update_fields(updated, name, job=job, plan_reason=decision.reason)

        try:
            self._update(add)
        except versions.RegistryError as exc:  # lost to a concurrent plan of another export
            return {"train": False, "reason": str(exc)}
        logger.info("training registered", extra={"version": registered["version"], "reason": decision.reason})
        return {"train": True, "version": registered["version"], "reason": decision.reason}

    def _expire_stale(self) -> None:
        """A training older than the workflow's limit can no longer finish (its execution is gone): fail it."""
        busy = versions.training_in_flight(self._registry())
        if busy is None:
            return
        started = float((busy.get("job") or {}).get("started_at") or 0)
        if time.time() - started <= self.cfg.max_hours * 3600 + 600:
            return
        self._finish(busy["version"], versions.FAILED, f"no progress within {self.cfg.max_hours} h: expired")

    # ------------------------------------------------------------------ advance

    def advance(self, version: str) -> dict[str, Any]:
        """One step of the version's training; see the module docstring."""
        entry = self._entry(version)
        job = dict(entry.get("job") or {})
        if entry["status"] not in (versions.TRAINING, versions.EVALUATING):
            return {"done": True, "phase": "done", "status": entry["status"]}
        if time.time() - float(job.get("started_at") or time.time()) > self.cfg.max_hours * 3600:
            return self._finish(version, versions.FAILED, f"not finished within {self.cfg.max_hours} h")
        job["looks"] = int(job.get("looks", 0)) + 1
        step = {"datasets": self._datasets, "training": self._training, "hosting": self._hosting}
        if job.get("backend") == "sagemaker":
            step = {"training": self.steps.training, "hosting": self.steps.hosting}
        phase = str(job.get("phase"))
        if phase == "evaluating":
            return self._evaluating(version, entry, job)
        if phase not in step:
            raise RetrainEventError(f"version {version} has an unknown phase {phase!r}")
        return step[phase](version, entry, job)

    def _save(self, version: str, job: dict[str, Any], **fields: Any) -> None:
        self._update(lambda d: versions.update_fields(d, version, job=job, **fields))

    def _wait(self, version: str, job: dict[str, Any], note: str, **fields: Any) -> dict[str, Any]:
        job["note"] = note
        self._save(version, job, **fields)
        return {"done": False, "phase": job["phase"], "status": note}

    def _datasets(self, version: str, entry: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
        project = self.project.project()
        job["project_arn"] = project["ProjectArn"]
        ours: dict[str, str] = dict(job.get("datasets") or {})
        bucket, prefix = parse_uri(entry["trained_on"]["export_uri"])
        manifests = {"TRAIN": prefix + TRAINING_TRAIN_MANIFEST, "TEST": prefix + TRAINING_EVALUATION_MANIFEST}
        ready = 0
        notes = []
        for kind in DATASET_TYPES:
            action = dataset_action(kind, project.get("Datasets", []), ours.get(kind))
            if action.action == "failed":
                return self._finish(version, versions.FAILED, action.reason)
            if action.action == "ready":
                ready += 1
            elif action.action == "delete":
                assert action.arn is not None
                self.project.delete_dataset(action.arn)
                notes.append(action.reason + ": deleting it")
            elif action.action == "create":
                ours[kind] = self.project.create_dataset(project["ProjectArn"], kind, bucket, manifests[kind])
                notes.append(f"{kind} dataset created")
            else:
                notes.append(action.reason)
        job["datasets"] = ours
        if ready < len(DATASET_TYPES):
            return self._wait(version, job, "; ".join(notes))
        name = version_name(self.cfg.project_name, version, entry["trained_on"]["export_version"])
        out_prefix = f"{MODEL_OUTPUT_PREFIX}{version}/"
        arn = self.project.create_version(
            project["ProjectArn"], name, self.bucket, out_prefix, {"labelloop:version": version}
        )
        job.update(phase="training", version_name=name, output=f"s3://{self.bucket}/{out_prefix}", note="training")
        identity = {"kind": "rekognition", "model_arn": arn}
        self._update(lambda d: versions.set_identity(versions.update_fields(d, version, job=job), version, identity))
        return {"done": False, "phase": "training", "status": "TRAINING_IN_PROGRESS"}

    def _description(self, job: dict[str, Any]) -> dict[str, Any]:
        return self.project.describe_version(job["project_arn"], job["version_name"])

    def _training(self, version: str, entry: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
        described = self._description(job)
        status = str(described["Status"])
        if status == "TRAINING_IN_PROGRESS":
            return self._wait(version, job, status)
        if status == "TRAINING_FAILED":
            return self._finish(version, versions.FAILED, f"TRAINING_FAILED: {described.get('StatusMessage', '')}")
        seconds = described.get("BillableTrainingTimeInSeconds")
        cost = {"billable_training_seconds": seconds, "measured": "billable seconds (Rekognition's count)"}
        rekognition_f1 = (described.get("EvaluationResult") or {}).get("F1Score")
        units = self.cfg.inference_units
        self.project.start(described["ProjectVersionArn"], units)
        if self.cfg.hosting.managed:
            self.lifecycle.note_started(version, described["ProjectVersionArn"], units)
        job.update(phase="hosting", version_arn=described["ProjectVersionArn"], rekognition_f1=rekognition_f1)

        def evaluating(document: dict[str, Any]) -> dict[str, Any]:
            moved = versions.set_status(
                document, version, versions.EVALUATING, _now(), f"{status}; starting it", job=job
            )
            return versions.update_fields(moved, version, training_cost=cost)

        self._update(evaluating)
        return {"done": False, "phase": "hosting", "status": "STARTING"}

    def _hosting(self, version: str, entry: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
        described = self._description(job)
        status = str(described["Status"])
        if status == "RUNNING":
            try:
                incumbent = self._hold_incumbent(version, job)
            except StartFailed as exc:
                self._stop_candidate(version, job)
                return self._finish(version, versions.FAILED, f"the incumbent could not be started: {exc}")
            if incumbent != "RUNNING":
                return self._wait(version, job, f"RUNNING; the incumbent is {incumbent}")
            job.update(phase="evaluating", cursor=0)
            return self._wait(version, job, "RUNNING: evaluating")
        if status in ("FAILED", "STOPPED"):
            return self._finish(
                version, versions.FAILED, f"could not start: {status}: {described.get('StatusMessage', '')}"
            )
        return self._wait(version, job, status)

    # ------------------------------------------------------------------ evaluation

    def _evaluation_lines(self, entry: dict[str, Any]) -> list[dict[str, Any]]:
        bucket, prefix = parse_uri(entry["trained_on"]["export_uri"])
        return [json.loads(row) for row in iter_lines(bucket, prefix + TRAINING_EVALUATION_MANIFEST, self.s3) if row]

    def _predictions_key(self, version: str, cursor: int) -> str:
        return f"{MODEL_OUTPUT_PREFIX}{version}/evaluation/{cursor:07d}.jsonl"

    def _model_client(self, identity: Mapping[str, Any]) -> Any:
        return self.runtime if identity.get("kind") == "sagemaker" else self.rekognition

    def _labelers(self, entry: dict[str, Any]) -> tuple[Prelabeler, Prelabeler | None]:
        model = self.cfg.model
        identity = entry["identity"]
        candidate = backend_for(model.pinned(str(entry["version"]), identity), self._model_client(identity))
        assert candidate is not None  # a trained version always has a model
        active = versions.active_version(self._registry())
        known = active["identity"]
        incumbent = backend_for(model.pinned(str(active["version"]), known), self._model_client(known))

        def labeler(backend: Any) -> Prelabeler:
            return Prelabeler(backend, time_left=self.time_left, reserve=60.0, sleep=self.sleep, rng=random.Random(0))

        return labeler(candidate), (labeler(incumbent) if incumbent is not None else None)

    def _evaluating(self, version: str, entry: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
        lines = self._evaluation_lines(entry)
        cursor = int(job.get("cursor", 0))
        chunk = lines[cursor : cursor + limits.RETRAIN_EVALUATION_CHUNK]
        if job.get("incumbent") and job["incumbent"][1]:
            self.lifecycle.renew(job["incumbent"][0], job["incumbent"][1], f"retrain:{version}")
        candidate, incumbent = self._labelers(entry)
        rows = []
        for line in chunk:
            rows.append(self._predict(line, candidate, incumbent))
        put_jsonl(self.bucket, self._predictions_key(version, cursor), rows, self.s3)
        cursor += len(chunk)
        if cursor < len(lines):
            job["cursor"] = cursor
            return self._wait(version, job, f"evaluated {cursor} of {len(lines)} images")
        return self._decide(version, entry, job, len(lines))

    def _predict(self, line: dict[str, Any], candidate: Prelabeler, incumbent: Prelabeler | None) -> dict[str, Any]:
        try:
            image = parse_bbox_label(line, TRAINING_ATTRIBUTE)
        except ManifestError as exc:
            return {"key": str(line.get("source-ref")), "error": f"unreadable evaluation line: {exc}"}
        bucket, key = parse_uri(image.source_ref)
        row: dict[str, Any] = {"key": image.source_ref, "truth": [_box_dict(b) for b in image.boxes]}
        for name, labeler in (("candidate", candidate), ("incumbent", incumbent)):
            if labeler is None:
                row[name] = []
                continue
            result = labeler.predict(ImageInput(bucket, key, image.width, image.height, s3=self.s3))
            if result.error is not None:
                row["error"] = f"{name}: {result.error}"
            row[name] = [_box_dict(b) for b in (result.detections.boxes if result.detections else ())]
        return row

    def _read_predictions(self, version: str, total: int) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for cursor in range(0, total, limits.RETRAIN_EVALUATION_CHUNK):
            key = self._predictions_key(version, cursor)
            rows += [json.loads(r) for r in iter_lines(self.bucket, key, self.s3) if r]
        return rows

    def _decide(self, version: str, entry: dict[str, Any], job: dict[str, Any], total: int) -> dict[str, Any]:
        rows = self._read_predictions(version, total)
        failed = [r for r in rows if r.get("error")]
        if total and len(failed) > MAX_UNPREDICTED_SHARE * total:
            self._stop_candidate(version, job)
            reason = f"{len(failed)} of {total} evaluation images could not be predicted: {failed[0]['error']}"
            return self._finish(version, versions.FAILED, reason)
        images = [
            EvaluationImage(r["key"], _boxes(r["truth"]), _boxes(r["incumbent"]), _boxes(r["candidate"]))
            for r in rows
            if not r.get("error")
        ]
        result = evaluate(images, self.cfg.model.confidence_level, self.cfg.min_evaluation_images)
        figures = {
            "images": result.images,
            "unpredicted": len(failed),
            "candidate_quality": round(result.candidate_quality, 4),
            "incumbent_quality": round(result.incumbent_quality, 4),
            "f1": round(result.f1, 4),
            "map50": None if result.map50 is None else round(result.map50, 4),
            "incumbent_f1": round(result.incumbent_f1, 4),
            "incumbent_map50": None if result.incumbent_map50 is None else round(result.incumbent_map50, 4),
            "mean_difference": round(result.mean_difference, 4),
            "e_value": round(result.e_value, 4),
            "confidence_level": result.confidence_level,
            "rekognition_f1": job.get("rekognition_f1"),
            "promoted": result.promoted,
            "reason": result.reason,
        }
        job["phase"] = "done"
        if result.promoted:
            if job.get("backend") == "sagemaker":
                self.steps.promote(version, entry, job)
            seeded = self._seed_calibration(entry, images, version)
            figures["calibration_pairs"] = seeded
            return self._finish(version, versions.ACTIVE, result.reason, evaluation=figures, job=job)
        self._stop_candidate(version, job)
        return self._finish(version, versions.REJECTED, result.reason, evaluation=figures, job=job)

    def _seed_calibration(self, entry: dict[str, Any], images: list[EvaluationImage], version: str) -> int:
        """The new version's certificate starts from its evaluation pairs (images it never trained on)."""
        model = self.cfg.model.pinned(version, entry["identity"])
        pairs = [FoldPair(p.confidence, p.quality, 1.0, p.key or "") for p in calibration_pairs(images)]
        state = calibration_state(model.target_quality, model.confidence_level, model.min_pairs, model.model_id)
        state.fold(pairs, floor=1.0, batch_id=f"evaluation-{version}")
        dataset = entry["trained_on"]["dataset"]
        put_json(self.bucket, state_key(dataset, model.model_id), state.to_dict(), self.s3)
        return len(pairs)

    def _stop_candidate(self, version: str, job: dict[str, Any]) -> None:
        if job.get("backend") == "sagemaker":
            self.steps.withdraw(job)
            return
        arn = job.get("version_arn")
        if arn:
            try:
                self.project.stop(arn)
                if self.cfg.hosting.managed:
                    self.lifecycle.note_stopped(version, arn)
            except Exception as exc:  # the decision stands; the stop is reported for the operator
                logger.error("could not stop the candidate", extra={"arn": arn, "error": str(exc)})
                job["stop_error"] = str(exc)

    # ------------------------------------------------------------------ endings

    def _finish(self, version: str, status: str, reason: str, **fields: Any) -> dict[str, Any]:
        """Record the outcome in the registry and announce it."""

        def change(document: dict[str, Any]) -> dict[str, Any]:
            entry = next(e for e in document["versions"] if e["version"] == version)
            if entry["status"] == status:
                return document  # a retried call: recorded already
            return versions.set_status(document, version, status, _now(), reason, **fields)

        document = self._update(change)
        entry = next(e for e in document["versions"] if e["version"] == version)
        self._release_incumbent(version, fields.get("job") or entry.get("job") or {})
        detail = {
            "version": version,
            "status": status,
            "reason": reason,
            "evaluation": entry.get("evaluation"),
            "identity": entry.get("identity"),
        }
        put_event(self.events, RETRAIN_EVENT_SOURCE, MODEL_VERSION_CHANGE, detail)
        logger.info("model version decided", extra=detail)
        return {"done": True, "phase": "done", "status": status, "reason": reason}

    def fail(self, version: str, cause: str) -> dict[str, Any]:
        """The state machine caught an error: the version is failed with the cause (if still in flight)."""
        entry = self._entry(version)
        if entry["status"] not in (versions.TRAINING, versions.EVALUATING):
            return {"done": True, "phase": "done", "status": entry["status"]}
        self._stop_candidate(version, dict(entry.get("job") or {}))
        return self._finish(version, versions.FAILED, f"the retrain workflow failed: {cause}"[:2000])


def _box_dict(box: Box) -> dict[str, Any]:
    out: dict[str, Any] = {
        "label": box.label,
        "left": box.left,
        "top": box.top,
        "width": box.width,
        "height": box.height,
    }
    if box.confidence is not None:
        out["confidence"] = box.confidence
    return out


def _boxes(rows: list[dict[str, Any]]) -> tuple[Box, ...]:
    return tuple(Box(r["label"], r["left"], r["top"], r["width"], r["height"], r.get("confidence")) for r in rows)


def process(event: Mapping[str, Any], retrainer: Retrainer) -> dict[str, Any]:
    """Dispatch one action of the retrain state machine."""
    action = event.get("action")
    if action == "plan":
        detail = event.get("detail")
        if not isinstance(detail, Mapping):
            raise RetrainEventError("a plan needs the Export Published event's detail")
        return retrainer.plan(detail)
    if action == "advance":
        return retrainer.advance(_field(event, "version"))
    if action == "fail":
        cause = str(event.get("cause") or event.get("error") or "unknown")
        return retrainer.fail(_field(event, "version"), cause)
    raise RetrainEventError(f"unknown action {action!r}; use plan, advance or fail")


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point (the retrain state machine's steps)."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    time_left = None if remaining is None else (lambda: remaining() / 1000.0)
    cfg = settings()
    sagemaker = cfg.backend == "sagemaker"
    cloud = Retrainer(
        cfg,
        client("s3"),
        None if sagemaker else model_client("rekognition"),
        client("events"),
        time_left=time_left,
        sagemaker=client("sagemaker") if sagemaker else None,
        runtime=model_client("sagemaker-runtime") if sagemaker else None,
    )
    return process(event, cloud)
