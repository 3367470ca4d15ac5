"""The model life cycle under moto plus the emulated Rekognition hosting: leases, start on demand, the
shared start, the idle stop, the stop after a promotion, failed starts and failed stops."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from adapters import registry as registry_store
from adapters.hosting import HostingStore
from handlers import model_hosting
from labelloop_core import hosting as core
from labelloop_core import limits
from labelloop_core import registry as versions
from labelloop_core.contract import DEFAULT_WORK_PREFIX, Env, batch_prefix
from sandbox import model_emulation, rekognition_hosting, rekognition_training
from sandbox.learned_detector import LearnedDetector

BUCKET = "labelloop-data"
ACCOUNT, REGION = "123456789012", "us-east-1"
PROJECT = "deploy-time"
IDLE_MINUTES = 10.0


class Clock:
    """A clock the test moves (lease expiry and idle time without sleeping)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def cloud(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    with mock_aws():
        emulation = rekognition_training.RekognitionTrainingSettings(polls=1)
        rekognition_training.install(emulation)
        model_emulation.install(model_emulation.ModelEmulationSettings(labels=["car"]))
        try:
            s3 = boto3.client("s3", region_name=REGION)
            s3.create_bucket(Bucket=BUCKET)
            arn = rekognition_hosting.seed_version(ACCOUNT, REGION, PROJECT, "v1", LearnedDetector(), status="STOPPED")
            environ = {
                Env.DATA_BUCKET: BUCKET,
                Env.LABELS: "car",
                Env.MODEL_KIND: "rekognition",
                Env.MODEL_ARN: arn,
                Env.MODEL_KEEP_RUNNING: "false",
                Env.MODEL_INFERENCE_UNITS: "2",
                Env.MODEL_MAX_INFERENCE_UNITS: "3",
                Env.MODEL_IDLE_MINUTES: str(IDLE_MINUTES),
            }
            for name, value in environ.items():
                monkeypatch.setenv(name, value)
            model_hosting.settings.cache_clear()
            cfg = model_hosting.settings()
            clock = Clock()
            rekognition = boto3.client("rekognition", region_name=REGION)
            yield {
                "s3": s3,
                "cfg": cfg,
                "arn": arn,
                "clock": clock,
                "rekognition": rekognition,
                "emulation": emulation,
                "life": model_hosting.lifecycle(cfg, s3, rekognition, clock),
            }
        finally:
            model_hosting.settings.cache_clear()
            model_emulation.uninstall()
            rekognition_training.uninstall()


def _prefix(batch: str) -> str:
    return batch_prefix(DEFAULT_WORK_PREFIX, "street", batch)


def _call(cloud: dict[str, Any], action: str, batch: str | None = None, **fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"action": action, **fields}
    if batch is not None:
        event.update(bucket=BUCKET, batch_prefix=_prefix(batch))
    return model_hosting.process(event, cloud["cfg"], cloud["life"], cloud["s3"])


def _document(cloud: dict[str, Any], version: str = "v1") -> dict[str, Any]:
    document = HostingStore(cloud["s3"], BUCKET).read(version)
    assert document is not None
    return document


def _status(cloud: dict[str, Any], arn: str | None = None) -> str:
    state = rekognition_training.state_for(ACCOUNT, REGION)
    return state.versions[arn or cloud["arn"]].status


def _calls(cloud: dict[str, Any], api: str) -> list[dict[str, Any]]:
    return [c for c in cloud["emulation"].calls if c["api"] == api]


def _until_ready(cloud: dict[str, Any], batch: str, looks: int = 6) -> list[dict[str, Any]]:
    steps = [_call(cloud, "ensure", batch, since=-1)]
    while not steps[-1]["ready"]:
        assert len(steps) < looks, steps
        cloud["clock"].advance(30)
        steps.append(_call(cloud, "ensure", batch, since=steps[0]["since"]))
    return steps


def test_a_stopped_version_is_started_on_demand_and_the_batch_waits_for_running(cloud):
    steps = _until_ready(cloud, "b1")
    assert [s["status"] for s in steps] == ["STARTING", "STARTING", "RUNNING"]
    assert [s["ready"] for s in steps] == [False, False, True]
    assert all(s["managed"] and s["version"] == "v1" for s in steps)
    starts = _calls(cloud, "StartProjectVersion")
    assert len(starts) == 1 and starts[0]["ProjectVersionArn"] == cloud["arn"]
    version = rekognition_training.state_for(ACCOUNT, REGION).versions[cloud["arn"]]
    assert (version.min_units, version.max_units) == (2, 3)  # model.inferenceUnits, model.maxInferenceUnits
    document = _document(cloud)
    assert list(document["holders"]) == [_prefix("b1")]
    assert document["start"] is None  # the start is done
    [interval] = document["intervals"]
    assert interval["source"] == "started" and interval["stopped_at"] is None
    assert (interval["min_units"], interval["max_units"]) == (2, 3)
    assert interval["started_at"] == core.iso(steps[0]["since"])


def test_two_batches_share_one_start(cloud):
    first = _call(cloud, "ensure", "b1", since=-1)
    second = _call(cloud, "ensure", "b2", since=-1)
    assert first["status"] == second["status"] == "STARTING"
    assert len(_calls(cloud, "StartProjectVersion")) == 1
    cloud["clock"].advance(30)
    for batch in ("b1", "b2", "b1", "b2"):
        _call(cloud, "ensure", batch, since=first["since"])
    assert _call(cloud, "ensure", "b2", since=first["since"])["ready"]
    assert len(_calls(cloud, "StartProjectVersion")) == 1
    assert sorted(_document(cloud)["holders"]) == [_prefix("b1"), _prefix("b2")]


def test_a_start_someone_else_made_is_treated_as_the_shared_start(cloud):
    cloud["rekognition"].start_project_version(ProjectVersionArn=cloud["arn"], MinInferenceUnits=1)
    # The version is STARTING but no lease document knows: ResourceInUse is "someone else started it".
    steps = _until_ready(cloud, "b1")
    assert steps[-1]["status"] == "RUNNING"
    assert _document(cloud)["intervals"][0]["source"] == "observed"


def test_the_lease_is_idempotent_renewed_and_released(cloud):
    life = cloud["life"]
    _until_ready(cloud, "b1")
    holder = _prefix("b1")
    first = _document(cloud)["holders"][holder]
    _call(cloud, "ensure", "b1", since=-1)  # a retried step: the same lease, renewed
    assert list(_document(cloud)["holders"]) == [holder]
    assert not life.renew("v1", cloud["arn"], holder)  # fresh: no write
    cloud["clock"].advance(limits.MODEL_LEASE_SECONDS - limits.MODEL_LEASE_RENEW_SECONDS + 1)
    assert life.renew("v1", cloud["arn"], holder)  # a long batch keeps its lease
    assert core.epoch(_document(cloud)["holders"][holder]) > core.epoch(first)
    assert _call(cloud, "release", "b1") == {"released": True, "version": "v1"}
    assert _call(cloud, "release", "b1") == {"released": True, "version": "v1"}  # again: nothing to drop
    document = _document(cloud)
    assert document["holders"] == {} and document["last_release"] == core.iso(cloud["clock"].now)


def test_conflicting_lease_writes_are_reapplied_not_lost(cloud):
    store = HostingStore(cloud["s3"], BUCKET)
    now = cloud["clock"].now
    real_put = cloud["s3"].put_object
    raced = []

    def put_after_a_rival(**kwargs: Any) -> Any:
        if not raced:  # a rival batch writes between our read and our conditional write
            raced.append(True)
            rival = core.acquire(core.new_document("v1", cloud["arn"], now), "rival", now, 600)
            real_put(Bucket=BUCKET, Key=kwargs["Key"], Body=json.dumps(rival).encode())
        return real_put(**kwargs)

    cloud["s3"].put_object = put_after_a_rival
    try:
        store.update("v1", cloud["arn"], lambda d: core.acquire(d, "mine", now, 600), now)
    finally:
        cloud["s3"].put_object = real_put
    assert sorted(_document(cloud)["holders"]) == ["mine", "rival"]


def test_the_idle_stop_waits_for_the_idle_time_and_never_stops_a_held_version(cloud):
    clock = cloud["clock"]
    _until_ready(cloud, "b1")
    clock.advance(IDLE_MINUTES * 60 * 3)
    assert _call(cloud, "sweep")["versions"][0]["action"] == "kept"  # held: idle time never counts
    assert _status(cloud) == "RUNNING"
    _call(cloud, "release", "b1")
    clock.advance(IDLE_MINUTES * 60 - 1)
    assert _call(cloud, "sweep")["versions"][0]["action"] == "kept"
    clock.advance(2)
    [result] = _call(cloud, "sweep")["versions"]
    assert result["action"] == "stopped" and "idle" in result["reason"]
    assert _status(cloud) == "STOPPING"
    [interval] = _document(cloud)["intervals"]
    assert interval["stopped_at"] == core.iso(clock.now)
    assert len(_calls(cloud, "StopProjectVersion")) == 1
    assert _call(cloud, "sweep")["versions"][0]["action"] == "none"  # stopped already: no second stop
    assert len(_calls(cloud, "StopProjectVersion")) == 1


def test_a_crashed_batch_lease_expires_and_the_version_is_stopped(cloud):
    clock = cloud["clock"]
    _until_ready(cloud, "crashed")  # never releases
    clock.advance(limits.MODEL_LEASE_SECONDS + 1)
    assert _call(cloud, "sweep")["versions"][0]["action"] == "kept"  # idle counts from the expiry
    clock.advance(IDLE_MINUTES * 60)
    assert _call(cloud, "sweep")["versions"][0]["action"] == "stopped"


def test_a_batch_arriving_while_the_sweep_stops_waits_and_starts_again(cloud):
    clock = cloud["clock"]
    _until_ready(cloud, "b1")
    _call(cloud, "release", "b1")
    clock.advance(IDLE_MINUTES * 60 + 1)
    assert _call(cloud, "sweep")["versions"][0]["action"] == "stopped"
    steps = _until_ready(cloud, "b2", looks=8)
    assert steps[0]["status"] == "STOPPING" and steps[-1]["status"] == "RUNNING"
    assert len(_calls(cloud, "StartProjectVersion")) == 2
    intervals = _document(cloud)["intervals"]
    assert [i["stopped_at"] is None for i in intervals] == [False, True]


def _promote(cloud: dict[str, Any]) -> str:
    """A registry where v2 replaced v1 (as the retrain loop leaves it): v2 RUNNING, v1 retired."""
    v2 = rekognition_hosting.seed_version(ACCOUNT, REGION, PROJECT, "v2", LearnedDetector())
    now = core.iso(cloud["clock"].now)

    def promoted(document: dict[str, Any] | None) -> dict[str, Any]:
        document = document or versions.initial_registry(cloud["cfg"].model.identity(), now)
        document, name = versions.add_candidate(
            document, {"kind": "rekognition", "model_arn": v2}, {"export_version": "E1"}, now
        )
        document = versions.set_status(document, name, versions.EVALUATING, now, "trained")
        return versions.set_status(document, name, versions.ACTIVE, now, "better")

    registry_store.update(cloud["s3"], BUCKET, promoted)
    return v2


def test_the_old_version_stops_after_a_promotion_once_no_batch_holds_it(cloud):
    _until_ready(cloud, "old-batch")  # pinned v1 before the promotion
    v2 = _promote(cloud)
    _until_ready(cloud, "new-batch")
    assert (
        json.loads(cloud["s3"].get_object(Bucket=BUCKET, Key=_prefix("new-batch") + "model.json")["Body"].read())[
            "version"
        ]
        == "v2"
    )
    results = {r["version"]: r["action"] for r in _call(cloud, "sweep")["versions"]}
    assert results == {"v1": "kept", "v2": "kept"}  # v1 is retired but a batch still holds it
    _call(cloud, "release", "old-batch")
    results = {r["version"]: r["action"] for r in _call(cloud, "sweep")["versions"]}
    assert results == {"v1": "stopped", "v2": "kept"}  # at once: no idle wait for a retired version
    assert _status(cloud) == "STOPPING" and _status(cloud, v2) == "RUNNING"


def test_a_failed_start_fails_that_batch_with_the_reason_and_no_other(cloud):
    other = rekognition_hosting.seed_version(ACCOUNT, REGION, PROJECT, "other", LearnedDetector())
    store = HostingStore(cloud["s3"], BUCKET)
    life = cloud["life"]
    assert life.ensure("v9", other, "bystander") == "RUNNING"
    cloud["emulation"].faults["v1"] = "start_failed"
    assert _call(cloud, "ensure", "b1", since=-1)["status"] == "STARTING"
    with pytest.raises(model_hosting.ModelStartFailed, match=r"FAILED: The model could not be started"):
        for _ in range(4):
            _call(cloud, "ensure", "b1", since=-1)
    document = _document(cloud)
    assert document["holders"] == {} and document["start"] is None
    assert "could not be started" in document["last_start_error"]["reason"]
    assert document["intervals"][0]["stopped_at"] is not None  # nothing billed after the failure
    assert list((store.read("v9") or {})["holders"]) == ["bystander"]
    assert _status(cloud, other) == "RUNNING"


def test_a_refused_start_fails_the_batch_with_the_service_message(cloud):
    rekognition_training.state_for(ACCOUNT, REGION).versions.pop(cloud["arn"])  # the version was deleted
    with pytest.raises(model_hosting.ModelStartFailed, match="does not exist"):
        _call(cloud, "ensure", "b1", since=-1)
    assert _document(cloud)["holders"] == {}


def test_a_start_that_never_reaches_running_times_out(cloud):
    cloud["emulation"].polls = 10_000
    first = _call(cloud, "ensure", "b1", since=-1)
    cloud["clock"].advance(limits.MODEL_START_TIMEOUT_SECONDS + 1)
    with pytest.raises(model_hosting.ModelStartFailed, match="did not reach RUNNING"):
        _call(cloud, "ensure", "b1", since=first["since"])


def test_a_failed_stop_is_retried_then_the_sweep_fails_for_the_alarm(cloud):
    clock = cloud["clock"]
    _until_ready(cloud, "b1")
    _call(cloud, "release", "b1")
    clock.advance(IDLE_MINUTES * 60 + 1)
    cloud["emulation"].faults["v1"] = "stop_failed"
    for failures in range(1, limits.MODEL_STOP_FAILURES_ALARM):
        [result] = _call(cloud, "sweep")["versions"]
        assert (result["action"], result["failures"]) == ("stop_failed", failures)
    with pytest.raises(model_hosting.ModelStopFailed, match="could not stop v1"):
        _call(cloud, "sweep")
    assert _status(cloud) == "RUNNING"
    assert _document(cloud)["intervals"][0]["stopped_at"] is None  # still billed, and recorded so
    del cloud["emulation"].faults["v1"]
    assert _call(cloud, "sweep")["versions"][0]["action"] == "stopped"
    assert _document(cloud)["stop_failures"] == 0


def test_keep_running_and_other_models_do_nothing(cloud, monkeypatch):
    monkeypatch.setenv(Env.MODEL_KEEP_RUNNING, "true")
    model_hosting.settings.cache_clear()
    cfg = model_hosting.settings()
    life = model_hosting.lifecycle(cfg, cloud["s3"], cloud["rekognition"], cloud["clock"])
    event = {"action": "ensure", "bucket": BUCKET, "batch_prefix": _prefix("b1"), "since": -1}
    assert model_hosting.process(event, cfg, life, cloud["s3"])["ready"] is True
    assert model_hosting.process({"action": "sweep"}, cfg, life, cloud["s3"]) == {"managed": False, "versions": []}
    assert _calls(cloud, "StartProjectVersion") == [] and _status(cloud) == "STOPPED"


def test_concurrent_lease_writers_all_land_with_atomic_conditional_writes(cloud):
    """Eight batches acquiring at once (threads, as the emulation runs functions): no lease is lost.

    moto's check-then-write window is widened (a pause before each write) so unserialized writers
    would overwrite each other; `sandbox.s3_conditional` makes the check and the write one step."""
    import threading
    import time

    from moto.s3.models import S3Backend

    from sandbox import s3_conditional

    write = S3Backend.put_object

    def slow_write(self: Any, *args: Any, **kwargs: Any) -> Any:
        time.sleep(0.02)
        return write(self, *args, **kwargs)

    S3Backend.put_object = slow_write  # type: ignore[method-assign]
    s3_conditional.install()
    try:
        store = HostingStore(cloud["s3"], BUCKET)
        now = cloud["clock"].now
        store.update("v1", cloud["arn"], lambda d: d, now)
        barrier = threading.Barrier(8)

        def take(holder: str) -> None:
            s3 = boto3.client("s3", region_name=REGION)
            barrier.wait()
            HostingStore(s3, BUCKET).update("v1", cloud["arn"], lambda d: core.acquire(d, holder, now, 600), now)

        threads = [threading.Thread(target=take, args=(f"b{i}",)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        s3_conditional.uninstall()
        S3Backend.put_object = write  # type: ignore[method-assign]
    assert sorted(_document(cloud)["holders"]) == sorted(f"b{i}" for i in range(8))
