"""Shared helpers for the pre-label/route/calibrate handler tests (moto S3, batch files, fault clients).

The fault clients wrap a REAL moto client and only add what moto cannot produce (throttling,
a stopped model, timeouts, a malformed Rekognition answer); every successful call goes to moto.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from botocore.exceptions import ClientError, ReadTimeoutError

from labelloop_core.contract import DEFAULT_WORK_PREFIX, META_KEY, Env, batch_prefix
from tests.handlers.aws import BUCKET, REGION, data_bucket, forget, moto_world, set_env
from tests.intake_images import jpeg

DATASET = "street"
BATCH_ID = "b-0001"
BATCH_PREFIX = batch_prefix(DEFAULT_WORK_PREFIX, DATASET, BATCH_ID)
LABELS = ["MyLogo", "person"]
REK_ARN = "arn:aws:rekognition:us-east-1:123456789012:project/logos/version/logos.2026-01-01T00.00.00/1700000000000"
ENDPOINT = "detector"


def reset_modules() -> None:
    """Forget cached clients and settings of every module under test."""
    from adapters.models import reset_model_clients
    from handlers import calibrate, prelabel, route

    forget(prelabel, route, calibrate)
    reset_model_clients()


def binary_safe_sagemaker_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let moto's InvokeEndpoint accept image bytes (moto 5.2.5 decodes request bodies as UTF-8 and fails).

    The body is kept raw and handed to moto's own handler as latin-1 text, so moto's result queue
    (keyed by request body) works unchanged for binary images.
    """
    from moto.sagemakerruntime.responses import SageMakerRuntimeResponse

    original = SageMakerRuntimeResponse.invoke_endpoint

    def invoke_endpoint(self: Any) -> Any:
        if isinstance(self.body, bytes):
            self.body = self.body.decode("latin-1")
        return original(self)

    monkeypatch.setattr(SageMakerRuntimeResponse, "use_raw_body", True, raising=False)
    monkeypatch.setattr(SageMakerRuntimeResponse, "invoke_endpoint", invoke_endpoint)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """moto with the data bucket and the base environment (model kind none)."""
    binary_safe_sagemaker_runtime(monkeypatch)
    with moto_world():
        reset_modules()
        s3 = data_bucket()
        env = {Env.DATA_BUCKET: BUCKET, Env.LABELS: json.dumps(LABELS), Env.MODEL_KIND: "none", Env.AUDIT_FRACTION: "0"}
        unset = (Env.MODEL_ARN, Env.ENDPOINT_NAME, Env.ENDPOINT_FORMAT, Env.AUTO_ACCEPT_THRESHOLD, Env.MIN_PAIRS)
        set_env(monkeypatch, env, unset=unset)
        yield s3
        reset_modules()


def use_model(monkeypatch: pytest.MonkeyPatch, kind: str, fmt: str = "builtin") -> None:
    """Switch the environment to a model backend (settings are re-read)."""
    monkeypatch.setenv("MODEL_KIND", kind)
    if kind == "rekognition":
        monkeypatch.setenv("MODEL_ARN", REK_ARN)
    if kind == "sagemaker":
        monkeypatch.setenv("ENDPOINT_NAME", ENDPOINT)
        monkeypatch.setenv("ENDPOINT_FORMAT", fmt)
    reset_modules()


def meta_line(key: str, width: int = 64, height: int = 48, batch_id: str = BATCH_ID) -> dict[str, Any]:
    """An input-manifest line as build_manifest writes it."""
    return {
        "source-ref": f"s3://{BUCKET}/{key}",
        META_KEY: {
            "dataset": DATASET,
            "batch_id": batch_id,
            "key": key,
            "labeled_key": key,
            "width": width,
            "height": height,
        },
    }


def put_images_and_shard(s3: Any, names: list[str], shard: str = "00000.jsonl") -> tuple[str, list[dict[str, Any]]]:
    """Upload distinct JPEGs ``incoming/street/<name>`` and a shard listing them; returns (shard key, lines)."""
    lines = []
    for index, name in enumerate(names):
        key = f"incoming/{DATASET}/{name}"
        s3.put_object(Bucket=BUCKET, Key=key, Body=jpeg(64, 48, color=(index * 7 % 255, 30, 30)))
        lines.append(meta_line(key))
    shard_key = f"{BATCH_PREFIX}shards/{shard}"
    write_jsonl(s3, shard_key, lines)
    return shard_key, lines


def write_jsonl(s3: Any, key: str, rows: list[dict[str, Any]]) -> None:
    body = "".join(json.dumps(row) + "\n" for row in rows).encode()
    s3.put_object(Bucket=BUCKET, Key=key, Body=body)


def read_jsonl(s3: Any, key: str) -> list[dict[str, Any]]:
    body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()
    return [json.loads(line) for line in body.splitlines() if line.strip()]


def queue_endpoint_results(bodies: list[str], content_type: str = "application/json") -> None:
    """Queue moto sagemaker-runtime answers (its documented moto-api endpoint; one per distinct request body)."""
    results = [
        {"Body": body, "ContentType": content_type, "InvokedProductionVariant": "prod", "CustomAttributes": ""}
        for body in bodies
    ]
    response = requests.post(
        "http://motoapi.amazonaws.com/moto-api/static/sagemaker/endpoint-results",
        json={"results": results, "region": REGION},
        timeout=5,
    )
    assert response.status_code == 201, response.text


def client_error(code: str, message: str, operation: str, status: int = 400, **extra: Any) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}, **extra},
        operation,
    )


class FaultyClient:
    """A real moto model client with scripted faults in front: each call pops the next fault (or succeeds).

    ``faults`` items are exceptions to raise, or dicts to return as a (malformed) Rekognition answer.
    """

    def __init__(self, real: Any, faults: list[Any]) -> None:
        self.real = real
        self.faults = list(faults)
        self.calls: list[dict[str, Any]] = []

    def _next(self, method: str, kwargs: dict[str, Any]) -> Any:
        self.calls.append({"method": method, **{k: v for k, v in kwargs.items() if k != "Body"}})
        if self.faults:
            fault = self.faults.pop(0)
            if isinstance(fault, BaseException):
                raise fault
            if fault is not None:
                return fault
        return getattr(self.real, method)(**kwargs)

    def detect_custom_labels(self, **kwargs: Any) -> Any:
        return self._next("detect_custom_labels", kwargs)

    def invoke_endpoint(self, **kwargs: Any) -> Any:
        return self._next("invoke_endpoint", kwargs)


def throttled(operation: str = "DetectCustomLabels") -> ClientError:
    return client_error("ThrottlingException", "Rate exceeded", operation)


def read_timeout() -> ReadTimeoutError:
    return ReadTimeoutError(endpoint_url="https://runtime.sagemaker.us-east-1.amazonaws.com")
