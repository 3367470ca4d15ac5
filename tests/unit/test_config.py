"""Typed configuration: safe defaults and errors that name the context key."""

from __future__ import annotations

import pytest

from infra.config import ConfigError, LabelLoopConfig, config_from_context, parse_config


def test_defaults_are_safe_for_a_first_deploy() -> None:
    config = parse_config({})
    assert config == LabelLoopConfig()
    assert config.workteam_arn is None
    assert config.model.kind == "none"
    assert config.auto_accept_threshold is None
    assert config.encryption == "aws-managed"
    assert parse_config({"encryption": "kms"}).encryption == "kms"


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"labels": []}, "labelloop.labels"),
        ({"labels": ["car", "car"]}, "labelloop.labels"),
        ({"labels": [" car"]}, "labelloop.labels"),
        ({"workteamArn": "not-an-arn"}, "labelloop.workteamArn"),
        ({"model": {"kind": "rekognition"}}, "labelloop.model.projectVersionArn"),
        ({"model": {"kind": "sagemaker"}}, "labelloop.model.endpointName"),
        ({"model": {"kind": "yolo"}}, "labelloop.model.kind"),
        ({"taskMode": "draw"}, "labelloop.taskMode"),
        ({"workersPerObject": 0}, "labelloop.workersPerObject"),
        ({"autoAcceptThreshold": 1.5}, "labelloop.autoAcceptThreshold"),
        ({"incomingPrefix": "incoming"}, "labelloop.incomingPrefix"),
        ({"incomingPrefix": "work/in/"}, "labelloop.incomingPrefix"),
        ({"logRetentionDays": 2}, "labelloop.logRetentionDays"),
        ({"calibration": {"auditFraction": 2}}, "labelloop.calibration.auditFraction"),
        ({"labelz": ["a"]}, "labelloop.labelz"),
        ({"encryption": "sse-kms"}, "labelloop.encryption"),
        ({"export": {"distributedAbove": -1}}, "labelloop.export.distributedAbove"),
        ({"export": {"shardSize": 0}}, "labelloop.export.shardSize"),
        ({"export": {"maxConcurrency": 10_001}}, "labelloop.export.maxConcurrency"),
        ({"export": {"shardsize": 10}}, "labelloop.export.shardsize"),
        ({"export": 5}, "labelloop.export"),
        ({"reservedConcurrency": "yes"}, "labelloop.reservedConcurrency"),
        ({"reservedConcurrency": 5}, "labelloop.reservedConcurrency"),
        ({"reservedConcurrency": {"export": 0}}, "labelloop.reservedConcurrency.export"),
        ({"reservedConcurrency": {"labelStudioSync": 1001}}, "labelloop.reservedConcurrency.labelStudioSync"),
        ({"reservedConcurrency": {"sync": 2}}, "labelloop.reservedConcurrency.sync"),
        ({"cost": {"ground_truth_per_object": -0.01}}, "labelloop.cost.ground_truth_per_object"),
        ({"cost": {"workforce_per_task": "cheap"}}, "labelloop.cost.workforce_per_task"),
        ({"cost": {"label_studio_per_task": True}}, "labelloop.cost.label_studio_per_task"),
        ({"cost": {"rekognition_inference_unit_hour": float("nan")}}, "labelloop.cost.rekognition_inference_unit_hour"),
        ({"cost": {"gt_per_object": 0.1}}, "labelloop.cost.gt_per_object"),
        ({"cost": 0.08}, "labelloop.cost"),
    ],
)
def test_invalid_context_names_the_key(raw: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert str(info.value).startswith(key + ":"), str(info.value)


def test_command_line_overrides_parse_json_and_csv() -> None:
    context = {
        "labelloop": {"labels": ["object"]},
        "labelloop.labels": "car, person",
        "labelloop.autoAcceptThreshold": "0.8",
        "labelloop.model.kind": "sagemaker",
        "labelloop.model.endpointName": "my-detector",
    }
    config = config_from_context(context.get)
    assert config.labels == ("car", "person")
    assert config.auto_accept_threshold == 0.8
    assert config.model.kind == "sagemaker"
    assert config.model.endpoint_name == "my-detector"


def test_full_valid_config() -> None:
    config = parse_config(
        {
            "labels": ["car", "person"],
            "workteamArn": "arn:aws:sagemaker:eu-west-1:123456789012:workteam/private-crowd/my-team",
            "model": {
                "kind": "rekognition",
                "projectVersionArn": "arn:aws:rekognition:eu-west-1:123456789012:project/p/version/v1/1",
            },
            "taskMode": "verify",
            "workersPerObject": 3,
        }
    )
    assert config.task_mode == "verify"
    assert config.workers_per_object == 3


def test_reviewer_time_constants_are_context_with_bounds() -> None:
    config = parse_config({"verifySecondsPerBox": 2, "drawSecondsPerBox": 20.5})
    assert (config.verify_seconds_per_box, config.draw_seconds_per_box) == (2.0, 20.5)
    assert parse_config({}).draw_seconds_per_box == 34.5
    with pytest.raises(ConfigError, match="drawSecondsPerBox"):
        parse_config({"drawSecondsPerBox": 0})


def test_public_crowd_workteam_is_refused_at_synth() -> None:
    """The public crowd needs a task price and at most 12 hours' availability; LabelLoop configures neither,
    so every review would fail at StartReview. Synth refuses it, naming the key and what to use instead."""
    public = "arn:aws:sagemaker:us-east-1:394669845002:workteam/public-crowd/default"
    with pytest.raises(ConfigError) as info:
        parse_config({"workteamArn": public})
    message = str(info.value)
    assert message.startswith("labelloop.workteamArn:")
    assert "public crowd" in message and "private or vendor work team" in message
    private = "arn:aws:sagemaker:us-east-1:123456789012:workteam/private-crowd/team"
    assert parse_config({"workteamArn": private}).workteam_arn == private


def test_config_and_lambda_adapters_share_one_set_of_limits() -> None:
    """The bounds synth enforces are the ones the review request builder enforces (labelloop_core.limits)."""
    from adapters.groundtruth import LabelingRequestError, labeling_job_request
    from labelloop_core import limits

    assert parse_config({"workersPerObject": limits.WORKERS_PER_OBJECT.hi}).workers_per_object == 9
    with pytest.raises(ConfigError, match=r"\[1, 9\]"):
        parse_config({"workersPerObject": limits.WORKERS_PER_OBJECT.hi + 1})
    with pytest.raises(ConfigError, match="valFraction"):
        parse_config({"valFraction": limits.VAL_FRACTION.hi + 0.05})
    with pytest.raises(LabelingRequestError, match="workers_per_object must be within 1-9"):
        labeling_job_request(
            job_name="j",
            manifest_uri="s3://b/m",
            output_uri="s3://b/o/",
            role_arn="arn:aws:iam::123456789012:role/r",
            workteam_arn="arn:aws:sagemaker:us-east-1:123456789012:workteam/private-crowd/t",
            pre_lambda_arn="arn:aws:lambda:us-east-1:123456789012:function:pre",
            post_lambda_arn="arn:aws:lambda:us-east-1:123456789012:function:post",
            template_uri="s3://b/t.html",
            categories_uri="s3://b/c.json",
            workers_per_object=limits.WORKERS_PER_OBJECT.hi + 1,
        )


def test_export_fan_out_keys_default_from_limits_and_override_one_by_one() -> None:
    from labelloop_core import limits

    config = parse_config({})
    assert config.export.distributed_above == limits.EXPORT_DISTRIBUTED_ABOVE.default
    assert config.export.shard_size == limits.EXPORT_SHARD_SIZE.default
    assert config.export.max_concurrency == limits.EXPORT_MAX_CONCURRENCY.default
    context = {"labelloop": {"export": {"shardSize": 500}}, "labelloop.export.distributedAbove": "0"}
    export = config_from_context(context.get).export
    assert (export.distributed_above, export.shard_size) == (0, 500)


def test_reserved_concurrency_is_off_by_default_and_on_per_function_or_all() -> None:
    from labelloop_core import limits

    assert parse_config({}).reserved_concurrency.total == 0
    assert parse_config({"reservedConcurrency": False}).reserved_concurrency.total == 0
    on = parse_config({"reservedConcurrency": True}).reserved_concurrency
    assert (on.export, on.label_studio_sync) == (
        limits.EXPORT_RESERVED_CONCURRENCY.default,
        limits.LABEL_STUDIO_SYNC_RESERVED_CONCURRENCY.default,
    )
    some = parse_config({"reservedConcurrency": {"export": 3, "labelStudioSync": False}}).reserved_concurrency
    assert (some.export, some.label_studio_sync, some.total) == (3, None, 3)
    # `cdk deploy -c labelloop.reservedConcurrency=true` arrives as a string.
    assert config_from_context({"labelloop.reservedConcurrency": "true"}.get).reserved_concurrency == on


def test_cost_overrides_reach_the_price_table() -> None:
    from labelloop_core.pricing import PRICES

    config = parse_config({"cost": {"workforce_per_task": 0.036, "label_studio_per_task": "0.25"}})
    assert dict(config.cost.overrides) == {"workforce_per_task": 0.036, "label_studio_per_task": 0.25}
    table = config.cost.table()
    assert table["workforce_per_task"] == 0.036 and table["label_studio_per_task"] == 0.25
    assert table["ground_truth_per_object"] == PRICES["ground_truth_per_object"].usd
    assert config.cost.env_value() == '{"label_studio_per_task":0.25,"workforce_per_task":0.036}'
    assert parse_config({}).cost.env_value() == "{}"


@pytest.mark.parametrize("value", ["-1", "abc", "NaN", "true"])
def test_a_bad_price_on_the_command_line_names_its_key(value: str) -> None:
    context = {"labelloop": {}, "labelloop.cost.ground_truth_per_object": value}
    with pytest.raises(ConfigError, match=r"^labelloop\.cost\.ground_truth_per_object: "):
        config_from_context(context.get)
    ok = {"labelloop": {}, "labelloop.cost.ground_truth_per_object": "0.04"}
    assert config_from_context(ok.get).cost.table()["ground_truth_per_object"] == 0.04
