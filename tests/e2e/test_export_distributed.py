"""A 20,000-image export (2,000 in CI, see `IMAGES`) through the DEPLOYED distributed path, shards in parallel.

The default stack (``export.distributedAbove`` 10,000, ``shardSize`` 2,000, ``maxConcurrency`` 10)
runs in the emulation. A "Batch Labeled" event for a 20,000-line output manifest goes through the
deployed rule to the export function, which plans the export, writes 10 shard files and starts the
export state machine; moto's interpreter runs the Distributed Map's items on worker threads and the
emulated Lambda runtime lets the shard invocations overlap; the publish step writes ``export.json``
and moves ``latest.json``.

The result is compared with the single-function writer (`adapters.export_writer.write_export`, the
code the small-export path runs) writing the same plan into an in-memory destination: every path,
every label file's bytes, ``data.yaml`` and the item lists must be identical, and every copied
image's fingerprint (S3 ETag, the MD5 of its bytes) must be the one of its planned source. Images
are 100 distinct 67-byte PNG-like payloads shared by the 20,000 lines, so the run is bounded by the
S3 requests the export makes (two per image), not by bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from labelloop_core import contract, limits
from labelloop_core.boxes import Box
from labelloop_core.classes import ClassRegistry
from labelloop_core.contract import AUTO_ATTRIBUTE, META_KEY, OUTPUT_MANIFEST
from labelloop_core.manifest import bbox_label_line
from sandbox import lambda_runtime
from sandbox.harness import LocalCloud
from tests.e2e.exports import announce_and_await_export

pytestmark = pytest.mark.e2e

#: 20,000 takes ~14 minutes in the emulation on 2 shared cores (two emulated S3 requests per image cost
#: ~25 ms of CPU there), so CI exports 2,000 through the same deployed path (10 shards of 200, the
#: export function's thresholds changed as `cdk deploy -c labelloop.export...` would); set
#: LABELLOOP_E2E_EXPORT_IMAGES=20000 to run the full size with the stack's defaults (10 shards of 2,000).
IMAGES = int(os.environ.get("LABELLOOP_E2E_EXPORT_IMAGES", "2000"))
SOURCES = 100
DATASET = "big"


class MemoryDestination:
    """Where the single-function writer puts the reference export: paths to bytes, copies to their source."""

    uri = "memory://reference/"

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.copies: dict[str, str] = {}

    def read_json(self, path: str) -> Any | None:
        return json.loads(self.files[path]) if path in self.files else None

    def existing(self, prefix: str) -> set[str]:
        return {p for p in self.files if p.startswith(prefix)}

    def put(self, path: str, body: bytes, content_type: str) -> None:
        self.files[path] = body

    def prepare(self, folders: Iterable[str]) -> None:
        return None

    def create(self, path: str, body: bytes, content_type: str) -> bool:
        if path in self.files:
            return False
        self.files[path] = body
        return True

    def copy_image(self, source_ref: str, path: str) -> str | None:
        self.copies[path] = source_ref
        return None


def _source(i: int) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + i.to_bytes(4, "big") + b"\x00" * 55


def _manifest(bucket: str) -> bytes:
    registry = ClassRegistry(["object"])
    rows = []
    for i in range(IMAGES):
        boxes = [Box("object", 1 + (i + b) % 50, 2 + b, 10 + i % 7, 12) for b in range(i % 3)]
        source = f"s3://{bucket}/work/e2e-big/src-{i % SOURCES:03d}.png"
        line = bbox_label_line(source, AUTO_ATTRIBUTE, (64, 64, 3), boxes, registry, i % 4 == 0, "labelloop-x")
        line[META_KEY] = {
            "key": f"incoming/{DATASET}/cam{i % 5}/img-{i:05d}.png",
            "label_attribute": AUTO_ATTRIBUTE,
        }
        rows.append(json.dumps(line))
    rows.append('{"source-ref": "s3://somebody-else/x.png"}')  # skipped with its reason, in both paths
    return ("\n".join(rows) + "\n").encode()


def _configure_export(cloud: LocalCloud, *, distributed_above: int, shard_size: int) -> None:
    """What ``cdk deploy -c labelloop.export.distributedAbove=N -c labelloop.export.shardSize=M`` changes."""
    export_fn = cloud.function_name("ExportExportYolo")
    client = cloud.client("lambda")
    variables = client.get_function_configuration(FunctionName=export_fn)["Environment"]["Variables"]
    variables |= {
        contract.Env.EXPORT_DISTRIBUTED_ABOVE: str(distributed_above),
        contract.Env.EXPORT_SHARD_SIZE: str(shard_size),
    }
    client.update_function_configuration(FunctionName=export_fn, Environment={"Variables": variables})


def _listing(cloud: LocalCloud, prefix: str) -> dict[str, str]:
    out = {}
    for page in cloud.client("s3").get_paginator("list_objects_v2").paginate(Bucket=cloud.bucket, Prefix=prefix):
        out.update({item["Key"][len(prefix) :]: item["ETag"].strip('"') for item in page.get("Contents", [])})
    return out


def _reference(cloud: LocalCloud, manifest_key: str, body: bytes) -> MemoryDestination:
    """The single-function writer on the same plan (planned exactly as the export function plans)."""
    from adapters.export_writer import write_export
    from labelloop_core.export import ExportPlanner

    planner = ExportPlanner(ClassRegistry(["object"]), val_fraction=0.2, allowed_buckets={cloud.bucket})
    planner.add_manifest(f"s3://{cloud.bucket}/{manifest_key}", body.splitlines())
    reference = MemoryDestination()
    write_export(planner.plan(), reference, "reference", dataset=DATASET, threads=4)
    return reference


def test_twenty_thousand_images_export_through_parallel_shards_like_the_single_function(
    assembly_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with LocalCloud.start(assembly_dir) as cloud:
        bucket, s3 = cloud.bucket, cloud.client("s3")
        etags = {}
        for i in range(SOURCES):
            s3.put_object(Bucket=bucket, Key=f"work/e2e-big/src-{i:03d}.png", Body=_source(i))
            etags[f"s3://{bucket}/work/e2e-big/src-{i:03d}.png"] = hashlib.md5(_source(i)).hexdigest()
        if limits.EXPORT_DISTRIBUTED_ABOVE.default >= IMAGES:
            _configure_export(cloud, distributed_above=0, shard_size=IMAGES // 10)
        manifest_key = f"work/batches/{DATASET}/b1/{OUTPUT_MANIFEST}"
        body = _manifest(bucket)
        s3.put_object(Bucket=bucket, Key=manifest_key, Body=body)
        lambda_runtime.peak_concurrency(reset=True)
        started = time.monotonic()
        latest = announce_and_await_export(
            cloud, DATASET, manifest_key, timeout=900, message="the distributed export published latest.json"
        )
        seconds = time.monotonic() - started
        peak = lambda_runtime.peak_concurrency()
        version_prefix = f"exports/{DATASET}/{latest['version']}/"
        document = cloud.read_json(version_prefix + "export.json")

        shard_runs = [
            i for i in cloud.invocations if "ExportShard" in i.function_name and i.event.get("action") == "shard"
        ]
        spans = sorted((i.started, i.started + i.duration_s) for i in shard_runs)
        overlapping = max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)
        with capsys.disabled():
            print(
                f"\ndistributed export of {IMAGES:,} images: {seconds:.1f} s, {len(shard_runs)} shard invocations, "
                f"{overlapping} running at once at most (gate peak {peak})"
            )

        assert latest["images"] == IMAGES
        assert [s["images"] for s in document["shards"]] == [IMAGES // 10] * 10
        assert document["counts"]["images"] == IMAGES and document["skipped_lines"]["count"] == 1
        assert len(shard_runs) == 10 and all(i.error is None for i in shard_runs)
        assert overlapping >= 2, "shard workers never overlapped"

        written = _listing(cloud, version_prefix)
        reference = _reference(cloud, manifest_key, body)
        images = {k for k in written if k.startswith("images/")}
        assert images == set(reference.copies)
        assert all(written[path] == etags[reference.copies[path]] for path in images)
        labels = {k for k in written if k.startswith("labels/")}
        assert labels == {p for p in reference.files if p.startswith("labels/")}
        for path in labels:  # S3's ETag of a simple PUT is the MD5 of the bytes
            assert written[path] == hashlib.md5(reference.files[path]).hexdigest(), path
        for name in ("data.yaml", "dropped.jsonl", "skipped.jsonl", "missing.jsonl"):
            assert s3.get_object(Bucket=bucket, Key=version_prefix + name)["Body"].read() == reference.files[name]
        reference_document = json.loads(reference.files["export.json"])
        assert document["counts"] == reference_document["counts"] | {"images_resumed": 0}
        assert document["class_histogram"] == reference_document["class_histogram"]


def test_a_shard_that_fails_for_good_reports_why_alarms_and_keeps_latest(assembly_dir: Path) -> None:
    """A bucket policy denies label writes: the shard fails after its retries, nothing is published."""
    from sandbox.alarms import dead_letter_reason, evaluate_alarms
    from sandbox.faults import FaultInjector

    with LocalCloud.start(assembly_dir, fault_injector=FaultInjector(bucket_policies=True)) as cloud:
        bucket, s3, sqs = cloud.bucket, cloud.client("s3"), cloud.client("sqs")
        _configure_export(cloud, distributed_above=0, shard_size=5)
        deny = {
            "Sid": "NoLabels",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:PutObject",
            "Resource": f"arn:aws:s3:::{bucket}/exports/frozen/*/labels/*",
        }
        s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [deny]}))
        for i in range(SOURCES):
            s3.put_object(Bucket=bucket, Key=f"work/e2e-big/src-{i:03d}.png", Body=_source(i))
        body = b"".join(line + b"\n" for line in _manifest(bucket).splitlines()[:12])
        manifest_key = f"work/batches/frozen/b1/{OUTPUT_MANIFEST}"
        s3.put_object(Bucket=bucket, Key=manifest_key, Body=body)
        detail = {"dataset": "frozen", "batch_id": "b1", "output_manifest": f"s3://{bucket}/{manifest_key}"}
        cloud.client("events").put_events(
            Entries=[
                {
                    "Source": contract.WORKFLOW_EVENT_SOURCE,
                    "DetailType": contract.BATCH_LABELED,
                    "Detail": json.dumps(detail),
                }
            ]
        )
        dlq = cloud.queue_url("ExportDeadLetters")
        message = cloud.wait_for(
            lambda: sqs.receive_message(QueueUrl=dlq, VisibilityTimeout=0).get("Messages"),
            timeout=300,
            message="the failed distributed export in its dead-letter queue",
        )[0]
        reason = dead_letter_reason(message["Body"])
        assert "distributed export failed" in reason and "AccessDenied" in reason, reason
        failed = [k for k in cloud.list_keys("exports/frozen/") if k.endswith("/failed.json")]
        assert len(failed) == 1, cloud.list_keys("exports/frozen/")
        report = cloud.read_json(failed[0])
        assert report["shards_total"] == 3 and report["shards_done"] < 3 and "AccessDenied" in report["cause"]
        assert not any(k.endswith(("latest.json", "export.json")) for k in cloud.list_keys("exports/frozen/"))
        alarm = next(a for a in evaluate_alarms(cloud.deployment, sqs) if "ExportDeadLetters" in a.logical_id)
        assert alarm.state == "ALARM", alarm
