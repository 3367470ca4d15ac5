"""The fault injector on moto: rules resolved against botocore's models, errors in each service's wire
format that botocore parses and retries, bucket-policy denials, crashes, and only function calls hit."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from moto import mock_aws

from sandbox import faults
from sandbox.faults import FaultInjector, FaultSpecError, InjectedCrash, parse_crash, parse_fault


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("s3:CopyObject", "expected SERVICE:OPERATION:RATE"),
        ("s3:CopyObject:1.5", "RATE must be a number within [0, 1]"),
        ("s3:CopyObject:often", "RATE must be a number"),
        ("stepfunction:SendTaskSuccess:0.1", "unknown service 'stepfunction' (did you mean stepfunctions?)"),
        ("s3:CopyObjects:0.1", "s3 has no operation 'CopyObjects' (did you mean CopyObject?)"),
        ("cloudwatch:PutMetricData:0.1", "not emulated for cloudwatch's"),
    ],
)
def test_bad_rules_are_refused_with_a_hint(text: str, message: str) -> None:
    with pytest.raises(FaultSpecError, match=re.escape(message)):
        parse_fault(text)


def test_rules_resolve_to_botocore_names() -> None:
    rule = parse_fault("stepfunctions:SendTaskSuccess:0.5")
    assert (rule.event_service, rule.protocol, rule.rate) == ("sfn", "json", 0.5)
    assert parse_fault("s3:*:1").operation == "*"
    assert parse_crash("Export") == faults.CrashRule("Export", 3)
    assert parse_crash("Prelabel:2").call == 2
    with pytest.raises(FaultSpecError):
        parse_crash("Prelabel:0")


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        yield
    faults.uninstall()


def _function_client(monkeypatch: pytest.MonkeyPatch, service: str, attempts: int = 1) -> Any:
    """A client created the way a deployed function creates one (its User-Agent names the runtime)."""
    monkeypatch.setenv("AWS_EXECUTION_ENV", "AWS_Lambda_python3.12")
    config = Config(retries={"mode": "standard", "max_attempts": attempts})
    client = boto3.Session().client(service, region_name="us-east-1", config=config)
    monkeypatch.delenv("AWS_EXECUTION_ENV")
    return client


@pytest.mark.parametrize(
    ("service", "call", "codes"),
    [
        ("s3", lambda c: c.list_buckets(), {"SlowDown", "InternalError"}),
        ("stepfunctions", lambda c: c.list_state_machines(), {"ThrottlingException", "ServiceUnavailable"}),
        ("sagemaker", lambda c: c.list_endpoints(), {"ThrottlingException", "ServiceUnavailable"}),
        ("sns", lambda c: c.list_topics(), {"Throttling", "ServiceUnavailable"}),
        ("sqs", lambda c: c.list_queues(), {"ThrottlingException", "ServiceUnavailable"}),
    ],
)
def test_errors_parse_as_the_services_throttling_or_5xx(
    aws: None, monkeypatch: pytest.MonkeyPatch, service: str, call: Any, codes: set[str]
) -> None:
    injector = FaultInjector([parse_fault(f"{service}:*:1")], seed=3)
    faults.install(injector)
    client = _function_client(monkeypatch, service, attempts=3)
    seen = set()
    for _ in range(6):
        with pytest.raises(ClientError) as info:
            call(client)
        seen.add(info.value.response["Error"]["Code"])
        assert info.value.response["ResponseMetadata"]["RetryAttempts"] == 3  # botocore retried them
    assert seen == codes
    assert sum(injector.counts.values()) == 24  # 6 calls x (1 + 3 retries)
    boto3.client(service, region_name="us-east-1")  # the harness's own clients are never faulted
    call(boto3.client(service, region_name="us-east-1"))


def test_transient_faults_are_absorbed_by_retries_and_reproducible(aws: None, monkeypatch: pytest.MonkeyPatch) -> None:
    def run(seed: int, bucket: str) -> dict[str, int]:
        injector = FaultInjector([parse_fault("s3:PutObject:0.3")], seed=seed, backoff_scale=0.0)
        faults.install(injector)
        client = _function_client(monkeypatch, "s3", attempts=10)
        client.create_bucket(Bucket=bucket)
        for i in range(40):
            client.put_object(Bucket=bucket, Key=f"k{i}", Body=b"x")
        assert len(client.list_objects_v2(Bucket=bucket)["Contents"]) == 40
        return dict(injector.counts)

    first = run(5, "bucket-one")
    assert 5 <= sum(first.values()) <= 30
    assert run(5, "bucket-two") == first


def test_bucket_policy_denials_and_crashes(aws: None, monkeypatch: pytest.MonkeyPatch) -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="data")
    s3.put_object(Bucket="data", Key="in/a.jpg", Body=b"a")
    policy = {
        "Statement": [
            {"Effect": "Deny", "Principal": "*", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::data/exports/*"},
        ]
    }
    s3.put_bucket_policy(Bucket="data", Policy=json.dumps(policy))
    injector = FaultInjector(bucket_policies=True, crash=parse_crash("Worker:3"))
    faults.install(injector)
    client = _function_client(monkeypatch, "s3")
    client.put_object(Bucket="data", Key="work/ok.txt", Body=b"fine")
    with pytest.raises(ClientError) as info:
        client.copy_object(Bucket="data", Key="exports/v1/a.jpg", CopySource={"Bucket": "data", "Key": "in/a.jpg"})
    assert info.value.response["Error"]["Code"] == "AccessDenied"
    assert "exports/v1/a.jpg" in info.value.response["Error"]["Message"]
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "LabelLoop-Worker-ABC")
    client.get_object(Bucket="data", Key="in/a.jpg")  # this function's first call
    client.get_object(Bucket="data", Key="in/a.jpg")
    with pytest.raises(InjectedCrash, match="LabelLoop-Worker-ABC"):
        client.get_object(Bucket="data", Key="in/a.jpg")
    client.get_object(Bucket="data", Key="in/a.jpg")  # once only
    assert injector.summary()["crashed"] == ["LabelLoop-Worker-ABC at s3:GetObject (AWS call 3)"]
    assert injector.summary()["injected"] == {"s3:CopyObject:AccessDenied": 1}


def test_emulator_clients_made_while_a_function_runs_are_never_faulted(aws: None) -> None:
    """Regression: a faulted two-batch run hung until its timeout.

    While a function runs, the process environment and boto3's default session are the function's,
    so clients the emulator created then (moto's Step Functions interpreter makes one per Lambda
    task) carried the function's User-Agent: the injector failed or "crashed" the interpreter's own
    calls, ending its thread and leaving the execution waiting forever. Host clients are created
    once no function runs, and the interpreter uses them.
    """
    import os
    import threading

    from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils

    from sandbox import host_clients, lambda_runtime

    injector = FaultInjector([parse_fault("s3:*:1.0")], crash=parse_crash("Shard:1"))
    faults.install(injector)
    host_clients.install()
    running, release, made = threading.Event(), threading.Event(), {}

    def function_run() -> None:  # what `lambda_runtime` does around a handler, without a handler
        with lambda_runtime._LOCK:
            saved_session, saved_env = boto3.DEFAULT_SESSION, dict(os.environ)
            os.environ.update({"AWS_EXECUTION_ENV": "AWS_Lambda_python3.14", "AWS_LAMBDA_FUNCTION_NAME": "Shard"})
            boto3.DEFAULT_SESSION = None
            running.set()
            release.wait(30)
            boto3.DEFAULT_SESSION = saved_session
            os.environ.clear()
            os.environ.update(saved_env)

    def emulator() -> None:
        made["host"] = host_clients.host_client("s3", "us-east-1")
        made["interpreter"] = lambda_eval_utils.boto_client_for("us-east-1", "s3")

    try:
        function = threading.Thread(target=function_run)
        function.start()
        running.wait(30)
        creator = threading.Thread(target=emulator)
        creator.start()
        creator.join(2)  # a host client waits for the function to end; a function's would be made now
        release.set()
        function.join()
        creator.join()
        for client in (made["host"], made["interpreter"]):
            client.create_bucket(Bucket="host-bucket")
            client.put_object(Bucket="host-bucket", Key="k", Body=b"x")  # neither failed nor crashed
        assert injector.summary()["calls"] == {} and not injector.crashed
    finally:
        host_clients.uninstall()
        faults.uninstall()
