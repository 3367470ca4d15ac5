"""adapters.groundtruth: task files written idempotently (moto S3) and CreateLabelingJob requests
validated against botocore's SageMaker model (types, required members, lengths, patterns, ranges)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import botocore.session
import pytest
from botocore.model import Shape
from botocore.validate import ParamValidator

from adapters.groundtruth import (
    LabelingRequestError,
    ensure_task_files,
    label_categories_document,
    labeling_job_request,
    template_text,
)
from labelloop_core.classes import ClassRegistry
from labelloop_core.contract import REVIEW_MANIFEST
from tests.handlers.aws import ACCOUNT, BUCKET, data_bucket, moto_world


@pytest.fixture
def s3() -> Iterator[Any]:
    with moto_world():
        yield data_bucket()


def _objects(s3: Any) -> dict[str, str]:
    listing = s3.list_object_versions(Bucket=BUCKET)
    return {v["Key"]: v["VersionId"] for v in listing.get("Versions", [])}


def test_task_files_are_written_once_and_match_the_documented_shape(s3: Any) -> None:
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    first = ensure_task_files(BUCKET, "work/groundtruth", ["Car", "Person"], "adjust", s3=s3)
    versions = _objects(s3)
    assert len(versions) == 2
    again = ensure_task_files(BUCKET, "work/groundtruth/", ["Car", "Person"], "adjust", s3=s3)
    assert again == first
    assert _objects(s3) == versions  # nothing rewritten: no new versions
    assert first["template_uri"].startswith(f"s3://{BUCKET}/work/groundtruth/templates/adjust-")
    categories = json.loads(s3.get_object(Bucket=BUCKET, Key=first["categories_uri"].split("/", 3)[3])["Body"].read())
    assert categories == {"document-version": "2018-11-28", "labels": [{"label": "Car"}, {"label": "Person"}]}
    assert ClassRegistry.from_label_categories(categories).names == ["Car", "Person"]
    template = s3.get_object(Bucket=BUCKET, Key=first["template_uri"].split("/", 3)[3])
    assert template["Body"].read().decode() == template_text("adjust")
    assert template["ContentType"].startswith("text/html")


def test_changed_labels_or_mode_get_new_files_and_old_ones_stay(s3: Any) -> None:
    adjust = ensure_task_files(BUCKET, "work/groundtruth/", ["Car"], "adjust", s3=s3)
    verify = ensure_task_files(BUCKET, "work/groundtruth/", ["Car", "Bus"], "verify", s3=s3)
    assert adjust["template_uri"] != verify["template_uri"]
    assert adjust["categories_uri"] != verify["categories_uri"]
    assert len(_objects(s3)) == 4


def test_a_tampered_file_is_restored(s3: Any) -> None:
    files = ensure_task_files(BUCKET, "work/groundtruth/", ["Car"], "adjust", s3=s3)
    key = files["template_uri"].split("/", 3)[3]
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"<html>broken</html>")
    ensure_task_files(BUCKET, "work/groundtruth/", ["Car"], "adjust", s3=s3)
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode() == template_text("adjust")


@pytest.mark.parametrize("labels", [[], ["Car", "Car"], [""], ["  "]])
def test_bad_label_sets_are_refused(labels: list[str]) -> None:
    with pytest.raises(ValueError, match="labels"):
        label_categories_document(labels)


# -- CreateLabelingJob against the service model ------------------------------------------------
def _request(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "job_name": "street-b1-adjust",
        "manifest_uri": f"s3://{BUCKET}/work/batches/street/b1/{REVIEW_MANIFEST}",
        "output_uri": f"s3://{BUCKET}/work/labeling-jobs/",
        "role_arn": f"arn:aws:iam::{ACCOUNT}:role/LabelLoop-GroundTruthRole",
        "workteam_arn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:workteam/private-crowd/labelers",
        "pre_lambda_arn": f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:LabelLoop-Pre",
        "post_lambda_arn": f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:LabelLoop-Post",
        "template_uri": f"s3://{BUCKET}/work/groundtruth/templates/adjust-0123.liquid.html",
        "categories_uri": f"s3://{BUCKET}/work/groundtruth/label-categories/0123.json",
    }
    values.update(overrides)
    return labeling_job_request(**values)


# The model's patterns are Java regexes; its Unicode classes (letters, separators, numbers, used
# inside character classes) become Python's word/space/digit classes.
_JAVA_CLASSES = {r"\p{L}": r"\w", r"\p{Z}": r"\s", r"\p{N}": r"\d"}


def _python_pattern(pattern: str) -> str:
    for java, python in _JAVA_CLASSES.items():
        pattern = pattern.replace(java, python)
    return pattern


def _model_errors(shape: Shape, value: Any, path: str = "") -> list[str]:
    """Constraints ParamValidator leaves out: max lengths, patterns and numeric ranges."""
    errors: list[str] = []
    meta = shape.metadata
    if shape.type_name == "structure":
        for name, member in shape.members.items():
            if name in value:
                errors += _model_errors(member, value[name], f"{path}.{name}")
    elif shape.type_name == "list":
        if "max" in meta and len(value) > meta["max"]:
            errors.append(f"{path}: more than {meta['max']} items")
        for index, item in enumerate(value):
            errors += _model_errors(shape.member, item, f"{path}[{index}]")
    elif shape.type_name == "string":
        if "max" in meta and len(value) > meta["max"]:
            errors.append(f"{path}: longer than {meta['max']}")
        if "pattern" in meta and not re.fullmatch(_python_pattern(meta["pattern"]), value):
            errors.append(f"{path}: {value!r} does not match {meta['pattern']}")
    elif shape.type_name in ("integer", "long") and (
        ("min" in meta and value < meta["min"]) or ("max" in meta and value > meta["max"])
    ):
        errors.append(f"{path}: {value} outside [{meta.get('min')}, {meta.get('max')}]")
    return errors


def _validate(request: dict[str, Any]) -> None:
    model = botocore.session.get_session().get_service_model("sagemaker")
    shape = model.operation_model("CreateLabelingJob").input_shape
    report = ParamValidator().validate(request, shape)
    assert not report.has_errors(), report.generate_report()
    assert _model_errors(shape, request) == []


@pytest.mark.parametrize("mode", ["adjust", "verify"])
def test_request_is_valid_for_the_sagemaker_api(mode: str) -> None:
    request = _request(task_mode=mode, workers_per_object=3, max_concurrent_tasks=100, tags={"app": "labelloop"})
    _validate(request)
    human = request["HumanTaskConfig"]
    assert human["UiConfig"] == {"UiTemplateS3Uri": f"s3://{BUCKET}/work/groundtruth/templates/adjust-0123.liquid.html"}
    assert human["PreHumanTaskLambdaArn"].endswith("LabelLoop-Pre")
    assert human["AnnotationConsolidationConfig"]["AnnotationConsolidationLambdaArn"].endswith("LabelLoop-Post")
    assert human["NumberOfHumanWorkersPerDataObject"] == 3
    assert request["LabelAttributeName"] == "street-b1-adjust"
    assert request["LabelCategoryConfigS3Uri"].endswith(".json")
    assert request["InputConfig"]["DataSource"]["S3DataSource"]["ManifestS3Uri"].endswith(REVIEW_MANIFEST)
    assert ("Check" in human["TaskTitle"]) == (mode == "verify")


def test_public_crowd_needs_a_price() -> None:
    public = "arn:aws:sagemaker:us-east-1:394669845002:workteam/public-crowd/default"
    with pytest.raises(LabelingRequestError, match="public_price_usd"):
        _request(workteam_arn=public, task_availability_seconds=43200)
    with pytest.raises(LabelingRequestError, match="60-43200"):
        _request(workteam_arn=public, public_price_usd={"Cents": 3})
    request = _request(
        workteam_arn=public,
        task_availability_seconds=43200,
        public_price_usd={"Dollars": 0, "Cents": 3, "TenthFractionsOfACent": 6},
    )
    _validate(request)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"job_name": "Bad_Name"}, "job_name"),
        ({"job_name": "x" * 64}, "job_name"),
        ({"label_attribute_name": "boxes-metadata"}, "label_attribute_name"),
        ({"label_attribute_name": "image-ref"}, "label_attribute_name"),
        ({"workers_per_object": 0}, "workers_per_object"),
        ({"task_time_limit_seconds": 29000}, "task_time_limit_seconds"),
        ({"task_availability_seconds": 864001}, "task_availability_seconds"),
        ({"keywords": ["bad-keyword!"]}, "keywords"),
        ({"keywords": []}, "keywords"),
        ({"title": "t" * 129}, "title"),
        ({"manifest_uri": "https://x/y"}, "manifest_uri"),
        ({"task_mode": "classify"}, "task_mode"),
        ({"max_concurrent_tasks": 0}, "max_concurrent_tasks"),
        ({"public_price_usd": {"Cents": 1}}, "public crowd"),
    ],
)
def test_invalid_values_fail_before_the_api(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(LabelingRequestError, match=message):
        _request(**overrides)


def test_the_model_check_itself_catches_violations() -> None:
    """Guard for the checker above: a request edited past the limits must be reported."""
    request = _request()
    request["HumanTaskConfig"]["NumberOfHumanWorkersPerDataObject"] = 10
    request["HumanTaskConfig"]["TaskKeywords"] = ["ok", "not-ok!"]
    request["LabelingJobName"] = "bad_name"
    model = botocore.session.get_session().get_service_model("sagemaker")
    errors = _model_errors(model.operation_model("CreateLabelingJob").input_shape, request)
    assert len(errors) == 3, errors
