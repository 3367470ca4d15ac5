"""Model backends on moto: Rekognition Custom Labels, SageMaker endpoint adapters, retries and failures."""

from __future__ import annotations

import json
import random

import boto3
import pytest

from adapters.models import (
    ENDPOINT_ADAPTERS,
    FAILED,
    RETRYABLE,
    UNAVAILABLE,
    EndpointAdapter,
    ImageInput,
    ModelSettings,
    Prelabeler,
    RekognitionBackend,
    RetryPolicy,
    SageMakerBackend,
    SettingsError,
    backend_for,
    classify,
    register_endpoint_adapter,
    sniff_content_type,
)
from labelloop_core.contract import META_KEY
from labelloop_core.prelabels import ModelOutputError
from tests.handlers import prelabel_support
from tests.handlers.prelabel_support import (
    BUCKET,
    ENDPOINT,
    LABELS,
    REGION,
    REK_ARN,
    FaultyClient,
    client_error,
    put_images_and_shard,
    queue_endpoint_results,
    read_timeout,
    throttled,
)

aws = prelabel_support.aws  # the moto fixture


class Sleeps:
    """Records requested pauses instead of sleeping."""

    def __init__(self) -> None:
        self.pauses: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)


def images(s3, n: int) -> list[ImageInput]:
    _, lines = put_images_and_shard(s3, [f"img{i}.jpg" for i in range(n)])
    return [ImageInput(BUCKET, line[META_KEY]["key"], 64, 48, s3=s3) for line in lines]


def rekognition(client=None) -> RekognitionBackend:
    return RekognitionBackend(client or boto3.client("rekognition", region_name=REGION), REK_ARN, LABELS, 0.05)


def sagemaker(fmt: str = "builtin", client=None) -> SageMakerBackend:
    client = client or boto3.client("sagemaker-runtime", region_name=REGION)
    return SageMakerBackend(client, ENDPOINT, ENDPOINT_ADAPTERS[fmt], LABELS, 0.05)


# -- settings ---------------------------------------------------------------------------------------
def test_settings_from_env_validates_and_names_the_variable():
    base = {"DATA_BUCKET": "b", "LABELS": '["car","person"]'}
    cfg = ModelSettings.from_env(base)
    assert cfg.kind == "none" and cfg.labels == ("car", "person") and cfg.auto_accept_threshold is None
    assert cfg.model_id == "none"
    cfg = ModelSettings.from_env(
        {**base, "MODEL_KIND": "sagemaker", "ENDPOINT_NAME": "ep", "AUTO_ACCEPT_THRESHOLD": "0.7"}
    )
    assert cfg.model_id == "sagemaker:ep:builtin" and cfg.auto_accept_threshold == 0.7
    assert ModelSettings.from_env({**base, "LABELS": "car, person"}).labels == ("car", "person")
    cases = {
        "DATA_BUCKET": {"LABELS": '["a"]'},
        "LABELS": {"DATA_BUCKET": "b", "LABELS": "[]"},
        "MODEL_KIND": {**base, "MODEL_KIND": "openai"},
        "MODEL_ARN": {**base, "MODEL_KIND": "rekognition"},
        "ENDPOINT_NAME": {**base, "MODEL_KIND": "sagemaker"},
        "ENDPOINT_FORMAT": {**base, "MODEL_KIND": "sagemaker", "ENDPOINT_NAME": "e", "ENDPOINT_FORMAT": "onnx"},
        "AUDIT_FRACTION": {**base, "AUDIT_FRACTION": "1.5"},
        "MIN_PAIRS": {**base, "MIN_PAIRS": "2.5"},
        "AUTO_ACCEPT_THRESHOLD": {**base, "AUTO_ACCEPT_THRESHOLD": "high"},
    }
    for variable, env in cases.items():
        with pytest.raises(SettingsError, match=variable):
            ModelSettings.from_env(env)


def test_sniff_content_type():
    from tests.intake_images import jpeg, png

    assert sniff_content_type(jpeg()) == "image/jpeg"
    assert sniff_content_type(png()) == "image/png"
    assert sniff_content_type(b"????") == "application/x-image"


# -- backends on moto -------------------------------------------------------------------------------
def test_rekognition_backend_on_moto(aws):
    (image,) = images(aws, 1)
    det = rekognition().detect(image)
    # moto's canned answer: one "MyLogo" box at 77.77 confidence, ratios of the image size
    assert [b.label for b in det.boxes] == ["MyLogo"]
    assert det.confidence == pytest.approx(0.7777297)
    assert det.boxes[0].left == pytest.approx(0.0792453736 * 64)


def test_rekognition_request_uses_s3_object_and_scaled_min_confidence(aws):
    (image,) = images(aws, 1)
    client = FaultyClient(boto3.client("rekognition", region_name=REGION), [])
    rekognition(client).detect(image)
    assert client.calls == [
        {
            "method": "detect_custom_labels",
            "ProjectVersionArn": REK_ARN,
            "Image": {"S3Object": {"Bucket": BUCKET, "Name": image.key}},
            "MinConfidence": pytest.approx(5.0),
        }
    ]


