"""One Ground Truth job: its state (`LabelingJob`), its I/O (manifest, templates, Lambdas, output files) and
the pure steps of its output.

`JobRuntime` reads and writes through moto's S3 and invokes Lambdas through moto's Lambda; the
functions below it check the annotation Lambdas' answers and build the output manifest and the
label counters without any I/O. Every problem ends the job Failed via `JobFailure`.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from labelloop_core import contract
from sandbox.host_clients import host_client
from sandbox.imagerefs import ImageRef, image_size, parse_s3_uri

_ELEMENT_NAME = re.compile(r"<crowd-bounding-box\b[^>]*?\bname\s*=\s*[\"']([^\"']+)[\"']", re.S)


@dataclass
class LabelingJob:
    """One emulated labeling job (request echo plus runtime state)."""

    request: dict[str, Any]
    arn: str
    account: str
    region: str
    status: str = "InProgress"
    failure_reason: str | None = None
    counters: dict[str, int] = field(
        default_factory=lambda: {
            "TotalLabeled": 0,
            "HumanLabeled": 0,
            "MachineLabeled": 0,
            "FailedNonRetryableError": 0,
            "Unlabeled": 0,
        }
    )
    output_uri: str | None = None
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    modified: datetime = field(default_factory=lambda: datetime.now(UTC))
    stop_requested: bool = False
    running: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    log: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.request["LabelingJobName"])

    def describe(self) -> dict[str, Any]:
        out = copy.deepcopy(self.request)
        out.update(
            {
                "LabelingJobArn": self.arn,
                "LabelingJobStatus": self.status,
                "LabelCounters": dict(self.counters),
                "CreationTime": self.created,
                "LastModifiedTime": self.modified,
                "JobReferenceCode": self.arn.rsplit("/", 1)[-1][:32] or "local",
            }
        )
        if self.failure_reason:
            out["FailureReason"] = self.failure_reason
        if self.output_uri:
            out["LabelingJobOutput"] = {"OutputDatasetS3Uri": self.output_uri}
        return out

    def summary(self) -> dict[str, Any]:
        hc = self.request["HumanTaskConfig"]
        out: dict[str, Any] = {
            "LabelingJobName": self.name,
            "LabelingJobArn": self.arn,
            "CreationTime": self.created,
            "LastModifiedTime": self.modified,
            "LabelingJobStatus": self.status,
            "LabelCounters": dict(self.counters),
            "WorkteamArn": hc["WorkteamArn"],
            "InputConfig": copy.deepcopy(self.request["InputConfig"]),
        }
        if hc.get("PreHumanTaskLambdaArn"):
            out["PreHumanTaskLambdaArn"] = hc["PreHumanTaskLambdaArn"]
        consolidation = hc.get("AnnotationConsolidationConfig", {}).get("AnnotationConsolidationLambdaArn")
        if consolidation:
            out["AnnotationConsolidationLambdaArn"] = consolidation
        if self.failure_reason:
            out["FailureReason"] = self.failure_reason
        if self.output_uri:
            out["LabelingJobOutput"] = {"OutputDatasetS3Uri": self.output_uri}
        return out


class JobFailure(Exception):
    """Ends a job Failed with this message as FailureReason."""


class JobRuntime:
    """Runs one job: Lambdas via moto's Lambda (in-process), files via moto's S3."""

    def __init__(self, job: LabelingJob) -> None:
        self.job = job
        self.s3 = host_client("s3", job.region)
        self.lam = host_client("lambda", job.region)
        self.hc = job.request["HumanTaskConfig"]
        self.attr = job.request["LabelAttributeName"]
        out_bucket, out_prefix = parse_s3_uri(job.request["OutputConfig"]["S3OutputPath"].rstrip("/") + "/x")
        self.out_bucket = out_bucket
        self.out_prefix = out_prefix[:-1] + job.name + "/"
        self.stamp = datetime.now(UTC).strftime("%Y-%m-%d_%H:%M:%S")

    def read_text(self, uri: str, what: str) -> str:
        try:
            bucket, key = parse_s3_uri(uri)
            return self.s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8")
        except Exception as exc:
            raise JobFailure(f"ClientError: cannot read {what} {uri}: {exc}") from exc

    def put_json(self, relative: str, body: Any, lines: bool = False) -> str:
        key = self.out_prefix + relative
        text = "".join(json.dumps(x) + "\n" for x in body) if lines else json.dumps(body)
        self.s3.put_object(Bucket=self.out_bucket, Key=key, Body=text.encode("utf-8"))
        return f"s3://{self.out_bucket}/{key}"

    def invoke(self, arn: str, payload: dict[str, Any], role: str) -> Any:
        try:
            result = self.lam.invoke(FunctionName=arn, Payload=json.dumps(payload).encode("utf-8"))
        except Exception as exc:
            raise JobFailure(f"ClientError: {role} Lambda {arn} could not be invoked: {exc}") from exc
        body = result["Payload"].read().decode("utf-8")
        if result.get("FunctionError"):
            raise JobFailure(f"ClientError: {role} Lambda {arn} failed: {body[:1000]}")
        try:
            return json.loads(body)
        except json.JSONDecodeError as exc:
            raise JobFailure(f"ClientError: {role} Lambda {arn} returned non-JSON: {body[:200]!r}") from exc

    def label_categories(self) -> list[str]:
        uri = self.job.request.get("LabelCategoryConfigS3Uri")
        if not uri:
            return []
        try:
            doc = json.loads(self.read_text(uri, "label category file"))
            return [str(entry["label"]) for entry in doc["labels"]]
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise JobFailure(f"ClientError: label category file {uri} is malformed: {exc}") from exc

    def element_name(self) -> str:
        uri = self.hc.get("UiConfig", {}).get("UiTemplateS3Uri")
        if not uri:
            return contract.ELEMENT_NAME
        match = _ELEMENT_NAME.search(self.read_text(uri, "worker task template"))
        return match.group(1) if match else contract.ELEMENT_NAME

    def manifest(self) -> list[dict[str, Any]]:
        uri = self.job.request["InputConfig"]["DataSource"]["S3DataSource"]["ManifestS3Uri"]
        lines = []
        for number, line in enumerate(self.read_text(uri, "input manifest").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise JobFailure(f"ClientError: input manifest line {number} is not JSON: {exc}") from exc
            if not isinstance(obj, dict) or not ("source-ref" in obj or "source" in obj):
                raise JobFailure(f"ClientError: input manifest line {number} has no source-ref or source")
            lines.append(obj)
        if not lines:
            raise JobFailure(f"ClientError: input manifest {uri} is empty")
        return lines

    def image(self, data_object: dict[str, Any]) -> tuple[ImageRef, int, int]:
        if "source-ref" not in data_object:
            return ImageRef(), 0, 0
        bucket, key = parse_s3_uri(str(data_object["source-ref"]))
        try:
            data = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as exc:
            raise JobFailure(f"ClientError: cannot read data object {data_object['source-ref']}: {exc}") from exc
        try:
            width, height, _ = image_size(data)
        except Exception:
            width = height = 0  # workers could not see it either; the post Lambda gets zero size
        return ImageRef(data=data, bucket=bucket, key=key), width, height


def task_input_of(answer: Any, pre_arn: str) -> tuple[bool, Any]:
    """(human annotation required, task input) from a pre-annotation answer; a malformed one fails the job."""
    if not isinstance(answer, dict) or "taskInput" not in answer:
        raise JobFailure(f"ClientError: pre-annotation Lambda {pre_arn} returned no taskInput: {str(answer)[:300]}")
    required = answer.get("isHumanAnnotationRequired", True)
    if not isinstance(required, bool):
        raise JobFailure(
            f"ClientError: pre-annotation Lambda {pre_arn} returned isHumanAnnotationRequired="
            f"{required!r}; it must be a boolean"
        )
    return required, answer["taskInput"]


def consolidated_contents(result: Any, post_arn: str) -> dict[str, dict[str, Any]]:
    """Consolidated content by dataset object id from a post-annotation answer; a malformed one fails the job."""
    if not isinstance(result, list):
        raise JobFailure(
            f"ClientError: post-annotation Lambda {post_arn} must return a list, got {type(result).__name__}"
        )
    consolidated: dict[str, dict[str, Any]] = {}
    for item in result:
        try:
            consolidated[str(item["datasetObjectId"])] = item["consolidatedAnnotation"]["content"]
        except (KeyError, TypeError) as exc:
            raise JobFailure(
                f"ClientError: post-annotation Lambda {post_arn} returned a malformed item {str(item)[:300]}"
            ) from exc
    return consolidated


def output_manifest(
    lines: list[dict[str, Any]],
    consolidated: dict[str, dict[str, Any]],
    sent: set[str],
    attr: str,
    job_name: str,
    counter_names: list[str],
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Each input line plus its consolidated content (with Ground Truth's metadata keys), and the counters.

    Objects sent to workers but missing from the consolidation are FailedNonRetryableError; objects
    never sent (skipped by the pre-annotation Lambda, unanswered, or after a stop) are Unlabeled.
    """
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    output_lines: list[dict[str, Any]] = []
    counters = dict.fromkeys(counter_names, 0)
    for index, data_object in enumerate(lines):
        object_id = str(index)
        line = dict(data_object)
        content = consolidated.get(object_id)
        if content is not None:
            line.update(content)
            metadata = dict(content.get(f"{attr}-metadata") or {})
            metadata.update(
                {
                    "type": "groundTruth/custom",
                    "job_name": f"labeling-job/{job_name}",
                    "creation_date": created,
                    "human-annotated": metadata.get("human-annotated", "yes"),
                }
            )
            line[f"{attr}-metadata"] = metadata
            counters["TotalLabeled"] += 1
            counters["HumanLabeled"] += 1
        elif object_id in sent:
            line[f"{attr}-metadata"] = {
                "failure-reason": "ClientError: the post-annotation Lambda returned no annotation for this object",
                "job-name": f"labeling-job/{job_name}",
                "creation-date": created,
            }
            counters["FailedNonRetryableError"] += 1
        else:
            counters["Unlabeled"] += 1
        output_lines.append(line)
    return output_lines, counters
