"""Helpers for e2e tests that run Ground Truth jobs against the deployed stack.

They build review-manifest lines carrying model pre-labels, following the shared conventions, and
job requests the way the workflow does (task files, plus ARNs from the stack outputs).
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from typing import Any

from PIL import Image

from labelloop_core.contract import META_KEY, PRELABEL_ATTRIBUTE
from sandbox.harness import LocalCloud

BOX_FIELDS = ("left", "top", "width", "height")


def png(width: int, height: int, shade: int = 90) -> bytes:
    """A plain PNG of the given size (the content never matters to these jobs)."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (shade, 120, 150)).save(buffer, "PNG")
    return buffer.getvalue()


def prelabeled_line(
    cloud: LocalCloud,
    key: str,
    image: bytes,
    prelabels: list[dict[str, Any]] | None,
    model_ids: Mapping[str, int],
    *,
    batch_id: str,
    width: int,
    height: int,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Upload ``image`` at ``key`` and return its manifest line.

    ``prelabels`` are ``{label, left, top, width, height}`` boxes, numbered through the model's own
    ``model_ids`` class map. ``None`` leaves the line without a ``labelloop-prelabel`` attribute.
    """
    cloud.put_bytes(key, image, "image/png")
    line: dict[str, Any] = {
        "source-ref": f"s3://{cloud.bucket}/{key}",
        META_KEY: {
            "dataset": "street",
            "batch_id": batch_id,
            "key": key,
            "labeled_key": key,
            "width": width,
            "height": height,
            **(meta or {}),
        },
    }
    if prelabels is None:
        return line
    line[PRELABEL_ATTRIBUTE] = {
        "image_size": [{"width": width, "height": height, "depth": 3}],
        "annotations": [{"class_id": model_ids[b["label"]], **{k: b[k] for k in BOX_FIELDS}} for b in prelabels],
    }
    line[f"{PRELABEL_ATTRIBUTE}-metadata"] = {
        "objects": [{"confidence": 0.7} for _ in prelabels],
        "class-map": {str(i): name for name, i in model_ids.items()},
        "type": "groundtruth/object-detection",
        "human-annotated": "no",
        "creation-date": "2026-11-23T10:00:00.000000",
        "job-name": PRELABEL_ATTRIBUTE,
        "image-confidence": 0.7 if prelabels else None,
        "model": "synthetic",
        "error": None,
    }
    return line


def create_workteam(cloud: LocalCloud, name: str) -> str:
    """An emulated private work team; returns its ARN."""
    return str(
        cloud.client("sagemaker").create_workteam(
            WorkteamName=name,
            Description="emulated labelers",
            MemberDefinitions=[
                {"CognitoMemberDefinition": {"UserPool": "us-east-1_abcDEF", "UserGroup": "g", "ClientId": "abc123"}}
            ],
        )["WorkteamArn"]
    )


def job_request(
    cloud: LocalCloud,
    *,
    job_name: str,
    manifest_key: str,
    lines: list[dict[str, Any]],
    labels: list[str],
    workteam_arn: str,
    task_mode: str = "adjust",
    **extra: Any,
) -> dict[str, Any]:
    """Write the input manifest and task files, then build the CreateLabelingJob request the workflow would."""
    from adapters.groundtruth import ensure_task_files, labeling_job_request

    bucket = cloud.bucket
    body = "".join(json.dumps(x) + "\n" for x in lines).encode()
    cloud.put_bytes(manifest_key, body, "application/jsonlines")
    files = ensure_task_files(bucket, "work/groundtruth/", labels, task_mode, s3=cloud.client("s3"))
    outputs = cloud.outputs
    return labeling_job_request(
        job_name=job_name,
        manifest_uri=f"s3://{bucket}/{manifest_key}",
        output_uri=f"s3://{bucket}/work/labeling-jobs/",
        role_arn=outputs["GroundTruthRoleArn"],
        workteam_arn=workteam_arn,
        pre_lambda_arn=outputs["PreAnnotationFunctionArn"],
        post_lambda_arn=outputs["PostAnnotationFunctionArn"],
        template_uri=files["template_uri"],
        categories_uri=files["categories_uri"],
        task_mode=task_mode,
        **extra,
    )
