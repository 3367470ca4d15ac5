"""The retrain steps under moto plus the emulated Rekognition training: plan, advance, promote or reject."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import boto3
import pytest
from moto import mock_aws

from adapters.export_writer import S3Destination
from adapters.model_pin import pinned_settings
from adapters.models import ModelSettings
from adapters.training_writer import build_training_set, write_training_data
from handlers import retrain
from handlers.route import state_key
from labelloop_core.contract import OUTPUT_MANIFEST
from sandbox import model_emulation, rekognition_hosting, rekognition_training
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


@pytest.fixture(scope="module")
def scenes() -> list[Scene]:
    return usable_scenes()


@pytest.fixture
def cloud(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    with mock_aws():
        settings = rekognition_training.RekognitionTrainingSettings(polls=1)
        rekognition_training.install(settings)
        model_emulation.install(model_emulation.ModelEmulationSettings(labels=list(LABELS)))
        try:
            s3 = boto3.client("s3", region_name=REGION)
            s3.create_bucket(Bucket=BUCKET)
            v1 = rekognition_hosting.seed_version(ACCOUNT, REGION, "deploy-time", "v1", LearnedDetector())
            environ = {
                "DATA_BUCKET": BUCKET,
                "LABELS": ",".join(LABELS),
                "MODEL_KIND": "rekognition",
                "MODEL_ARN": v1,
                "RETRAIN_PROJECT_NAME": PROJECT,
                "RETRAIN_MIN_NEW_LABELS": "20",
                "RETRAIN_MIN_PER_CLASS": "3",
                "RETRAIN_MIN_EVALUATION_IMAGES": "8",
                "MIN_PAIRS": "5",
            }
            for name, value in environ.items():
                monkeypatch.setenv(name, value)
            cfg = retrain.RetrainSettings.from_env()
            rekognition = boto3.client("rekognition", region_name=REGION)
            events = boto3.client("events", region_name=REGION)
            yield {"s3": s3, "cfg": cfg, "v1": v1, "rekognition": rekognition, "emulation": settings, "events": events}
        finally:
            model_emulation.uninstall()
            rekognition_training.uninstall()


def _retrainer(cloud: dict[str, Any]) -> retrain.Retrainer:
    return retrain.Retrainer(cloud["cfg"], cloud["s3"], cloud["rekognition"], cloud["events"], sleep=lambda _s: None)


def _export(
    cloud: dict[str, Any], scenes: Sequence[Scene], version: str, corrupt: bool = False, dataset: str = "street"
) -> dict[str, Any]:
    """Upload the scenes and write the export's training data from human labels (an outside job's)."""
    s3 = cloud["s3"]
    lines = human_lines(s3, scenes, dataset, corrupt)
    training = build_training_set([(f"s3://{BUCKET}/batch/{OUTPUT_MANIFEST}", lines)], LABELS)
    prefix = f"exports/{dataset}/{version}/"
    write_training_data(S3Destination(BUCKET, prefix, s3), training)
    return {"dataset": dataset, "version": version, "uri": f"s3://{BUCKET}/{prefix}", "counts": {}}


def _run(cloud: dict[str, Any], detail: dict[str, Any], looks: int = 40) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    return run_training(_retrainer(cloud), detail, looks)


def _versions(cloud: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return registry_versions(cloud["s3"])


def test_human_labels_train_a_version_that_is_promoted_and_calibrated(cloud, scenes):
    planned, steps = _run(cloud, _export(cloud, scenes, "E1"))
    assert planned["version"] == "v2"
    phases = [s["phase"] for s in steps]
    assert phases.index("training") < phases.index("hosting") < phases.index("evaluating") < len(phases)
    assert steps[-1]["status"] == "active"
    registry = _versions(cloud)
    assert registry["v1"]["status"] == "retired" and registry["v2"]["status"] == "active"
    evaluation = registry["v2"]["evaluation"]
    assert evaluation["promoted"] and evaluation["candidate_quality"] > evaluation["incumbent_quality"]
    assert evaluation["images"] == registry["v2"]["trained_on"]["evaluation_images"] > 0
    assert evaluation["incumbent_f1"] == 0.0 and evaluation["f1"] > 0.5  # v1 is untrained: predicts nothing
    assert registry["v2"]["trained_on"]["images"] + evaluation["images"] == len(scenes)
    assert isinstance(registry["v2"]["training_cost"]["billable_training_seconds"], int)  # recorded, not judged
    arn = registry["v2"]["identity"]["model_arn"]
    # the artifact is real and the version is hosted
    listed = cloud["s3"].list_objects_v2(Bucket=BUCKET, Prefix="models/versions/v2/")
    assert any(o["Key"].endswith("model.npz") for o in listed.get("Contents", []))
    assert rekognition_training.state_for(ACCOUNT, REGION).versions[arn].status == "RUNNING"
    # the new version's certificate starts from its evaluation pairs
    model = cloud["cfg"].model.pinned("v2", registry["v2"]["identity"])
    state = json.loads(cloud["s3"].get_object(Bucket=BUCKET, Key=state_key("street", model.model_id))["Body"].read())
    assert state["model"] == model.model_id and "evaluation-v2" in state["batches"]


def test_the_next_export_trains_the_next_version_on_fresh_datasets(cloud, scenes):
    _run(cloud, _export(cloud, scenes[:60], "E1"))
    planned, steps = _run(cloud, _export(cloud, scenes, "E2"))
    assert planned["version"] == "v3" and steps[-1]["status"] in ("active", "rejected")
    registry = _versions(cloud)
    assert registry["v3"]["trained_on"]["export_version"] == "E2"
    assert registry["v3"]["trained_on"]["images"] > registry["v2"]["trained_on"]["images"]
    project = cloud["rekognition"].describe_projects(ProjectNames=[PROJECT])["ProjectDescriptions"][0]
    assert sorted(d["DatasetType"] for d in project["Datasets"]) == ["TEST", "TRAIN"]  # E2's, E1's deleted
    assert any("deleting it" in str(s.get("status")) for s in steps)


def test_a_version_trained_on_corrupted_labels_is_rejected_and_stopped(cloud, scenes):
    _, steps = _run(cloud, _export(cloud, scenes, "E1", corrupt=True))
    registry = _versions(cloud)
    assert steps[-1]["status"] == "rejected"
    assert registry["v1"]["status"] == "active" and registry["v2"]["status"] == "rejected"
    assert not registry["v2"]["evaluation"]["promoted"]
    assert registry["v2"]["evaluation"]["reason"].startswith("no evidence the candidate is better")
    arn = registry["v2"]["identity"]["model_arn"]
    version = rekognition_training.state_for(ACCOUNT, REGION).versions[arn]
    assert version.status in ("STOPPING", "STOPPED")


def test_a_failed_training_records_the_service_message_and_the_incumbent_stays(cloud, scenes):
    detail = _export(cloud, scenes, "E1")
    cloud["emulation"].faults[retrain.version_name(PROJECT, "v2", "E1")] = "training_failed"
    _, steps = _run(cloud, detail)
    registry = _versions(cloud)
    assert steps[-1]["status"] == "failed"
    assert registry["v2"]["status"] == "failed" and registry["v1"]["status"] == "active"
    assert "TRAINING_FAILED: An internal error occurred" in registry["v2"]["history"][-1]["reason"]
    # the next export trains again
    planned = retrain.process({"action": "plan", "detail": _export(cloud, scenes, "E2")}, _retrainer(cloud))
    assert planned == {"train": True, "version": "v3", "reason": planned["reason"]}


def test_too_few_labels_or_a_busy_stack_train_nothing_with_the_reason(cloud, scenes):
    worker = _retrainer(cloud)
    few = retrain.process({"action": "plan", "detail": _export(cloud, scenes[:10], "E0")}, worker)
    assert few["train"] is False and "20 needed" in few["reason"]
    first = retrain.process({"action": "plan", "detail": _export(cloud, scenes, "E1")}, worker)
    assert first["train"]
    again = retrain.process({"action": "plan", "detail": _export(cloud, scenes, "E2")}, worker)
    assert again["train"] is False and "one training per stack" in again["reason"]
    caught = retrain.process({"action": "fail", "version": "v2", "cause": "States.Timeout"}, worker)
    assert caught["status"] == "failed"
    same = retrain.process({"action": "plan", "detail": _export(cloud, scenes, "E1")}, worker)
    assert same["train"] is False and "already trained version v2" in same["reason"]


def test_a_batch_keeps_the_version_it_pinned_when_another_is_promoted(cloud, scenes):
    cfg: ModelSettings = cloud["cfg"].model
    s3 = cloud["s3"]
    before = pinned_settings(cfg, "work/batches/street/b-1/", s3)
    assert before.version == "v1" and before.model_arn == cloud["v1"]
    _run(cloud, _export(cloud, scenes, "E1"))
    during = pinned_settings(cfg, "work/batches/street/b-1/", s3)
    after = pinned_settings(cfg, "work/batches/street/b-2/", s3)
    assert during == before
    assert after.version == "v2" and after.model_id != before.model_id


def test_bad_events_are_refused(cloud):
    worker = _retrainer(cloud)
    with pytest.raises(retrain.RetrainEventError, match="unknown action"):
        retrain.process({"action": "train"}, worker)
    with pytest.raises(retrain.RetrainEventError, match="'version'"):
        retrain.process({"action": "plan", "detail": {"dataset": "street", "uri": f"s3://{BUCKET}/x/"}}, worker)
    with pytest.raises(retrain.RetrainEventError, match="not in the data bucket"):
        retrain.process({"action": "plan", "detail": {"dataset": "s", "version": "E", "uri": "s3://other/x/"}}, worker)


def test_with_managed_hosting_the_incumbent_is_held_and_the_old_version_left_to_the_sweep(cloud, scenes, monkeypatch):
    from adapters.hosting import HostingStore
    from handlers import model_hosting

    monkeypatch.setenv("MODEL_KEEP_RUNNING", "false")
    rekognition = cloud["rekognition"]
    rekognition.stop_project_version(ProjectVersionArn=cloud["v1"])  # nobody used v1 lately: it is stopped
    state = rekognition_training.state_for(ACCOUNT, REGION)
    state.versions[cloud["v1"]].status = "STOPPED"
    managed = {**cloud, "cfg": retrain.RetrainSettings.from_env()}
    assert managed["cfg"].hosting.managed
    _, steps = _run(managed, _export(managed, scenes, "E1"))
    assert steps[-1]["status"] == "active", steps[-3:]
    starts = [c["ProjectVersionArn"] for c in cloud["emulation"].calls if c["api"] == "StartProjectVersion"]
    assert starts.count(cloud["v1"]) == 1  # the stopped incumbent was started once, to predict the evaluation set
    store = HostingStore(cloud["s3"], BUCKET)
    v1, v2 = store.read("v1"), store.read("v2")
    assert v1 is not None and v2 is not None
    assert v1["holders"] == {}  # the evaluation let go of the incumbent
    assert [i["source"] for i in v1["intervals"]] == ["started"]  # started on demand to be compared
    assert v2["intervals"][0]["stopped_at"] is None  # the promoted candidate keeps running
    assert state.versions[cloud["v1"]].status == "RUNNING"  # retired, but the retrain loop does not stop it
    model_hosting.settings.cache_clear()
    cfg = model_hosting.settings()
    life = model_hosting.lifecycle(cfg, cloud["s3"], rekognition)
    swept = {
        r["version"]: r["action"]
        for r in model_hosting.process({"action": "sweep"}, cfg, life, cloud["s3"])["versions"]
    }
    model_hosting.settings.cache_clear()
    assert swept == {"v1": "stopped", "v2": "kept"}
    assert state.versions[cloud["v1"]].status == "STOPPING"
    assert (store.read("v1") or {})["intervals"][0]["stopped_at"] is not None
