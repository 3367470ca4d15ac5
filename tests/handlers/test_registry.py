"""The model registry: its lifecycle (pure) and its conditional writes to S3 (moto)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from adapters import registry as store
from labelloop_core.registry import (
    RegistryError,
    active_version,
    add_candidate,
    initial_registry,
    set_status,
    training_in_flight,
)

V1 = {"kind": "rekognition", "project_version_arn": "arn:aws:rekognition:us-east-1:1:project/p/version/v1/1"}
V2 = {"kind": "rekognition", "project_version_arn": "arn:aws:rekognition:us-east-1:1:project/p/version/v2/2"}
BUCKET = "labelloop-data"


def test_the_deploy_time_model_is_v1_and_active() -> None:
    doc = initial_registry(V1, "t0")
    assert active_version(doc)["version"] == "v1" and active_version(doc)["identity"] == V1
    assert training_in_flight(doc) is None


def test_a_promotion_retires_the_incumbent_and_keeps_one_active() -> None:
    doc, name = add_candidate(initial_registry(V1, "t0"), V2, {"export_version": "e1", "images": 40}, "t1")
    assert name == "v2" and training_in_flight(doc)["version"] == "v2"  # type: ignore[index]
    assert active_version(doc)["version"] == "v1"  # a candidate changes nothing for batches
    doc = set_status(doc, "v2", "evaluating", "t2", "training completed")
    doc = set_status(doc, "v2", "active", "t3", "better on 40 images", evaluation={"promoted": True})
    statuses = {v["version"]: v["status"] for v in doc["versions"]}
    assert statuses == {"v1": "retired", "v2": "active"}
    assert doc["versions"][1]["evaluation"] == {"promoted": True}
    assert [h["status"] for h in doc["versions"][0]["history"]] == ["active", "retired"]


def test_the_lifecycle_refuses_what_it_does_not_allow() -> None:
    doc, _ = add_candidate(initial_registry(V1, "t0"), V2, {"export_version": "e1"}, "t1")
    with pytest.raises(RegistryError, match="one training per stack"):
        add_candidate(doc, V2, {"export_version": "e2"}, "t2")
    with pytest.raises(RegistryError, match="cannot go from training to active"):
        set_status(doc, "v2", "active", "t2", "skipped evaluation")
    failed = set_status(doc, "v2", "failed", "t2", "TRAINING_FAILED: manifest invalid")
    with pytest.raises(RegistryError, match="already trained version v2"):
        add_candidate(failed, V2, {"export_version": "e1"}, "t3")  # idempotent on the export version
    with pytest.raises(RegistryError, match="no version 'v9'"):
        set_status(failed, "v9", "retired", "t3", "x")
    with pytest.raises(RegistryError, match="set by the registry"):
        set_status(doc, "v2", "evaluating", "t3", "x", history=[])
    with pytest.raises(RegistryError, match="schema"):
        active_version({"versions": []})


@pytest.fixture
def s3() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def test_the_first_write_and_updates_are_conditional(s3: Any) -> None:
    assert store.read(s3, BUCKET) == (None, None)
    store.update(s3, BUCKET, lambda current: current or initial_registry(V1, "t0"))
    doc = store.update(s3, BUCKET, lambda current: add_candidate(current or {}, V2, {"export_version": "e1"}, "t1")[0])
    assert [v["status"] for v in store.read(s3, BUCKET)[0]["versions"]] == ["active", "training"]  # type: ignore[index]
    assert doc == store.read(s3, BUCKET)[0]


def test_a_writer_that_loses_the_race_reapplies_its_change_on_the_winner(s3: Any) -> None:
    store.update(s3, BUCKET, lambda current: initial_registry(V1, "t0"))
    raced = []

    def change(current: dict[str, Any] | None) -> dict[str, Any]:
        if not raced:  # another writer lands between this read and this write
            raced.append(True)
            store.update(s3, BUCKET, lambda c: add_candidate(c or {}, V2, {"export_version": "e1"}, "t1")[0])
        return add_candidate(current or {}, V2, {"export_version": "e2"}, "t2")[0]  # would drop the winner's v2

    with pytest.raises(RegistryError, match="v2 is training: one training per stack"):
        store.update(s3, BUCKET, change)  # the second attempt re-reads the winner's document and refuses
    doc, _ = store.read(s3, BUCKET)
    assert doc is not None and [v["version"] for v in doc["versions"]] == ["v1", "v2"]  # nothing lost


def test_a_registry_that_never_settles_is_a_conflict_with_nothing_written(s3: Any) -> None:
    store.update(s3, BUCKET, lambda current: initial_registry(V1, "t0"))
    before = store.read(s3, BUCKET)

    writes = []

    def always_raced(current: dict[str, Any] | None) -> dict[str, Any]:
        writes.append(len(writes))
        other = {**(current or {}), "other_writer": len(writes)}
        s3.put_object(Bucket=BUCKET, Key="models/registry.json", Body=json.dumps(other).encode())
        return dict(current or {})

    with pytest.raises(store.RegistryConflict, match="3 attempts"):
        store.update(s3, BUCKET, always_raced, attempts=3)
    after, _ = store.read(s3, BUCKET)
    assert after is not None and after["other_writer"] == 3 and before[0] is not None  # only the other writer's
