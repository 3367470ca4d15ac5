"""Rekognition Custom Labels training and hosting calls the retrain loop makes (one call per method).

The project is the stack's own (``RETRAIN_PROJECT_NAME``, created on first use), so replacing its
TRAIN/TEST datasets for each training never touches a project the user made by hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

__all__ = ["RekognitionVersions"]


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@dataclass
class RekognitionVersions:
    """The stack's Rekognition project: its datasets, versions and their hosting."""

    client: Any
    project_name: str

    def project(self) -> dict[str, Any]:
        """The project's description (created when it does not exist yet)."""
        found = self.client.describe_projects(ProjectNames=[self.project_name]).get("ProjectDescriptions", [])
        if found:
            return dict(found[0])
        try:
            self.client.create_project(ProjectName=self.project_name)
        except ClientError as exc:
            if _code(exc) != "ResourceInUseException":  # created concurrently: describe again
                raise
        return dict(self.client.describe_projects(ProjectNames=[self.project_name])["ProjectDescriptions"][0])

    def delete_dataset(self, arn: str) -> None:
        """Delete one dataset (an earlier training's)."""
        self.client.delete_dataset(DatasetArn=arn)

    def create_dataset(self, project_arn: str, kind: str, bucket: str, key: str) -> str:
        """A TRAIN or TEST dataset from a Ground Truth manifest in S3."""
        response = self.client.create_dataset(
            ProjectArn=project_arn,
            DatasetType=kind,
            DatasetSource={"GroundTruthManifest": {"S3Object": {"Bucket": bucket, "Name": key}}},
        )
        return str(response["DatasetArn"])

    def create_version(self, project_arn: str, name: str, bucket: str, prefix: str, tags: Mapping[str, str]) -> str:
        """Start training ``name`` on the project's datasets; an existing version of that name is reused."""
        try:
            response = self.client.create_project_version(
                ProjectArn=project_arn,
                VersionName=name,
                OutputConfig={"S3Bucket": bucket, "S3KeyPrefix": prefix},
                Tags=dict(tags),
            )
            return str(response["ProjectVersionArn"])
        except ClientError as exc:
            if _code(exc) != "ResourceAlreadyExistsException":  # a retried call: the first one started it
                raise
        return str(self.describe_version(project_arn, name)["ProjectVersionArn"])

    def describe_version(self, project_arn: str, name: str) -> dict[str, Any]:
        """One version's description (status, StatusMessage, EvaluationResult, billable seconds)."""
        found = self.client.describe_project_versions(ProjectArn=project_arn, VersionNames=[name])
        versions = found.get("ProjectVersionDescriptions", [])
        if not versions:
            raise LookupError(f"project {project_arn} has no version {name}")
        return dict(versions[0])

    def start(self, version_arn: str, units: int) -> str:
        """Start hosting a version (billed per inference-unit hour until stopped); one already starting is fine."""
        try:
            return str(
                self.client.start_project_version(ProjectVersionArn=version_arn, MinInferenceUnits=units)["Status"]
            )
        except ClientError as exc:
            if _code(exc) != "ResourceInUseException":  # a retried call: the first one started it
                raise
        return "STARTING"

    def stop(self, version_arn: str) -> str:
        """Stop hosting a version."""
        return str(self.client.stop_project_version(ProjectVersionArn=version_arn)["Status"])
