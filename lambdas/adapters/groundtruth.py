"""Ground Truth custom-task plumbing: handler settings, task files in S3, the CreateLabelingJob request.

- `TaskSettings.from_env` reads the environment both annotation Lambdas share (validated once);
- `ensure_task_files` writes the worker template (from ``lambdas/templates/``) and the label
  category file to S3 under content-addressed keys, so it is idempotent and a running job's files
  never change under it;
- `labeling_job_request` builds a complete CreateLabelingJob request for LabelLoop's custom task;
- `job_input_manifest` finds a job's input manifest (the post-annotation payload carries only
  the image URI, so pre-labels and ``labelloop-meta`` are read back from the manifest).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters import env
from adapters.aws import client
from adapters.s3 import parse_uri, uri
from labelloop_core import limits
from labelloop_core.contract import ELEMENT_NAME, LABEL_CATEGORIES_DIR, PRELABEL_ATTRIBUTE, TEMPLATES_DIR, Env

__all__ = [
    "DEFAULT_ELEMENT_NAME",
    "DEFAULT_PRELABEL_ATTRIBUTE",
    "TASK_MODES",
    "TEMPLATE_DIR",
    "LabelingRequestError",
    "SettingsError",
    "TaskSettings",
    "ensure_task_files",
    "job_input_manifest",
    "job_name_from_arn",
    "label_categories_document",
    "labeling_job_request",
    "template_text",
]

TEMPLATE_DIR = Path(__file__).resolve().parents[1] / "templates"
TASK_MODES = ("adjust", "verify")
DEFAULT_PRELABEL_ATTRIBUTE = PRELABEL_ATTRIBUTE
#: The ``name`` of the crowd element in the templates; answers are keyed by it.
DEFAULT_ELEMENT_NAME = ELEMENT_NAME
_TEMPLATE_FILES = {"adjust": "adjust.liquid.html", "verify": "verify.liquid.html"}
_JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_KEYWORD = re.compile(r"^[A-Za-z0-9]+( [A-Za-z0-9]+)*$")


#: The one error a bad environment raises (names the variable); kept under this name for callers.
SettingsError = env.EnvError


class LabelingRequestError(ValueError):
    """A CreateLabelingJob request cannot be built from the given values; the message says which."""


@dataclass(frozen=True)
class TaskSettings:
    """Environment shared by the pre- and post-annotation Lambdas."""

    data_bucket: str
    labels: tuple[str, ...]
    task_mode: str
    prelabel_attribute: str
    element_name: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TaskSettings:
        """Validate ``DATA_BUCKET``, ``LABELS`` (JSON list), ``TASK_MODE``, ``PRELABEL_ATTRIBUTE``, ``ELEMENT_NAME``."""
        return cls(
            env.text(Env.DATA_BUCKET, environ=environ),
            env.labels(Env.LABELS, environ=environ),
            env.choice(Env.TASK_MODE, "adjust", TASK_MODES, environ=environ),
            env.text(Env.PRELABEL_ATTRIBUTE, DEFAULT_PRELABEL_ATTRIBUTE, environ=environ),
            env.text(Env.ELEMENT_NAME, DEFAULT_ELEMENT_NAME, environ=environ),
        )


def job_name_from_arn(job_arn: Any) -> str:
    """``arn:...:labeling-job/<name>`` -> ``<name>``; anything else is an error naming the value."""
    if not isinstance(job_arn, str) or ":labeling-job/" not in job_arn:
        raise ValueError(f"labelingJobArn is not a labeling job ARN: {job_arn!r}")
    return job_arn.rsplit("/", 1)[-1]


# -- task files ---------------------------------------------------------------------------------
def template_text(task_mode: str) -> str:
    """The worker template (Liquid HTML) for ``task_mode``, read from the asset."""
    if task_mode not in _TEMPLATE_FILES:
        raise ValueError(f"task_mode must be one of {TASK_MODES}, got {task_mode!r}")
    return (TEMPLATE_DIR / _TEMPLATE_FILES[task_mode]).read_text(encoding="utf-8")


def label_categories_document(labels: Sequence[str]) -> dict[str, Any]:
    """The LabelCategoryConfigS3Uri file: ``{"document-version": "2018-11-28", "labels": [{"label"}]}``."""
    names = list(labels)
    if not names or not all(isinstance(n, str) and n.strip() for n in names) or len(set(names)) != len(names):
        raise ValueError(f"labels must be a non-empty list of unique names, got {names!r}")
    return {"document-version": "2018-11-28", "labels": [{"label": name} for name in names]}


def _put_if_changed(bucket: str, key: str, body: bytes, content_type: str, s3: Any) -> None:
    """Write ``body`` unless the object already holds exactly these bytes."""
    from botocore.exceptions import ClientError

    try:
        current = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        # Without s3:ListBucket, S3 answers a missing key with 403: treat it as missing. Keys are
        # content-addressed, so writing the same bytes again is harmless.
        if exc.response.get("Error", {}).get("Code") not in {"NoSuchKey", "404", "NotFound", "AccessDenied", "403"}:
            raise
        current = None
    if current != body:
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)


def ensure_task_files(
    bucket: str, prefix: str, labels: Sequence[str], task_mode: str, s3: Any = None
) -> dict[str, str]:
    """Write the worker template and label category file under ``prefix``; return their URIs.

    Keys carry a digest of the content (``<prefix>templates/<mode>-<sha>.liquid.html``,
    ``<prefix>label-categories/<sha>.json``): calling again with the same inputs writes nothing,
    and a changed label set gets a new file while running jobs keep theirs.
    """
    s3 = s3 or client("s3")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    template = template_text(task_mode).encode("utf-8")
    categories = json.dumps(label_categories_document(labels), indent=2).encode("utf-8")
    template_key = f"{prefix}{TEMPLATES_DIR}{task_mode}-{hashlib.sha256(template).hexdigest()[:16]}.liquid.html"
    categories_key = f"{prefix}{LABEL_CATEGORIES_DIR}{hashlib.sha256(categories).hexdigest()[:16]}.json"
    _put_if_changed(bucket, template_key, template, "text/html; charset=utf-8", s3)
    _put_if_changed(bucket, categories_key, categories, "application/json", s3)
    return {"template_uri": uri(bucket, template_key), "categories_uri": uri(bucket, categories_key)}


# -- CreateLabelingJob --------------------------------------------------------------------------
def _check_s3_uri(value: str, what: str) -> str:
    try:
        parse_uri(value)
    except ValueError as exc:
        raise LabelingRequestError(f"{what}: {exc}") from None
    return value


def _task_texts(
    task_mode: str, title: str | None, description: str | None, keywords: Sequence[str] | None
) -> tuple[str, str, list[str]]:
    """The title, description and keywords workers see (defaults by task mode), within the API's limits."""
    verify = task_mode == "verify"
    title = title or ("Check the boxes drawn on an image" if verify else "Draw boxes around objects in an image")
    description = description or (
        "Decide whether the pre-drawn boxes are correct; explain briefly when they are not."
        if verify
        else "Adjust the pre-drawn boxes and draw any missing ones, one tight box per object."
    )
    words = list(keywords) if keywords is not None else ["image", "bounding box", "object detection"]
    if not 1 <= len(words) <= 5 or not all(
        isinstance(k, str) and 1 <= len(k) <= 30 and _KEYWORD.match(k) for k in words
    ):
        raise LabelingRequestError(f"keywords must be 1-5 words of letters/digits, each 1-30 characters: {words!r}")
    if len(title) > 128 or len(description) > 255:
        raise LabelingRequestError("title must be at most 128 and description at most 255 characters")
    return title, description, words


