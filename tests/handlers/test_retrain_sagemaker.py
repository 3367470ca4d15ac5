"""The retrain steps on the SageMaker backend, under moto plus the emulation's training jobs and endpoint updates:
each phase, promotion (the endpoint's weight moves), rejection (its config comes back), a Failed job's reason."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import boto3
import pytest
from moto import mock_aws

from adapters.export_writer import S3Destination, write_export
from adapters.model_pin import pinned_settings
from adapters.models import ImageInput, backend_for
from adapters.training_writer import build_training_set, write_training_data
from handlers import retrain
from handlers.route import state_key
from labelloop_core.classes import ClassRegistry
from labelloop_core.contract import MODEL_OUTPUT_PREFIX, OUTPUT_MANIFEST, SAGEMAKER_ARTIFACT
from labelloop_core.export import ExportPlanner
from sandbox import model_emulation, sagemaker_training
from sandbox.learned_detector import LearnedDetector
from sandbox.scenes import Scene
from tests.handlers.retrain_world import (
    ACCOUNT,
    BUCKET,
    LABELS,
    PROJECT,
    REGION,
    human_lines,
    registry_versions,
    run_training,
    usable_scenes,
)

ENDPOINT = "detector"


@pytest.fixture(scope="module")
def scenes() -> list[Scene]:
    return usable_scenes()


@pytest.fixture
def cloud(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    with mock_aws():
        settings = sagemaker_training.SageMakerTrainingSettings(polls=1)
        sagemaker_training.install(settings)
        model_emulation.install(model_emulation.ModelEmulationSettings(labels=list(LABELS)))
        try:
            s3 = boto3.client("s3", region_name=REGION)
            s3.create_bucket(Bucket=BUCKET)
            sagemaker_training.host_model(ACCOUNT, REGION, ENDPOINT, LearnedDetector(), BUCKET, "deploy/model.tar.gz")
            environ = {
                "DATA_BUCKET": BUCKET,
                "LABELS": ",".join(LABELS),
                "MODEL_KIND": "sagemaker",
                "ENDPOINT_NAME": ENDPOINT,
                "RETRAIN_BACKEND": "sagemaker",
                "RETRAIN_PROJECT_NAME": PROJECT,
                "RETRAIN_MIN_NEW_LABELS": "20",
                "RETRAIN_MIN_PER_CLASS": "3",
                "RETRAIN_MIN_EVALUATION_IMAGES": "8",
                "RETRAIN_TRAINING_IMAGE": "123456789012.dkr.ecr.us-east-1.amazonaws.com/yolo:1",
                "RETRAIN_EXECUTION_ROLE_ARN": f"arn:aws:iam::{ACCOUNT}:role/labelloop-training",
                "RETRAIN_INSTANCE_TYPE": "ml.g4dn.xlarge",
                "RETRAIN_MAX_RUNTIME_HOURS": "2",
                "RETRAIN_HYPERPARAMETERS": '{"epochs": "3"}',
                "RETRAIN_SPOT": "true",
                "RETRAIN_ENDPOINT_INSTANCE_TYPE": "ml.m5.large",
                "MIN_PAIRS": "5",
            }
            for name, value in environ.items():
                monkeypatch.setenv(name, value)
            yield {
                "s3": s3,
                "cfg": retrain.RetrainSettings.from_env(),
                "sagemaker": boto3.client("sagemaker", region_name=REGION),
                "runtime": boto3.client("sagemaker-runtime", region_name=REGION),
                "events": boto3.client("events", region_name=REGION),
                "emulation": settings,
            }
        finally:
            model_emulation.uninstall()
            sagemaker_training.uninstall()


def _retrainer(cloud: dict[str, Any]) -> retrain.Retrainer:
    return retrain.Retrainer(
        cloud["cfg"],
        cloud["s3"],
        None,
        cloud["events"],
        sleep=lambda _s: None,
        sagemaker=cloud["sagemaker"],
        runtime=cloud["runtime"],
    )


def _export(cloud: dict[str, Any], scenes: Sequence[Scene], version: str, corrupt: bool = False) -> dict[str, Any]:
    """Human labels of the scenes exported as the pipeline does: YOLO files and the training data beside them."""
    s3 = cloud["s3"]
    lines = human_lines(s3, scenes, "street", corrupt)
    prefix = f"exports/street/{version}/"
    planner = ExportPlanner(ClassRegistry(LABELS), allowed_buckets={BUCKET})
    planner.add_manifest(f"s3://{BUCKET}/batch/{OUTPUT_MANIFEST}", lines)
    write_export(planner.plan(), S3Destination(BUCKET, prefix, s3), version, dataset="street", threads=2)
    training = build_training_set([(f"s3://{BUCKET}/batch/{OUTPUT_MANIFEST}", lines)], LABELS)
    write_training_data(S3Destination(BUCKET, prefix, s3), training)
    return {"dataset": "street", "version": version, "uri": f"s3://{BUCKET}/{prefix}", "counts": {}}


def _run(cloud: dict[str, Any], detail: dict[str, Any], looks: int = 40) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    return run_training(_retrainer(cloud), detail, looks)


def _versions(cloud: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return registry_versions(cloud["s3"])


def _settled(cloud: dict[str, Any]) -> dict[str, Any]:
    """The endpoint once any update in progress has settled."""
    for _ in range(5):
        described = cloud["sagemaker"].describe_endpoint(EndpointName=ENDPOINT)
        if described["EndpointStatus"] == "InService":
            return dict(described)
    raise AssertionError(described)


def _weights(cloud: dict[str, Any], config: str) -> dict[str, float]:
    variants = cloud["sagemaker"].describe_endpoint_config(EndpointConfigName=config)["ProductionVariants"]
    return {v["VariantName"]: v["InitialVariantWeight"] for v in variants}


def test_a_training_job_on_the_export_is_hosted_beside_the_incumbent_evaluated_and_promoted(cloud, scenes):
    planned, steps = _run(cloud, _export(cloud, scenes, "E1"))
    assert planned["version"] == "v2"
    phases = [s["phase"] for s in steps]
    assert phases.index("training") < phases.index("hosting") < phases.index("evaluating")
    assert steps[-1]["status"] == "active"
    registry = _versions(cloud)
    v1, v2 = registry["v1"], registry["v2"]
    assert v1["status"] == "retired" and v2["status"] == "active"
    assert v1["identity"]["variant"] == "primary" and v2["identity"]["variant"] == "labelloop-v2"
    evaluation = v2["evaluation"]
    assert evaluation["promoted"] and evaluation["incumbent_f1"] == 0.0 and evaluation["f1"] > 0.5
    assert evaluation["images"] == v2["trained_on"]["evaluation_images"] > 0
    # the job: the user's image on the export, spot with MaxWait >= MaxRuntime, output under models/versions/v2/
    job = cloud["sagemaker"].describe_training_job(TrainingJobName=v2["job"]["training_job"])
    (channel,) = job["InputDataConfig"]
    assert channel["ChannelName"] == "training"
    assert channel["DataSource"]["S3DataSource"]["S3Uri"] == v2["trained_on"]["export_uri"]
    stopping = job["StoppingCondition"]
    assert job["EnableManagedSpotTraining"] and stopping["MaxWaitTimeInSeconds"] >= stopping["MaxRuntimeInSeconds"]
    assert job["HyperParameters"] == {"epochs": "3"}
    artifact = job["ModelArtifacts"]["S3ModelArtifacts"]
    assert artifact.startswith(f"s3://{BUCKET}/{MODEL_OUTPUT_PREFIX}v2/") and artifact.endswith(SAGEMAKER_ARTIFACT)
    assert cloud["s3"].head_object(Bucket=BUCKET, Key=artifact.split("/", 3)[3])["ContentLength"] > 0
    assert v2["training_cost"]["billable_training_seconds"] == job["BillableTimeInSeconds"]
    model = cloud["sagemaker"].describe_model(ModelName=v2["identity"]["model_name"])
    assert model["PrimaryContainer"]["ModelDataUrl"] == artifact
    # evaluation: the candidate at weight 0 beside the incumbent; promotion: the weight moves, v1 stays reachable
    assert _weights(cloud, v2["job"]["evaluation_config"]) == {"primary": 1.0, "labelloop-v2": 0.0}
    live = _settled(cloud)
    assert live["EndpointConfigName"] == v2["job"]["live_config"]
    assert _weights(cloud, live["EndpointConfigName"]) == {"labelloop-v2": 1.0, "primary": 0.0}
    # the new version's certificate starts from its evaluation pairs
    pinned = cloud["cfg"].model.pinned("v2", v2["identity"])
    state = json.loads(cloud["s3"].get_object(Bucket=BUCKET, Key=state_key("street", pinned.model_id))["Body"].read())
    assert "evaluation-v2" in state["batches"]


def test_a_batch_pinned_before_the_promotion_keeps_invoking_its_own_variant(cloud, scenes):
    cfg, s3 = cloud["cfg"].model, cloud["s3"]
    before = pinned_settings(cfg, "work/batches/street/b-1/", s3)
    assert before.version == "v1" and before.variant is None  # the deploy-time endpoint, nothing hosted beside it
    _run(cloud, _export(cloud, scenes, "E1"))
    _settled(cloud)
    during = pinned_settings(cfg, "work/batches/street/b-1/", s3)
    after = pinned_settings(cfg, "work/batches/street/b-2/", s3)
    assert (during.version, during.variant, during.model_id) == ("v1", "primary", before.model_id)
    assert (after.version, after.variant) == ("v2", "labelloop-v2") and after.model_id != before.model_id
    scene = scenes[0]
    s3.put_object(Bucket=BUCKET, Key="probe.png", Body=scene.data)
    w, h = scene.image.size
    old, new = backend_for(during, cloud["runtime"]), backend_for(after, cloud["runtime"])
    assert old is not None and new is not None
    assert old.detect(ImageInput(BUCKET, "probe.png", w, h, s3=s3)).boxes == ()  # v1 is untrained, still answering
    assert new.detect(ImageInput(BUCKET, "probe.png", w, h, s3=s3)).boxes  # v2 learned the scenes


def test_a_version_trained_on_corrupted_labels_is_rejected_and_the_endpoint_returns_to_its_config(cloud, scenes):
    before = _settled(cloud)["EndpointConfigName"]
    _, steps = _run(cloud, _export(cloud, scenes, "E1", corrupt=True))
    registry = _versions(cloud)
    assert steps[-1]["status"] == "rejected"
    assert registry["v1"]["status"] == "active" and registry["v2"]["status"] == "rejected"
    assert registry["v2"]["evaluation"]["reason"].startswith("no evidence the candidate is better")
    assert registry["v2"]["job"]["endpoint_reverted"] is True
    assert _settled(cloud)["EndpointConfigName"] == before


def test_a_failed_training_job_records_its_failure_reason_and_the_incumbent_stays(cloud, scenes):
    detail = _export(cloud, scenes, "E1")
    cloud["emulation"].faults["labelloop-test-v2-E1"] = "training_failed"
    before = _settled(cloud)["EndpointConfigName"]
    _, steps = _run(cloud, detail)
    registry = _versions(cloud)
    assert steps[-1]["status"] == "failed" and {s["phase"] for s in steps[:-1]} == {"training"}
    assert registry["v2"]["status"] == "failed" and registry["v1"]["status"] == "active"
    reason = registry["v2"]["history"][-1]["reason"]
    assert reason == "TrainingJob Failed: AlgorithmError: the training script exited with code 1 (emulated fault)"
    assert _settled(cloud)["EndpointConfigName"] == before
    assert not [m for m in cloud["sagemaker"].list_models()["Models"] if m["ModelName"].startswith(PROJECT)]
    planned = retrain.process({"action": "plan", "detail": _export(cloud, scenes, "E2")}, _retrainer(cloud))
    assert planned["train"] and planned["version"] == "v3"  # the next export trains again


def test_an_export_without_usable_training_images_fails_the_job_with_the_reason(cloud, scenes):
    detail = _export(cloud, scenes, "E1")
    for key in [
        o["Key"] for o in cloud["s3"].list_objects_v2(Bucket=BUCKET, Prefix="exports/street/E1/images/")["Contents"]
    ]:
        cloud["s3"].delete_object(Bucket=BUCKET, Key=key)
    _, steps = _run(cloud, detail)
    reason = _versions(cloud)["v2"]["history"][-1]["reason"]
    assert steps[-1]["status"] == "failed" and reason.startswith("TrainingJob Failed: ClientError: no training image")


def test_the_workflow_giving_up_stops_the_training_job(cloud, scenes):
    worker = _retrainer(cloud)
    planned = retrain.process({"action": "plan", "detail": _export(cloud, scenes, "E1")}, worker)
    first = retrain.process({"action": "advance", "version": planned["version"]}, worker)
    assert first == {"done": False, "phase": "training", "status": "InProgress: training job created"}
    caught = retrain.process({"action": "fail", "version": "v2", "cause": "States.Timeout"}, worker)
    assert caught["status"] == "failed"
    job = cloud["sagemaker"].describe_training_job(TrainingJobName="labelloop-test-v2-E1")
    assert job["TrainingJobStatus"] in ("Stopping", "Stopped")


def test_an_endpoint_update_that_rolls_back_fails_the_version_with_the_reason(cloud, scenes):
    cloud["emulation"].faults["labelloop-test-v2-E1-eval"] = "update_failed"
    _, steps = _run(cloud, _export(cloud, scenes, "E1"))
    registry = _versions(cloud)
    assert steps[-1]["status"] == "failed" and registry["v1"]["status"] == "active"
    assert "rolled back" in registry["v2"]["history"][-1]["reason"]


def test_the_training_settings_are_validated_naming_the_variable() -> None:
    from adapters.env import EnvError
    from handlers.retrain_sagemaker import SageMakerRetrainSettings

    base = {
        "RETRAIN_TRAINING_IMAGE": "123456789012.dkr.ecr.us-east-1.amazonaws.com/yolo:1",
        "RETRAIN_EXECUTION_ROLE_ARN": "arn:aws:iam::123456789012:role/x",
        "RETRAIN_INSTANCE_TYPE": "ml.g4dn.xlarge",
        "RETRAIN_ENDPOINT_INSTANCE_TYPE": "ml.m5.large",
    }
    assert SageMakerRetrainSettings.from_env(base).spot is False
    for name, value in (("RETRAIN_HYPERPARAMETERS", '{"epochs": 3}'), ("RETRAIN_SPOT", "yes")):
        with pytest.raises(EnvError, match=name):
            SageMakerRetrainSettings.from_env({**base, name: value})
    with pytest.raises(EnvError, match="RETRAIN_TRAINING_IMAGE"):
        SageMakerRetrainSettings.from_env({k: v for k, v in base.items() if k != "RETRAIN_TRAINING_IMAGE"})


def test_a_pinned_versions_backend_records_the_identity_its_calibration_is_kept_under(cloud, scenes):
    _run(cloud, _export(cloud, scenes, "E1"))
    for batch in ("b-1", "b-2"):
        pinned = pinned_settings(cloud["cfg"].model, f"work/batches/street/{batch}/", cloud["s3"])
        backend = backend_for(pinned, cloud["runtime"])
        assert backend is not None and backend.model_id == pinned.model_id  # pre-label's pairs reach calibrate