def test_sagemaker_builtin_on_moto_queue(aws):
    first, second = images(aws, 2)
    queue_endpoint_results(
        [
            json.dumps({"prediction": [[1, 0.9, 0.1, 0.1, 0.5, 0.6], [0, 0.3, 0.0, 0.0, 0.2, 0.2]]}),
            json.dumps({"prediction": []}),
        ]
    )
    det = sagemaker().detect(first)
    assert [(b.label, b.confidence) for b in det.boxes] == [("person", 0.9), ("MyLogo", 0.3)]
    assert det.boxes[0].left == pytest.approx(6.4) and det.boxes[0].bottom == pytest.approx(0.6 * 48)
    assert det.confidence == 0.3
    assert sagemaker().detect(second).boxes == ()


def test_sagemaker_ultralytics_on_moto_queue(aws):
    (image,) = images(aws, 1)
    dets = [{"name": "person", "class": 1, "confidence": 0.75, "box": {"x1": 4, "y1": 5, "x2": 30, "y2": 40}}]
    queue_endpoint_results([json.dumps(dets)])
    det = sagemaker("ultralytics").detect(image)
    assert [(b.label, b.left, b.top, b.width, b.height) for b in det.boxes] == [("person", 4, 5, 26, 35)]


@pytest.mark.parametrize(
    "body",
    ["<html>garbage</html>", '{"prediction": [[0, NaN, 0, 0, 1, 1]]}', '{"prediction": {"a": 1}}', "body"],
)
def test_sagemaker_garbage_is_a_recorded_error_without_retry(aws, body):
    (image,) = images(aws, 1)
    queue_endpoint_results([body])
    sleeps = Sleeps()
    result = Prelabeler(sagemaker(), sleep=sleeps).predict(image)
    assert result.detections is None and result.attempts == 1 and sleeps.pauses == []
    assert result.error is not None and result.error.startswith("unusable model answer")


def test_endpoint_adapter_registry_plugs_in_new_formats(aws):
    (image,) = images(aws, 1)

    def parse(body, labels, width, height):
        from labelloop_core.boxes import Box

        doc = json.loads(body)
        return [Box(labels[0], *d["xywh"], d["p"]) for d in doc["objects"]], []

    adapter = register_endpoint_adapter(EndpointAdapter("test-xywh", parse))
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_endpoint_adapter(EndpointAdapter("test-xywh", parse))
        queue_endpoint_results([json.dumps({"objects": [{"xywh": [1, 2, 10, 10], "p": 0.5}]})])
        backend = SageMakerBackend(boto3.client("sagemaker-runtime", region_name=REGION), ENDPOINT, adapter, LABELS)
        assert [b.label for b in backend.detect(image).boxes] == ["MyLogo"]
        assert backend.model_id == "sagemaker:detector:test-xywh"
    finally:
        ENDPOINT_ADAPTERS.pop("test-xywh")


def test_backend_for_settings():
    base = {"DATA_BUCKET": "b", "LABELS": '["a"]'}
    assert backend_for(ModelSettings.from_env(base)) is None
    rek = backend_for(ModelSettings.from_env({**base, "MODEL_KIND": "rekognition", "MODEL_ARN": REK_ARN}), object())
    assert isinstance(rek, RekognitionBackend) and rek.model_id == f"rekognition:{REK_ARN}"
    env = {**base, "MODEL_KIND": "sagemaker", "ENDPOINT_NAME": "ep", "ENDPOINT_FORMAT": "ultralytics"}
    sm = backend_for(ModelSettings.from_env(env), object())
    assert isinstance(sm, SageMakerBackend) and sm.adapter is ENDPOINT_ADAPTERS["ultralytics"]


# -- retries and failure policy ---------------------------------------------------------------------
def test_throttling_is_retried_with_bounded_jittered_backoff(aws):
    (image,) = images(aws, 1)
    real = boto3.client("rekognition", region_name=REGION)
    faults = [
        throttled(),
        client_error("ProvisionedThroughputExceededException", "slow down", "DetectCustomLabels"),
        client_error("ServiceUnavailable", "", "DetectCustomLabels", status=503),
    ]
    client = FaultyClient(real, faults)
    sleeps = Sleeps()
    policy = RetryPolicy(max_attempts=6, base_delay=0.2, max_delay=5.0)
    labeler = Prelabeler(rekognition(client), policy, sleep=sleeps, rng=random.Random(7))
    result = labeler.predict(image)
    assert result.error is None and result.attempts == 4 and len(result.detections.boxes) == 1
    assert len(sleeps.pauses) == 3 and labeler.retries == 3
    for attempt, pause in enumerate(sleeps.pauses, start=1):
        assert 0 <= pause <= min(5.0, 0.2 * 2 ** (attempt - 1))


def test_throttling_gives_up_after_max_attempts(aws):
    (image,) = images(aws, 1)
    client = FaultyClient(boto3.client("rekognition", region_name=REGION), [throttled() for _ in range(10)])
    sleeps = Sleeps()
    result = Prelabeler(rekognition(client), RetryPolicy(max_attempts=4), sleep=sleeps).predict(image)
    assert result.detections is None and result.attempts == 4 and len(sleeps.pauses) == 3
    assert "gave up after 4 attempts" in result.error and "ThrottlingException" in result.error


