"""SageMaker training and hosting calls the retrain loop makes for ``retrain.backend: sagemaker`` (one call each).

Every name the backend creates (training job, model, endpoint configs) starts with the stack's
project name, so the function's IAM policy can be scoped to them; the configured endpoint is the
user's and only ever gets a new endpoint config through ``UpdateEndpoint`` (never deleted).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

__all__ = ["SageMakerTraining", "sagemaker_name"]

_BAD = re.compile(r"[^a-zA-Z0-9-]+")


def sagemaker_name(*parts: str) -> str:
    """A SageMaker resource name from ``parts``: letters, digits and single hyphens, at most 63 characters."""
    name = re.sub("-+", "-", _BAD.sub("-", "-".join(parts))).strip("-")
    return name[:63].rstrip("-")


def _exists(exc: ClientError) -> bool:
    message = str(exc.response.get("Error", {}).get("Message", "")).lower()
    return "already exist" in message or "in use" in message


@dataclass
class SageMakerTraining:
    """The training jobs, models and endpoint configs of one stack, and the user's endpoint."""

    client: Any

    def create_training_job(self, name: str, request: Mapping[str, Any]) -> str:
        """Start training job ``name``; one already created by a retried call is reused."""
        try:
            return str(self.client.create_training_job(TrainingJobName=name, **request)["TrainingJobArn"])
        except ClientError as exc:
            if not _exists(exc):
                raise
        return str(self.describe_training_job(name)["TrainingJobArn"])

    def describe_training_job(self, name: str) -> dict[str, Any]:
        """Status, FailureReason, ModelArtifacts and BillableTimeInSeconds of one job."""
        return dict(self.client.describe_training_job(TrainingJobName=name))

    def stop_training_job(self, name: str) -> None:
        """Stop a job in progress (the workflow gave up on it)."""
        self.client.stop_training_job(TrainingJobName=name)

    def create_model(self, name: str, image: str, model_data: str, role_arn: str, tags: Mapping[str, str]) -> str:
        """A model serving ``model_data`` with ``image``; reused when a retried call made it already."""
        try:
            response = self.client.create_model(
                ModelName=name,
                PrimaryContainer={"Image": image, "ModelDataUrl": model_data},
                ExecutionRoleArn=role_arn,
                Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
            )
            return str(response["ModelArn"])
        except ClientError as exc:
            if not _exists(exc):
                raise
        return str(self.client.describe_model(ModelName=name)["ModelArn"])

    def endpoint(self, name: str) -> dict[str, Any]:
        """The endpoint's description (status, current config, FailureReason)."""
        return dict(self.client.describe_endpoint(EndpointName=name))

    def variants(self, config_name: str) -> list[dict[str, Any]]:
        """The production variants of an endpoint config."""
        return [
            dict(v) for v in self.client.describe_endpoint_config(EndpointConfigName=config_name)["ProductionVariants"]
        ]

    def create_endpoint_config(self, name: str, variants: Sequence[Mapping[str, Any]]) -> None:
        """An endpoint config with these production variants (kept if a retried call created it)."""
        try:
            self.client.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[dict(v) for v in variants])
        except ClientError as exc:
            if not _exists(exc):
                raise

    def update_endpoint(self, endpoint: str, config_name: str) -> None:
        """Move the endpoint to ``config_name`` (blue/green: it keeps answering while it updates)."""
        self.client.update_endpoint(EndpointName=endpoint, EndpointConfigName=config_name)
