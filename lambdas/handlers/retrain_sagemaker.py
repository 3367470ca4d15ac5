"""The retrain loop's SageMaker phases (``retrain.backend: sagemaker``): training, hosting, promotion (docs/retrain.md).

`handlers.retrain` strings the phases together and keeps them in the registry; this module makes
the one look per call of each phase (`adapters.sagemaker_training` makes the calls):

- ``training``: the first look starts ``CreateTrainingJob`` with the user's image on the export
  version's folder (channel ``training``: its YOLO files, ``data.yaml`` and the training manifests),
  artifact under ``models/versions/<vN>/``; later looks ``DescribeTrainingJob``: InProgress waits,
  Failed records its FailureReason, Stopped fails, Completed records BillableTimeInSeconds as the
  training cost and creates the model (``CreateModel``: the training image serving the artifact);
- ``hosting``: the first look gives the configured endpoint a new config, its current variants
  plus ``labelloop-vN`` at weight 0 (`labelloop_core.endpoint_variants`), by ``UpdateEndpoint``; later looks
  wait until the endpoint is InService on that config (Failed or rolled back: the version fails);
- the evaluation is the backend-neutral one (`handlers.retrain`); the candidate is invoked with
  ``TargetVariant``; a promotion moves the weight to it, a rejection or a failure returns the
  endpoint to the config it had.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aws_lambda_powertools import Logger

from adapters import env
from adapters.sagemaker_training import SageMakerTraining, sagemaker_name
from labelloop_core import endpoint_variants as hosting
from labelloop_core import limits
from labelloop_core import registry as versions
from labelloop_core.contract import MODEL_OUTPUT_PREFIX, SAGEMAKER_TRAINING_CHANNEL, Env

logger = Logger(child=True)

__all__ = ["SageMakerRetrainSettings", "SageMakerSteps"]

#: Endpoint statuses that will change by themselves (wait for them).
ENDPOINT_BUSY = ("Creating", "Updating", "SystemUpdating", "RollingBack", "UpdateRollbackFailed")


@dataclass(frozen=True)
class SageMakerRetrainSettings:
    """The training job's settings (``retrain.*`` in the config; env names in `contract.Env`)."""

    training_image: str
    role_arn: str
    instance_type: str
    max_runtime_hours: int
    hyperparameters: dict[str, str]
    spot: bool
    endpoint_instance_type: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SageMakerRetrainSettings:
        """Read and validate the environment; errors name the variable."""
        e = environ
        raw = env.text(Env.RETRAIN_HYPERPARAMETERS, "{}", environ=e)
        try:
            hyperparameters = json.loads(raw)
        except ValueError:
            hyperparameters = None
        if not isinstance(hyperparameters, dict) or not all(isinstance(v, str) for v in hyperparameters.values()):
            raise env.EnvError(f"environment variable {Env.RETRAIN_HYPERPARAMETERS} must be a JSON object of strings")
        spot = env.choice(Env.RETRAIN_SPOT, "false", ("true", "false"), environ=e) == "true"
        return cls(
            training_image=env.text(Env.RETRAIN_TRAINING_IMAGE, environ=e),
            role_arn=env.text(Env.RETRAIN_EXECUTION_ROLE_ARN, environ=e),
            instance_type=env.text(Env.RETRAIN_INSTANCE_TYPE, environ=e),
            max_runtime_hours=env.bounded(Env.RETRAIN_MAX_RUNTIME_HOURS, limits.RETRAIN_MAX_RUNTIME_HOURS, environ=e),
            hyperparameters=dict(hyperparameters),
            spot=spot,
            endpoint_instance_type=env.text(Env.RETRAIN_ENDPOINT_INSTANCE_TYPE, environ=e),
        )


class Owner(Protocol):
    """What the phases use of `handlers.retrain.Retrainer`: its settings, clients, registry and endings."""

    cfg: Any
    sagemaker: Any

    @property
    def bucket(self) -> str: ...

    def now(self) -> str: ...

    def _registry(self) -> dict[str, Any]: ...

    def _update(self, change: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]: ...

    def _wait(self, version: str, job: dict[str, Any], note: str, **fields: Any) -> dict[str, Any]: ...

    def _finish(self, version: str, status: str, reason: str, **fields: Any) -> dict[str, Any]: ...