def labeling_job_request(
    *,
    job_name: str,
    manifest_uri: str,
    output_uri: str,
    role_arn: str,
    workteam_arn: str,
    pre_lambda_arn: str,
    post_lambda_arn: str,
    template_uri: str,
    categories_uri: str,
    task_mode: str = "adjust",
    label_attribute_name: str | None = None,
    workers_per_object: int = 1,
    task_time_limit_seconds: int = 600,
    task_availability_seconds: int = limits.TASK_AVAILABILITY_SECONDS.default,
    max_concurrent_tasks: int | None = None,
    title: str | None = None,
    description: str | None = None,
    keywords: Sequence[str] | None = None,
    public_price_usd: Mapping[str, int] | None = None,
    tags: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A complete CreateLabelingJob request for LabelLoop's custom bounding-box task.

    ``label_attribute_name`` defaults to the job name (Ground Truth's own default); a chained job
    must pass a new one. ``public_price_usd`` (``{"Dollars", "Cents", "TenthFractionsOfACent"}``)
    is required for the public crowd and refused otherwise. Values are checked against the API's
    documented limits so a bad batch fails here with a clear message rather than at the API.
    """
    if not isinstance(job_name, str) or not _JOB_NAME.match(job_name):
        raise LabelingRequestError(
            f"job_name must be 1-63 letters, digits or hyphens, starting with a letter or digit, got {job_name!r}"
        )
    if task_mode not in TASK_MODES:
        raise LabelingRequestError(f"task_mode must be one of {TASK_MODES}, got {task_mode!r}")
    attribute = label_attribute_name or job_name
    if len(attribute) > 127 or attribute.endswith(("-ref", "-metadata")) or attribute == "source":
        raise LabelingRequestError(
            f"label_attribute_name must be at most 127 characters and not 'source' nor end in -ref/-metadata, "
            f"got {attribute!r}"
        )
    public = limits.is_public_workteam(workteam_arn)
    for number, bound, setting in (
        (workers_per_object, limits.WORKERS_PER_OBJECT, "workers_per_object"),
        (task_time_limit_seconds, limits.TASK_TIME_LIMIT_SECONDS, "task_time_limit_seconds"),
        (task_availability_seconds, limits.task_availability(workteam_arn), "task_availability_seconds"),
    ):
        if not bound.lo <= number <= bound.hi:
            raise LabelingRequestError(f"{setting} must be within {bound.lo}-{bound.hi}, got {number}")
    if public and public_price_usd is None:
        raise LabelingRequestError("the public crowd workteam needs public_price_usd")
    if not public and public_price_usd is not None:
        raise LabelingRequestError("public_price_usd applies only to the public crowd workteam")
    for value, what in (
        (manifest_uri, "manifest_uri"),
        (output_uri, "output_uri"),
        (template_uri, "template_uri"),
        (categories_uri, "categories_uri"),
    ):
        _check_s3_uri(value, what)
    title, description, keywords = _task_texts(task_mode, title, description, keywords)
    human: dict[str, Any] = {
        "WorkteamArn": workteam_arn,
        "UiConfig": {"UiTemplateS3Uri": template_uri},
        "PreHumanTaskLambdaArn": pre_lambda_arn,
        "TaskKeywords": keywords,
        "TaskTitle": title,
        "TaskDescription": description,
        "NumberOfHumanWorkersPerDataObject": workers_per_object,
        "TaskTimeLimitInSeconds": task_time_limit_seconds,
        "TaskAvailabilityLifetimeInSeconds": task_availability_seconds,
        "AnnotationConsolidationConfig": {"AnnotationConsolidationLambdaArn": post_lambda_arn},
    }
    if max_concurrent_tasks is not None:
        if max_concurrent_tasks not in limits.MAX_CONCURRENT_TASKS:
            raise LabelingRequestError(
                f"max_concurrent_tasks must be within {limits.MAX_CONCURRENT_TASKS.span}, got {max_concurrent_tasks}"
            )
        human["MaxConcurrentTaskCount"] = max_concurrent_tasks
    if public_price_usd is not None:
        human["PublicWorkforceTaskPrice"] = {"AmountInUsd": dict(public_price_usd)}
    request: dict[str, Any] = {
        "LabelingJobName": job_name,
        "LabelAttributeName": attribute,
        "InputConfig": {"DataSource": {"S3DataSource": {"ManifestS3Uri": manifest_uri}}},
        "OutputConfig": {"S3OutputPath": output_uri},
        "RoleArn": role_arn,
        "LabelCategoryConfigS3Uri": categories_uri,
        "HumanTaskConfig": human,
    }
    if tags:
        request["Tags"] = [{"Key": k, "Value": v} for k, v in tags.items()]
    return request


# -- reading a job's input back -----------------------------------------------------------------
def job_input_manifest(job_arn: str, sagemaker: Any = None) -> str:
    """The ``ManifestS3Uri`` a labeling job was created with (DescribeLabelingJob)."""
    sagemaker = sagemaker or client("sagemaker")
    described = sagemaker.describe_labeling_job(LabelingJobName=job_name_from_arn(job_arn))
    return str(described["InputConfig"]["DataSource"]["S3DataSource"]["ManifestS3Uri"])
