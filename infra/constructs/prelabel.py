"""Pre-labeling, routing and calibration functions (docs/data-flow.md steps 2, 3 and 6).

`Prelabeling` declares the three Lambdas the workflow invokes — ``handlers.prelabel`` (one
Distributed Map item per manifest shard), ``handlers.route`` and ``handlers.calibrate`` — with the
model settings in their environment and least-privilege grants: S3 access scoped to the work
prefixes each one touches (plus reading incoming images for the model), and the model API on the
configured model only (``rekognition:DetectCustomLabels`` on the project version ARN, or
``sagemaker:InvokeEndpoint`` on the endpoint). The workflow construct owns the states.
"""

from __future__ import annotations

import json

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infra.config import LabelLoopConfig
from infra.constructs.lambda_factory import LambdaFactory
from infra.constructs.storage import Storage
from infra.iam import allow, allow_list, bucket_prefix_finding, regional_finding
from infra.nag import acknowledge
from labelloop_core import contract
from labelloop_core.contract import Env


def model_environment(config: LabelLoopConfig) -> dict[str, str]:
    """The environment the three functions share (variable names the handlers read)."""
    model = config.model
    env = {
        Env.LABELS: json.dumps(list(config.labels), ensure_ascii=False),
        Env.MODEL_KIND: model.kind,
        Env.MIN_CONFIDENCE: repr(model.min_confidence),
        Env.AUTO_ACCEPT_THRESHOLD: "" if config.auto_accept_threshold is None else repr(config.auto_accept_threshold),
        Env.AUDIT_FRACTION: repr(config.calibration.audit_fraction),
        Env.TARGET_QUALITY: repr(config.calibration.target_quality),
        Env.CONFIDENCE_LEVEL: repr(config.calibration.confidence_level),
        Env.MIN_PAIRS: str(config.calibration.min_pairs),
        Env.CALIBRATION_BOUND: config.calibration.bound,
        Env.CALIBRATION_PREFIX: contract.calibration_prefix(config.work_prefix),
    }
    if model.kind == "rekognition" and model.project_version_arn:
        env[Env.MODEL_ARN] = model.project_version_arn
        env[Env.MODEL_KEEP_RUNNING] = "true" if model.keep_running else "false"
        env[Env.MODEL_INFERENCE_UNITS] = str(model.inference_units)
        env[Env.MODEL_IDLE_MINUTES] = repr(model.idle_minutes)
        if model.max_inference_units is not None:
            env[Env.MODEL_MAX_INFERENCE_UNITS] = str(model.max_inference_units)
    if model.kind == "sagemaker" and model.endpoint_name:
        env[Env.ENDPOINT_NAME] = model.endpoint_name
        env[Env.ENDPOINT_FORMAT] = model.endpoint_format
    return env