@dataclass
class SageMakerSteps:
    """The SageMaker phases of one `handlers.retrain.Retrainer` (its registry, waits and endings)."""

    owner: Owner
    cfg: SageMakerRetrainSettings

    @property
    def api(self) -> SageMakerTraining:
        return SageMakerTraining(self.owner.sagemaker)

    @property
    def endpoint_name(self) -> str:
        name = self.owner.cfg.model.endpoint_name
        assert name is not None  # ModelSettings requires it for kind sagemaker
        return name

    def _name(self, version: str, entry: dict[str, Any], suffix: str = "") -> str:
        export = str(entry["trained_on"]["export_version"])
        return sagemaker_name(self.owner.cfg.project_name, version, export, *([suffix] if suffix else []))

    # ------------------------------------------------------------------ training
    def training_request(self, version: str, entry: dict[str, Any]) -> dict[str, Any]:
        """The CreateTrainingJob request (all but the name) for ``version`` trained on its export."""
        cfg = self.cfg
        runtime = cfg.max_runtime_hours * 3600
        stopping: dict[str, int] = {"MaxRuntimeInSeconds": runtime}
        if cfg.spot:
            stopping["MaxWaitTimeInSeconds"] = 2 * runtime  # >= MaxRuntime, as managed spot requires
        source = {
            "S3DataType": "S3Prefix",
            "S3Uri": entry["trained_on"]["export_uri"],
            "S3DataDistributionType": "FullyReplicated",
        }
        return {
            "RoleArn": cfg.role_arn,
            "AlgorithmSpecification": {"TrainingImage": cfg.training_image, "TrainingInputMode": "File"},
            "HyperParameters": dict(cfg.hyperparameters),
            "InputDataConfig": [
                {"ChannelName": SAGEMAKER_TRAINING_CHANNEL, "DataSource": {"S3DataSource": source}, "InputMode": "File"}
            ],
            "OutputDataConfig": {"S3OutputPath": f"s3://{self.owner.bucket}/{MODEL_OUTPUT_PREFIX}{version}/"},
            "ResourceConfig": {"InstanceType": cfg.instance_type, "InstanceCount": 1, "VolumeSizeInGB": 30},
            "StoppingCondition": stopping,
            "EnableManagedSpotTraining": cfg.spot,
            "Tags": [{"Key": "labelloop:version", "Value": version}],
        }

    def training(self, version: str, entry: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
        """Start the job (first look) or look at it once."""
        owner = self.owner
        name = job.get("training_job")
        if not name:
            name = self._name(version, entry)
            arn = self.api.create_training_job(name, self.training_request(version, entry))
            job.update(
                training_job=name, training_job_arn=arn, output=f"s3://{owner.bucket}/{MODEL_OUTPUT_PREFIX}{version}/"
            )
            return owner._wait(version, job, "InProgress: training job created")
        described = self.api.describe_training_job(name)
        status = str(described["TrainingJobStatus"])
        why = str(described.get("FailureReason", ""))
        if status == "InProgress":
            return owner._wait(version, job, f"InProgress: {described.get('SecondaryStatus', '')}".rstrip(": "))
        if status == "Failed":
            return owner._finish(version, versions.FAILED, f"TrainingJob Failed: {why}")
        if status != "Completed":  # Stopped by someone else (the workflow stops only what it gave up on)
            return owner._finish(version, versions.FAILED, f"TrainingJob {status}: {why}".rstrip(": "))
        return self._create_model(version, entry, job, described)

    def _create_model(
        self, version: str, entry: dict[str, Any], job: dict[str, Any], described: dict[str, Any]
    ) -> dict[str, Any]:
        owner = self.owner
        artifact = str((described.get("ModelArtifacts") or {}).get("S3ModelArtifacts") or "")
        if not artifact:
            return owner._finish(version, versions.FAILED, "TrainingJob Completed without ModelArtifacts")
        model_name = self._name(version, entry)
        self.api.create_model(
            model_name, self.cfg.training_image, artifact, self.cfg.role_arn, {"labelloop:version": version}
        )
        cost = {
            "billable_training_seconds": described.get("BillableTimeInSeconds"),
            "training_seconds": described.get("TrainingTimeInSeconds"),
            "spot": self.cfg.spot,
            "instance_type": self.cfg.instance_type,
            "measured": "billable seconds (SageMaker's count)",
        }
        job.update(phase="hosting", model_name=model_name, model_data=artifact, note="hosting")
        model = owner.cfg.model
        identity = {
            "kind": "sagemaker",
            "endpoint_name": model.endpoint_name,
            "endpoint_format": model.endpoint_format,
            "variant": hosting.variant_name(version),
            "model_name": model_name,
            "model_data": artifact,
        }

        def evaluating(document: dict[str, Any]) -> dict[str, Any]:
            moved = versions.set_identity(document, version, identity)
            moved = versions.set_status(
                moved, version, versions.EVALUATING, owner.now(), "Completed; hosting it", job=job
            )
            return versions.update_fields(moved, version, training_cost=cost)

        owner._update(evaluating)
        return {"done": False, "phase": "hosting", "status": "Completed"}

    # ------------------------------------------------------------------ hosting
    def hosting(self, version: str, entry: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
        """Put the candidate beside the incumbent on the endpoint (first look), then wait for InService."""
        owner = self.owner
        described = self.api.endpoint(self.endpoint_name)
        status = str(described.get("EndpointStatus"))
        if not job.get("evaluation_config"):
            if status != "InService":
                return owner._wait(version, job, f"the endpoint is {status}: waiting to add the candidate")
            return self._add_candidate(version, entry, job, str(described["EndpointConfigName"]))
        if status in ENDPOINT_BUSY:
            return owner._wait(version, job, f"endpoint {status}")
        reason = str(described.get("FailureReason") or "")
        if status == "InService" and described.get("EndpointConfigName") == job["evaluation_config"]:
            job.update(phase="evaluating", cursor=0)
            return owner._wait(version, job, "InService: evaluating")
        if status == "InService":
            reason = f"the endpoint rolled back to {described.get('EndpointConfigName')}: {reason}"
        job["endpoint_reverted"] = True  # nothing to undo: the endpoint is not on the candidate's config
        return owner._finish(version, versions.FAILED, f"could not host the candidate: {status}: {reason}".rstrip(": "))

    def _add_candidate(self, version: str, entry: dict[str, Any], job: dict[str, Any], current: str) -> dict[str, Any]:
        owner = self.owner
        variants = self.api.variants(current)
        active = versions.active_version(owner._registry())
        incumbent = hosting.incumbent_variant(variants, (active.get("identity") or {}).get("variant"))
        if "variant" not in (active.get("identity") or {}):  # the deploy-time model: name the variant it runs as
            identity = {**active["identity"], "variant": incumbent}
            owner._update(lambda d: versions.update_fields(d, str(active["version"]), identity=identity))
        name = self._name(version, entry, "eval")
        config = hosting.evaluation_variants(variants, version, job["model_name"], self.cfg.endpoint_instance_type)
        self.api.create_endpoint_config(name, config)
        self.api.update_endpoint(self.endpoint_name, name)
        job.update(previous_config=current, evaluation_config=name, incumbent_variant=incumbent)
        return owner._wait(version, job, f"UpdateEndpoint to {name}")

    # ------------------------------------------------------------------ endings
    def promote(self, version: str, entry: dict[str, Any], job: dict[str, Any]) -> None:
        """Give the promoted version the endpoint's traffic (the decision stands if the call fails)."""
        try:
            evaluated = self.api.variants(job["evaluation_config"])
            name = self._name(version, entry, "live")
            self.api.create_endpoint_config(
                name, hosting.promotion_variants(evaluated, version, job["incumbent_variant"])
            )
            self.api.update_endpoint(self.endpoint_name, name)
            job["live_config"] = name
        except Exception as exc:  # reported for the operator; the pinned variants keep answering either way
            logger.error("could not move the endpoint's traffic", extra={"version": version, "error": str(exc)})
            job["traffic_error"] = str(exc)

    def withdraw(self, job: dict[str, Any]) -> None:
        """Stop a training in progress, or return the endpoint to the config it had before the candidate."""
        try:
            if job.get("training_job") and job.get("phase") == "training":
                self.api.stop_training_job(job["training_job"])
            elif job.get("previous_config") and not job.get("endpoint_reverted"):
                self.api.update_endpoint(self.endpoint_name, job["previous_config"])
                job["endpoint_reverted"] = True
        except Exception as exc:  # the decision stands; the clean-up is reported for the operator
            logger.error("could not withdraw the candidate", extra={"job": job.get("training_job"), "error": str(exc)})
            job["stop_error"] = str(exc)
