"""The Label Studio reconcile handler's entry points under moto: webhook secret, schedule, bad events."""

from __future__ import annotations

import json
from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from adapters import labelstudio_review
from adapters.aws import reset_clients
from adapters.labelstudio_review import WEBHOOK_HEADER, LabelStudioSettings, parse_credentials
from handlers import review_sync
from labelloop_core.labelstudio import LabelStudioError

BUCKET = "data"


@pytest.fixture
def cfg() -> Iterator[review_sync.Settings]:
    with mock_aws():
        reset_clients()
        labelstudio_review._SECRETS.clear()
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
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
        yield review_sync.Settings(bucket=BUCKET, work_prefix="work/", labelstudio=settings)
        reset_clients()


def url_event(headers: dict[str, str]) -> dict[str, object]:
    return {"requestContext": {"http": {"method": "POST"}}, "headers": headers, "body": "{}"}


def test_webhook_without_the_shared_secret_is_refused(cfg: review_sync.Settings) -> None:
    assert review_sync.on_webhook(url_event({}), cfg)["statusCode"] == 403
    assert review_sync.on_webhook(url_event({WEBHOOK_HEADER: "guess"}), cfg)["statusCode"] == 403
    ok = review_sync.on_webhook(url_event({WEBHOOK_HEADER.lower(): "s3cr3t-value"}), cfg)
    assert ok["statusCode"] == 200 and json.loads(ok["body"]) == {"reviews": 0}


def test_a_batch_that_fails_to_reconcile_does_not_stop_the_others(cfg: review_sync.Settings) -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    doc = {"job_name": "labelloop-a-1", "bucket": BUCKET, "dataset": "a", "batch_id": "1",
           "batch_prefix": "work/batches/a/1/", "token": "t"}  # fmt: skip
    s3.put_object(Bucket=BUCKET, Key="work/labelstudio/open/labelloop-a-1.json", Body=json.dumps(doc).encode())
    s3.put_object(Bucket=BUCKET, Key="work/batches/a/1/labelstudio.json", Body=b'{"project_id": 1}')
    s3.put_object(Bucket=BUCKET, Key="work/batches/a/1/review.manifest", Body=b"")
    result = review_sync.sweep(cfg)
    assert result["reviews"]["labelloop-a-1"].startswith("error: LabelStudioApiError")
    assert "tok-123456" not in json.dumps(result)  # never the token, even in an error


def test_the_secret_is_a_bare_token_or_json_and_errors_never_echo_it() -> None:
    assert parse_credentials(" abc \n").token == "abc"
    full = parse_credentials(json.dumps({"token": "abc", "s3": {"endpoint": "http://x", "accessKeyId": "k"}}))
    assert full.token == "abc" and full.s3.endpoint == "http://x" and full.s3.access_key_id == "k"
    for bad in ("", "{not json secret-value", json.dumps({"s3": {}}), json.dumps({"token": "t", "s3": "x"})):
        with pytest.raises(LabelStudioError) as info:
            parse_credentials(bad)
        assert "secret-value" not in str(info.value)


def test_unexpected_events_are_refused_with_what_was_expected(
    cfg: review_sync.Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(review_sync, "settings", lambda: cfg)
    with pytest.raises(ValueError, match="scheduled event"):
        review_sync.handler({"source": "aws.s3"}, None)
    assert review_sync.handler({"detail-type": "Scheduled Event", "source": "aws.events"}, None) == {"reviews": {}}
