"""The Label Studio reconcile handler's entry points under moto: webhook secret, schedule, bad events."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from adapters import labelstudio as labelstudio_client
from adapters import labelstudio_review
from adapters.aws import client
from adapters.labelstudio_review import WEBHOOK_HEADER, LabelStudioReview, LabelStudioSettings, parse_credentials
from adapters.review_backends import ReviewBatch
from handlers import review_sync
from labelloop_core.contract import DEFAULT_WORK_PREFIX, REVIEW_MANIFEST, VERIFY_MANIFEST
from labelloop_core.labelstudio import LabelStudioError
from tests.handlers.aws import data_bucket, moto_world, role

BUCKET = "data"


@pytest.fixture
def cfg() -> Iterator[review_sync.ReviewSyncSettings]:
    with moto_world(config={"lambda": {"use_docker": False}}):
        labelstudio_review._SECRETS.clear()
        data_bucket(BUCKET)
        sm = boto3.client("secretsmanager", region_name="us-east-1")
        token = sm.create_secret(Name="ls-token", SecretString="tok-123456")["ARN"]
        hook = sm.create_secret(Name="ls-hook", SecretString="s3cr3t-value")["ARN"]
        settings = LabelStudioSettings(
            url="http://127.0.0.1:9",  # nothing listens: no call may reach it in these tests
            token_secret_arn=token,
            namespace="LabelLoop",
            labels=("car",),
            model_version="none:none",
            webhook_secret_arn=hook,
        )
        yield review_sync.ReviewSyncSettings(bucket=BUCKET, work_prefix=DEFAULT_WORK_PREFIX, labelstudio=settings)


def url_event(headers: dict[str, str]) -> dict[str, object]:
    return {"requestContext": {"http": {"method": "POST"}}, "headers": headers, "body": "{}"}


def sync_function() -> str:
    """The reconcile function as moto knows it (moto runs no code for an asynchronous invocation)."""
    lambda_role = role("sync")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("index.py", "def handler(event, context):\n    return event\n")
    return str(
        boto3.client("lambda", region_name="us-east-1").create_function(
            FunctionName="review-sync", Runtime="python3.12", Role=lambda_role, Handler="index.handler",
            Code={"ZipFile": buffer.getvalue()},
        )["FunctionName"]
    )  # fmt: skip


def invocations() -> list[dict[str, Any]]:
    """The Invoke calls the handler makes through its (lazily created, cached) Lambda client."""
    calls: list[dict[str, Any]] = []
    client("lambda").meta.events.register(
        "provide-client-params.lambda.Invoke", lambda params, **_: calls.append(params)
    )
    return calls


def test_webhook_without_the_shared_secret_is_refused(cfg: review_sync.ReviewSyncSettings) -> None:
    calls = invocations()
    assert review_sync.on_webhook(url_event({}), cfg, "review-sync")["statusCode"] == 403
    assert review_sync.on_webhook(url_event({WEBHOOK_HEADER: "guess"}), cfg, "review-sync")["statusCode"] == 403
    assert calls == []  # nothing queued for a caller without the secret


def test_webhook_queues_the_sweep_and_answers_at_once_without_calling_label_studio(
    cfg: review_sync.ReviewSyncSettings,
) -> None:
    name = sync_function()
    s3 = boto3.client("s3", region_name="us-east-1")
    doc = {"job_name": "labelloop-a-1", "bucket": BUCKET, "dataset": "a", "batch_id": "1",
           "batch_prefix": "work/batches/a/1/", "token": "t"}  # fmt: skip
    s3.put_object(Bucket=BUCKET, Key="work/labelstudio/open/labelloop-a-1.json", Body=json.dumps(doc).encode())
    calls = invocations()
    # An open review whose sweep would have to call the (unreachable) server: the webhook must not wait for it.
    ok = review_sync.on_webhook(url_event({WEBHOOK_HEADER.lower(): "s3cr3t-value"}), cfg, name)
    assert ok["statusCode"] == 202 and json.loads(ok["body"]) == {"sweep": "queued"}
    (call,) = calls
    assert call["FunctionName"] == name and call["InvocationType"] == "Event"
    assert json.loads(call["Payload"]) == {"action": "sweep"}


def test_the_function_url_request_is_routed_to_the_webhook_with_the_function_s_own_name(
    cfg: review_sync.ReviewSyncSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = sync_function()
    monkeypatch.setattr(review_sync, "settings", lambda: cfg)
    calls = invocations()
    context = type("Context", (), {"function_name": name})()
    answer = review_sync.handler(url_event({WEBHOOK_HEADER: "s3cr3t-value"}), context)
    assert answer["statusCode"] == 202 and [c["FunctionName"] for c in calls] == [name]


def test_a_batch_that_fails_to_reconcile_does_not_stop_the_others(
    cfg: review_sync.ReviewSyncSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[float] = []
    monkeypatch.setattr(labelstudio_client.time, "sleep", waits.append)  # the client's back-off, not waited here
    s3 = boto3.client("s3", region_name="us-east-1")
    doc = {"job_name": "labelloop-a-1", "bucket": BUCKET, "dataset": "a", "batch_id": "1",
           "batch_prefix": "work/batches/a/1/", "token": "t"}  # fmt: skip
    s3.put_object(Bucket=BUCKET, Key="work/labelstudio/open/labelloop-a-1.json", Body=json.dumps(doc).encode())
    s3.put_object(Bucket=BUCKET, Key="work/batches/a/1/labelstudio.json", Body=b'{"project_id": 1}')
    s3.put_object(Bucket=BUCKET, Key=f"work/batches/a/1/{REVIEW_MANIFEST}", Body=b"")
    result = review_sync.sweep(cfg)
    assert result["reviews"]["labelloop-a-1"].startswith("error: LabelStudioApiError")
    assert "tok-123456" not in json.dumps(result)  # never the token, even in an error
    assert waits and all(w > 0 for w in waits)  # the unreachable server was retried with back-off


def test_the_secret_is_a_bare_token_or_json_and_errors_never_echo_it() -> None:
    assert parse_credentials(" abc \n").token == "abc"
    full = parse_credentials(json.dumps({"token": "abc", "s3": {"endpoint": "http://x", "accessKeyId": "k"}}))
    assert full.token == "abc" and full.s3.endpoint == "http://x" and full.s3.access_key_id == "k"
    for bad in ("", "{not json secret-value", json.dumps({"s3": {}}), json.dumps({"token": "t", "s3": "x"})):
        with pytest.raises(LabelStudioError) as info:
            parse_credentials(bad)
        assert "secret-value" not in str(info.value)


def test_unexpected_events_are_refused_with_what_was_expected(
    cfg: review_sync.ReviewSyncSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(review_sync, "settings", lambda: cfg)
    with pytest.raises(ValueError, match="scheduled event"):
        review_sync.handler({"source": "aws.s3"}, None)
    assert review_sync.handler({"detail-type": "Scheduled Event", "source": "aws.events"}, None) == {"reviews": {}}


def test_each_verify_then_adjust_stage_is_reconciled_from_its_own_state_and_manifest(
    cfg: review_sync.ReviewSyncSettings,
) -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    prefix = "work/batches/a/1/"
    doc = {"job_name": "labelloop-a-1-verify", "bucket": BUCKET, "dataset": "a", "batch_id": "1",
           "batch_prefix": prefix, "token": "t", "stage": "verify", "task_mode": "verify"}  # fmt: skip
    s3.put_object(Bucket=BUCKET, Key="work/labelstudio/open/labelloop-a-1-verify.json", Body=json.dumps(doc).encode())
    # Another stage's state (adjust mode's single review) must not be mistaken for the verify stage's.
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}labelstudio.json", Body=b'{"project_id": 1}')
    assert review_sync.sweep(cfg) == {"reviews": {"labelloop-a-1-verify": "waiting"}}  # its import has not run
    batch = ReviewBatch.for_stage(BUCKET, "a", "1", prefix, "labelloop-a-1-verify", "work/", "verify")
    assert (batch.manifest_key, batch.task_mode, batch.stage) == (f"{prefix}{VERIFY_MANIFEST}", "verify", "verify")
    assert LabelStudioReview.state_key(batch) == f"{prefix}labelstudio-verify.json"
    single = ReviewBatch.for_stage(BUCKET, "a", "1", prefix, "labelloop-a-1", "work/", "")
    assert (single.manifest_key, single.task_mode, LabelStudioReview.state_key(single)) == (
        f"{prefix}{REVIEW_MANIFEST}", "adjust", f"{prefix}labelstudio.json")  # fmt: skip
    with pytest.raises(ValueError, match="review stage"):
        ReviewBatch.for_stage(BUCKET, "a", "1", prefix, "j", "work/", "review")
