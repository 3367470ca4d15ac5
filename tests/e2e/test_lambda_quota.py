"""A new AWS account's Lambda concurrency quota (10) in the emulation: the stack deploys and exports anyway.

Lambda keeps min(100, quota) of the account's concurrency unreserved, so with a quota of 10 it refuses
any reservation, and it throttles invocations beyond the free concurrency (HTTP 429
TooManyRequestsException). The emulation models both (`sandbox.lambda_quota`):

- the mini app's Hold function keeps a slot until the test releases it: a synchronous Invoke of
  another function is answered with Lambda's throttling error, PutFunctionConcurrency with Lambda's
  refusal, and a function's own reservation throttles its second invocation;
- LabelLoop deploys into a quota-10 account with its defaults (no reservation) and a distributed
  export fanning out over 20 shards with ``export.maxConcurrency`` 40 completes, every image and
  label written once, although shard invocations were throttled (the state machine retries them);
- with ``reservedConcurrency: true`` the same deploy fails with Lambda's message, and succeeds with
  the reservations in place in an account with the default quota.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from labelloop_core.boxes import Box
from labelloop_core.classes import ClassRegistry
from labelloop_core.contract import AUTO_ATTRIBUTE, META_KEY, OUTPUT_MANIFEST
from labelloop_core.manifest import bbox_label_line
from sandbox import lambda_quota
from sandbox.deploy import DeployError
from sandbox.harness import LocalCloud
from tests.e2e.conftest import MINI_STACK
from tests.e2e.exports import announce_and_await_export

pytestmark = pytest.mark.e2e

NEW_ACCOUNT_QUOTA = 10
REFUSAL = (
    "Specified ReservedConcurrentExecutions for function decreases account's UnreservedConcurrentExecution "
    "below its minimum value of [{}]."
)
IMAGES = 200
SHARD_SIZE = 10
DATASET = "quota"


def _start_hold(cloud: LocalCloud, release: str) -> tuple[threading.Thread, list[Any]]:
    """Invoke Hold on a thread (it runs until an object under ``release`` exists); wait until it holds a slot."""
    client = boto3.client("lambda", region_name=cloud.region)  # created here: the thread's own client
    results: list[Any] = []

    def invoke() -> None:
        response = client.invoke(FunctionName=cloud.outputs["HoldName"], Payload=json.dumps({"release": release}))
        results.append(json.loads(response["Payload"].read()))

    thread = threading.Thread(target=invoke, daemon=True)
    thread.start()
    cloud.wait_for(lambda: lambda_quota.running() == 1, timeout=60, message="Hold is running")
    return thread, results


def _release(cloud: LocalCloud, release: str, thread: threading.Thread, results: list[Any]) -> None:
    cloud.client("s3").put_object(Bucket=cloud.outputs["DataBucketName"], Key=release + "go", Body=b"")
    thread.join(timeout=60)
    assert results == [{"released": True}]


def _throttle_of(error: ClientError) -> tuple[int, str, str, str]:
    response: dict[str, Any] = error.response
    return (
        response["ResponseMetadata"]["HTTPStatusCode"],
        response["Error"]["Code"],
        response["Error"]["Message"],
        response["Reason"],
    )


def test_a_full_account_throttles_invokes_and_refuses_reservations(mini_assembly: Path) -> None:
    with LocalCloud.start(mini_assembly, stack_name=MINI_STACK, lambda_concurrency_quota=1) as cloud:
        # One attempt per call, so the count below is Lambda's, not boto3's retries of the throttle.
        lam = boto3.client("lambda", region_name=cloud.region, config=Config(retries={"total_max_attempts": 1}))
        echo = cloud.outputs["EchoName"]
        thread, results = _start_hold(cloud, "release/a/")
        with pytest.raises(ClientError) as throttled:
            lam.invoke(FunctionName=echo, Payload=b"{}")
        assert _throttle_of(throttled.value) == (
            429,
            "TooManyRequestsException",
            "Rate Exceeded.",
            "ConcurrentInvocationLimitExceeded",
        )
        assert throttled.value.response["Type"] == "User"
        with pytest.raises(ClientError) as refused:
            lam.put_function_concurrency(FunctionName=echo, ReservedConcurrentExecutions=1)
        assert refused.value.response["Error"]["Code"] == "InvalidParameterValueException"
        assert refused.value.response["Error"]["Message"] == REFUSAL.format(1)
        _release(cloud, "release/a/", thread, results)
        # The slot is free again: the same call now runs.
        assert json.loads(lam.invoke(FunctionName=echo, Payload=b"{}")["Payload"].read())["function"] == echo
        assert lambda_quota.throttles() == {echo: 1}


def test_a_reservation_caps_its_function(mini_assembly: Path) -> None:
    with LocalCloud.start(mini_assembly, stack_name=MINI_STACK) as cloud:
        assert lambda_quota.quota() == lambda_quota.DEFAULT_QUOTA
        lam, hold = cloud.client("lambda"), cloud.outputs["HoldName"]
        lam.put_function_concurrency(FunctionName=hold, ReservedConcurrentExecutions=1)
        thread, results = _start_hold(cloud, "release/b/")
        with pytest.raises(ClientError) as throttled:
            lam.invoke(FunctionName=hold, Payload=json.dumps({"release": "release/b/"}))
        assert _throttle_of(throttled.value)[3] == "ReservedFunctionConcurrentInvocationLimitExceeded"
        _release(cloud, "release/b/", thread, results)
        # 1,000 - 1 reserved leaves more than 100 unreserved; 1,000 - 901 does not.
        with pytest.raises(ClientError, match=r"minimum value of \[100\]"):
            lam.put_function_concurrency(FunctionName=cloud.outputs["EchoName"], ReservedConcurrentExecutions=900)


# ---------------------------------------------------------------------------------- LabelLoop


@pytest.fixture(scope="module")
def fanout_assembly(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LabelLoop's defaults (no reservation), every export distributed: 20 shards, up to 40 at once."""
    from infra.synth import synthesize

    context = {"export": {"distributedAbove": 0, "shardSize": SHARD_SIZE, "maxConcurrency": 40}}
    return synthesize(tmp_path_factory.mktemp("quota-fanout") / "cdk.out", context)


