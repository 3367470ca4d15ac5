"""Model hosting I/O: the hosting settings, the per-version lease documents in S3, and the Rekognition calls.

`HostingStore` writes ``models/hosting/<version>.json`` only through `adapters.registry.update`
(IfMatch / IfNoneMatch, a lost race re-read and re-applied), so two batches, a batch and the sweep,
or two sweeps never overwrite each other's change. `RekognitionHosting` wraps
DescribeProjectVersions / StartProjectVersion / StopProjectVersion for one version ARN; a concurrent
start (``ResourceInUseException``) is reported as "already being started", not as a failure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from adapters import env, registry
from labelloop_core import hosting, limits
from labelloop_core.contract import Env, hosting_key

__all__ = ["HostingSettings", "HostingStore", "RekognitionHosting", "StartRefused", "error_code", "is_transient"]

#: Errors a later call may not see again (retried by the caller's retry policy, never a verdict).
TRANSIENT_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ProvisionedThroughputExceededException",
        "InternalServerError",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
    }
)


def error_code(exc: ClientError) -> str:
    """The service's error code."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def is_transient(exc: BaseException) -> bool:
    """True for throttling and 5xx answers (worth another call), False for the service's refusals."""
    if not isinstance(exc, ClientError):
        return not isinstance(exc, ValueError | LookupError)
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return error_code(exc) in TRANSIENT_CODES or (isinstance(status, int) and status >= 500)


class StartRefused(RuntimeError):
    """StartProjectVersion refused for good (quota, a deleted version, access): the message is the service's."""


@dataclass(frozen=True)
class HostingSettings:
    """Whether LabelLoop starts and stops the model, and how (``model.*`` settings, docs/model-lifecycle.md)."""

    managed: bool
    inference_units: int = limits.MODEL_INFERENCE_UNITS.default
    max_inference_units: int | None = None
    idle_minutes: float = limits.MODEL_IDLE_MINUTES.default

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> HostingSettings:
        """Read and validate the environment; errors name the variable."""
        e = environ
        kind = env.text(Env.MODEL_KIND, "none", environ=e)
        keep = env.choice(Env.MODEL_KEEP_RUNNING, "true", ("true", "false"), environ=e)
        units = env.bounded(Env.MODEL_INFERENCE_UNITS, limits.MODEL_INFERENCE_UNITS, environ=e)
        max_units = None
        if env.optional(Env.MODEL_MAX_INFERENCE_UNITS, environ=e) is not None:
            max_units = env.integer(
                Env.MODEL_MAX_INFERENCE_UNITS, lo=units, hi=limits.MODEL_INFERENCE_UNITS.hi, environ=e
            )
        return cls(
            managed=kind == "rekognition" and keep == "false",
            inference_units=units,
            max_inference_units=max_units,
            idle_minutes=env.number(Env.MODEL_IDLE_MINUTES, limits.MODEL_IDLE_MINUTES, environ=e),
        )


Change = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass
class HostingStore:
    """The hosting documents of the stack's versions in the data bucket."""

    s3: Any
    bucket: str

    def read(self, version: str) -> dict[str, Any] | None:
        """The version's document, or None before anyone used it."""
        document, _ = registry.read(self.s3, self.bucket, hosting_key(version))
        return document

    def update(self, version: str, model_arn: str, change: Change, now: float) -> dict[str, Any]:
        """Apply ``change`` conditionally (a new document first if none exists); retried on a lost race."""

        def apply(current: dict[str, Any] | None) -> dict[str, Any]:
            return change(current if current is not None else hosting.new_document(version, model_arn, now))

        return registry.update(self.s3, self.bucket, apply, key=hosting_key(version), attempts=10)

    def versions(self) -> list[str]:
        """Every version with a hosting document."""
        from labelloop_core.contract import MODEL_HOSTING_PREFIX

        paginator = self.s3.get_paginator("list_objects_v2")
        out = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=MODEL_HOSTING_PREFIX):
            for item in page.get("Contents", []):
                name = item["Key"][len(MODEL_HOSTING_PREFIX) :]
                if name.endswith(".json") and "/" not in name:
                    out.append(name[: -len(".json")])
        return out


def _names(version_arn: str) -> tuple[str, str]:
    """(project name, version name) of ``arn:…:project/<project>/version/<version>/<created>``."""
    try:
        rest = version_arn.split(":project/", 1)[1]
        project, tail = rest.split("/version/", 1)
        return project, tail.rsplit("/", 1)[0]
    except (IndexError, ValueError):
        raise ValueError(f"{version_arn!r} is not a Rekognition project version ARN") from None


@dataclass
class RekognitionHosting:
    """Hosting calls on Rekognition Custom Labels versions (one client, project ARNs looked up once)."""

    client: Any
    _projects: dict[str, str] = field(default_factory=dict)

    def _project_arn(self, name: str) -> str:
        if name not in self._projects:
            found = self.client.describe_projects(ProjectNames=[name]).get("ProjectDescriptions", [])
            if not found:
                raise LookupError(f"Rekognition project {name!r} does not exist")
            self._projects[name] = str(found[0]["ProjectArn"])
        return self._projects[name]

    def describe(self, version_arn: str) -> dict[str, Any]:
        """The version's description (Status, StatusMessage, MinInferenceUnits); LookupError when deleted."""
        project, version = _names(version_arn)
        found = self.client.describe_project_versions(ProjectArn=self._project_arn(project), VersionNames=[version])
        for description in found.get("ProjectVersionDescriptions", []):
            if description.get("ProjectVersionArn") == version_arn:
                return dict(description)
        raise LookupError(f"Rekognition project version {version_arn} does not exist")

    def start(self, version_arn: str, min_units: int, max_units: int | None) -> bool:
        """StartProjectVersion: True when this call started it, False when it was already being started.

        Refusals for good raise `StartRefused` with the service's message; throttling and 5xx re-raise.
        """
        params: dict[str, Any] = {"ProjectVersionArn": version_arn, "MinInferenceUnits": min_units}
        if max_units is not None:
            params["MaxInferenceUnits"] = max_units
        try:
            self.client.start_project_version(**params)
        except ClientError as exc:
            if error_code(exc) == "ResourceInUseException":
                return False  # someone else's start (or stop) is in flight: the shared start
            if is_transient(exc):
                raise
            message = str(exc.response.get("Error", {}).get("Message", "")) or str(exc)
            raise StartRefused(f"{error_code(exc)}: {message}") from exc
        return True

    def stop(self, version_arn: str) -> None:
        """StopProjectVersion; any refusal raises (the sweep counts it and tries again next time)."""
        self.client.stop_project_version(ProjectVersionArn=version_arn)