class Prelabeling(Construct):
    """The pre-label, route and calibrate functions with their grants (see module docstring).

    Attributes
    ----------
    prelabel_function, route_function, calibrate_function:
        The functions the workflow's states invoke.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: LabelLoopConfig,
        storage: Storage,
        functions: LambdaFactory,
    ) -> None:
        super().__init__(scope, construct_id)
        env = model_environment(config)
        data = storage.data
        work = config.work_prefix

        self.prelabel_function = functions.function(
            self,
            "Prelabel",
            handler="handlers.prelabel.handler",
            description="LabelLoop: pre-label one manifest shard with the assisting model",
            environment=env,
            # A shard calls the model once per image, with backoff on throttling; the handler keeps
            # the remaining time in view and records unfinished images as errors, never losing them.
            timeout=Duration.minutes(15),
            memory_size=1024,
        )
        self.route_function = functions.function(
            self,
            "Route",
            handler="handlers.route.handler",
            description="LabelLoop: route pre-labeled images to auto-accept or human review",
            environment=env,
            timeout=Duration.minutes(5),
            memory_size=1024,
        )
        self.calibrate_function = functions.function(
            self,
            "Calibrate",
            handler="handlers.calibrate.handler",
            description="LabelLoop: write calibration pairs and recompute the auto-accept threshold",
            environment=env,
            timeout=Duration.minutes(5),
            memory_size=1024,
        )

        # Explicit statements rather than grant_read/grant_put: exact actions, no s3:*Object* wildcards.
        arn = data.bucket_arn
        batches = work + contract.BATCHES_DIR
        calibration = contract.calibration_prefix(work)
        # Pre-label: read its shard and the images (derived copies under work/, originals under
        # incoming/; Rekognition reads the S3Object with the caller's permissions); write results.
        allow(self.prelabel_function, ["s3:GetObject"], [f"{arn}/{work}*", f"{arn}/{config.incoming_prefix}*"])
        allow(self.prelabel_function, ["s3:PutObject"], [f"{arn}/{batches}*"])
        # Route: list and read the pre-labels, read the threshold, write the manifests (multipart).
        allow(self.route_function, ["s3:GetObject"], [f"{arn}/{batches}*", f"{arn}/{calibration}*"])
        # ListBucket on both prefixes also makes a missing threshold/report a 404, not a 403.
        allow_list(self.route_function, arn, [batches, calibration])
        allow(self.route_function, ["s3:PutObject", "s3:AbortMultipartUpload"], [f"{arn}/{batches}*"])
        # Calibrate: read the output manifest, report and all pairs; write pairs, threshold and report.
        allow(self.calibrate_function, ["s3:GetObject"], [f"{arn}/{batches}*", f"{arn}/{calibration}*"])
        allow_list(self.calibrate_function, arn, [batches, calibration])
        allow(self.calibrate_function, ["s3:PutObject"], [f"{arn}/{batches}*", f"{arn}/{calibration}*"])

        self._grant_models(config, arn, storage)
        self._acknowledge_findings(storage, config)

    def _grant_models(self, config: LabelLoopConfig, arn: str, storage: Storage) -> None:
        """The registry a batch pins its version from, and the model API on the versions it may pin."""
        # Each batch pins the registry's active version (adapters.model_pin): read the one registry
        # object; listing models/ makes "no registry yet" a 404, not a 403.
        models = contract.MODEL_REGISTRY_KEY.split("/", 1)[0] + "/"
        for function in self.functions:
            allow(function, ["s3:GetObject"], [f"{arn}/{contract.MODEL_REGISTRY_KEY}"])
            allow_list(function, arn, [models])
        if config.model.managed_hosting:  # each shard renews its batch's lease (docs/model-lifecycle.md)
            hosting = f"{arn}/{contract.MODEL_HOSTING_PREFIX}*"
            allow(self.prelabel_function, ["s3:GetObject", "s3:PutObject"], [hosting])
            acknowledge(
                self.prelabel_function,
                bucket_prefix_finding(storage.data)(contract.MODEL_HOSTING_PREFIX),
                "One hosting document per model version lives under models/hosting/ (named at run time).",
            )

        model = config.model
        stack = Stack.of(self)
        if model.kind == "rekognition" and model.project_version_arn:
            versions = [model.project_version_arn]
            if config.retrain.enabled:  # versions the retrain loop trains in the stack's own project
                name = config.retrain.project_name or f"{stack.stack_name}-labelloop"
                versions.append(
                    stack.format_arn(
                        service="rekognition",
                        resource=f"project/{name}/version/*",
                        arn_format=ArnFormat.NO_RESOURCE_NAME,
                    )
                )
            self.prelabel_function.add_to_role_policy(
                iam.PolicyStatement(actions=["rekognition:DetectCustomLabels"], resources=versions)
            )
            if config.retrain.enabled:
                acknowledge(
                    self.prelabel_function,
                    regional_finding("rekognition", f"project/{name}/version/*"),
                    "Model versions the retrain loop trains are named at run time; a batch calls the one it pinned.",
                )
        elif model.kind == "sagemaker" and model.endpoint_name:
            # IAM matches endpoint ARNs in lower case.
            endpoint_arn = stack.format_arn(
                service="sagemaker", resource="endpoint", resource_name=model.endpoint_name.lower()
            )
            self.prelabel_function.add_to_role_policy(
                iam.PolicyStatement(actions=["sagemaker:InvokeEndpoint"], resources=[endpoint_arn])
            )

    @property
    def functions(self) -> tuple[lambda_.Function, lambda_.Function, lambda_.Function]:
        """The three functions (prelabel, route, calibrate)."""
        return self.prelabel_function, self.route_function, self.calibrate_function

    def _acknowledge_findings(self, storage: Storage, config: LabelLoopConfig) -> None:
        """Accept, finding by finding, the wildcards these permissions cannot avoid (reasons inline)."""
        prefix = bucket_prefix_finding(storage.data)
        work = config.work_prefix
        batches = prefix(work + contract.BATCHES_DIR)
        calibration = prefix(contract.calibration_prefix(work))
        for function in self.functions:
            acknowledge(
                function,
                batches,
                "Batch files (shards, pre-labels, manifests, report) are created per batch under work/batches/.",
            )
        acknowledge(
            self.prelabel_function,
            prefix(work),
            "Pre-labeling reads the batch shard and the EXIF-normalised image copies, both under work/.",
        )
        acknowledge(
            self.prelabel_function,
            prefix(config.incoming_prefix),
            "Pre-labeling sends images kept as dropped (no derived copy) to the model: they live under incoming/.",
        )
        for function in (self.route_function, self.calibrate_function):
            acknowledge(
                function,
                calibration,
                "Calibration pairs and the per-dataset threshold live under work/calibration/<dataset>/.",
            )