@pytest.fixture(scope="module")
def reserved_assembly(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from infra.synth import synthesize

    return synthesize(tmp_path_factory.mktemp("quota-reserved") / "cdk.out", {"reservedConcurrency": True})


def _source(i: int) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + i.to_bytes(4, "big") + b"\x00" * 55


def _manifest(bucket: str) -> tuple[bytes, int]:
    """IMAGES labeled lines, each with its own source image; and how many boxes they hold."""
    registry = ClassRegistry(["object"])
    rows, boxes_total = [], 0
    for i in range(IMAGES):
        boxes = [Box("object", 1 + (i + b) % 50, 2 + b, 10 + i % 7, 12) for b in range(i % 3)]
        boxes_total += len(boxes)
        source = f"s3://{bucket}/work/e2e-quota/src-{i:03d}.png"
        line = bbox_label_line(source, AUTO_ATTRIBUTE, (64, 64, 3), boxes, registry, i % 4 == 0, "labelloop-x")
        line[META_KEY] = {"key": f"incoming/{DATASET}/img-{i:03d}.png", "label_attribute": AUTO_ATTRIBUTE}
        rows.append(json.dumps(line))
    return ("\n".join(rows) + "\n").encode(), boxes_total


def test_a_new_account_deploys_the_defaults_and_a_throttled_distributed_export_loses_nothing(
    fanout_assembly: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with LocalCloud.start(fanout_assembly, lambda_concurrency_quota=NEW_ACCOUNT_QUOTA) as cloud:
        bucket, s3 = cloud.bucket, cloud.client("s3")
        sources = set()
        for i in range(IMAGES):
            s3.put_object(Bucket=bucket, Key=f"work/e2e-quota/src-{i:03d}.png", Body=_source(i))
            sources.add(hashlib.md5(_source(i)).hexdigest())
        body, boxes = _manifest(bucket)
        manifest_key = f"work/batches/{DATASET}/b1/{OUTPUT_MANIFEST}"
        s3.put_object(Bucket=bucket, Key=manifest_key, Body=body)
        latest = announce_and_await_export(
            cloud,
            DATASET,
            manifest_key,
            timeout=600,
            interval=0.5,
            message="the throttled distributed export published latest.json",
        )
        shard_function = cloud.function_name("ExportDistributedExportShard")
        throttled = lambda_quota.throttles()
        with capsys.disabled():
            print(
                f"\nquota {NEW_ACCOUNT_QUOTA}: {IMAGES // SHARD_SIZE} shards, {throttled.get(shard_function, 0)} shard "
                f"invocations throttled and retried, at most {lambda_quota.peak()} invocations at once"
            )
        version_prefix = f"exports/{DATASET}/{latest['version']}/"
        document = cloud.read_json(version_prefix + "export.json")
        assert throttled.get(shard_function, 0) > 0, "the scenario needs throttled shard invocations"
        assert lambda_quota.peak() <= NEW_ACCOUNT_QUOTA
        assert latest["images"] == IMAGES == document["counts"]["images"]
        assert [s["images"] for s in document["shards"]] == [SHARD_SIZE] * (IMAGES // SHARD_SIZE)
        images = cloud.list_keys(version_prefix + "images/")
        etags = {s3.head_object(Bucket=bucket, Key=k)["ETag"].strip('"') for k in images}
        assert len(images) == IMAGES and etags == sources  # every source copied once
        labels = [k for k in cloud.list_keys(version_prefix + "labels/") if k.endswith(".txt")]
        lines = sum(len(s3.get_object(Bucket=bucket, Key=k)["Body"].read().splitlines()) for k in labels)
        assert len(labels) == IMAGES and lines == boxes


def test_reserved_concurrency_on_fails_the_deploy_on_a_new_account_with_lambdas_message(
    reserved_assembly: Path,
) -> None:
    with pytest.raises(DeployError) as failed, LocalCloud.start(reserved_assembly, lambda_concurrency_quota=10):
        pass
    assert REFUSAL.format(NEW_ACCOUNT_QUOTA) in str(failed.value)
    assert "ExportExportYolo" in str(failed.value)
    # An account with the default quota takes the reservation.
    with LocalCloud.start(reserved_assembly) as cloud:
        lam = cloud.client("lambda")
        reserved = lam.get_function_concurrency(FunctionName=cloud.function_name("ExportExportYolo"))
        assert reserved["ReservedConcurrentExecutions"] == 5