def test_model_not_ready_and_timeouts_are_retried(aws):
    (image,) = images(aws, 1)
    queue_endpoint_results([json.dumps({"prediction": [[0, 0.8, 0.1, 0.1, 0.4, 0.4]]})])
    faults = [
        client_error("ModelNotReadyException", "loading", "InvokeEndpoint", status=429),
        read_timeout(),
        client_error("ModelError", "upstream 503", "InvokeEndpoint", status=424, OriginalStatusCode=503),
    ]
    client = FaultyClient(boto3.client("sagemaker-runtime", region_name=REGION), faults)
    result = Prelabeler(sagemaker(client=client), sleep=Sleeps()).predict(image)
    assert result.error is None and result.attempts == 4 and result.detections.confidence == 0.8


def test_stopped_model_is_recorded_for_every_image_without_more_calls(aws):
    imgs = images(aws, 3)
    stopped = client_error("ResourceNotReadyException", "project version is not running", "DetectCustomLabels")
    client = FaultyClient(boto3.client("rekognition", region_name=REGION), [stopped])
    labeler = Prelabeler(rekognition(client), sleep=Sleeps())
    results = [labeler.predict(img) for img in imgs]
    assert len(client.calls) == 1
    assert all(r.detections is None and "model unavailable" in r.error for r in results)
    assert [r.attempts for r in results] == [1, 0, 0]


def test_missing_endpoint_is_unavailable(aws):
    (image,) = images(aws, 1)
    missing = client_error("ValidationError", f"Endpoint {ENDPOINT} of account 123 not found.", "InvokeEndpoint")
    client = FaultyClient(boto3.client("sagemaker-runtime", region_name=REGION), [missing])
    result = Prelabeler(sagemaker(client=client), sleep=Sleeps()).predict(image)
    assert "model unavailable" in result.error and result.attempts == 1


def test_malformed_rekognition_answer_and_bad_image_fail_one_image_only(aws):
    imgs = images(aws, 3)
    faults = [
        {"CustomLabels": "not-a-list"},
        client_error("InvalidImageFormatException", "Request has invalid image format", "DetectCustomLabels"),
    ]
    client = FaultyClient(boto3.client("rekognition", region_name=REGION), faults)
    labeler = Prelabeler(rekognition(client), sleep=Sleeps())
    first, second, third = (labeler.predict(img) for img in imgs)
    assert first.error.startswith("unusable model answer") and "InvalidImageFormat" in second.error
    assert third.error is None and len(third.detections.boxes) == 1  # the model still serves the next image


def test_time_budget_stops_retrying_before_the_lambda_times_out(aws):
    (image,) = images(aws, 1)
    client = FaultyClient(boto3.client("rekognition", region_name=REGION), [throttled() for _ in range(10)])
    clock = {"left": 100.0}
    sleeps = Sleeps()

    def sleep(seconds: float) -> None:
        sleeps(seconds)
        clock["left"] -= 30.0  # each retry costs a lot of (pretend) time

    labeler = Prelabeler(
        rekognition(client), RetryPolicy(max_attempts=10), time_left=lambda: clock["left"], reserve=45.0, sleep=sleep
    )
    result = labeler.predict(image)
    assert result.detections is None and "time budget exhausted" in result.error
    # 100 s left, 45 s reserve, 30 s per pause: two calls and two pauses fit, a third call does not
    assert result.attempts == 2 and len(sleeps.pauses) == 2
    # and with no time left at all, the model is not called
    clock["left"] = 10.0
    calls = len(client.calls)
    assert "time budget exhausted" in labeler.predict(image).error and len(client.calls) == calls


def test_classify_table():
    assert classify(throttled())[0] == RETRYABLE
    assert classify(client_error("Whatever", "", "X", status=503))[0] == RETRYABLE
    assert classify(client_error("ResourceNotFoundException", "", "X"))[0] == UNAVAILABLE
    assert classify(client_error("AccessDeniedException", "", "X"))[0] == UNAVAILABLE
    assert classify(client_error("ModelError", "", "X", status=424, OriginalStatusCode=400))[0] == FAILED
    assert classify(client_error("ModelError", "", "X", status=424, OriginalStatusCode=500))[0] == FAILED
    assert classify(client_error("ModelError", "", "X", status=424, OriginalStatusCode=503))[0] == RETRYABLE
    assert classify(ModelOutputError("nan"))[0] == FAILED
    assert classify(read_timeout())[0] == RETRYABLE
    assert classify(KeyError("Body"))[0] == FAILED


def test_model_clients_leave_retries_to_the_prelabeler(aws):
    from adapters.models import model_client, reset_model_clients

    reset_model_clients()
    for service in ("rekognition", "sagemaker-runtime"):
        retries = model_client(service).meta.config.retries
        assert retries["total_max_attempts"] == 1 and retries["mode"] == "standard"
    reset_model_clients()
