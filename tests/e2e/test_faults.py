"""Faults in the emulation: transient ones change nothing a user gets, permanent ones end with a reason.

- the same `labelloop local run` with and without injected throttling/5xx on the deployed
  functions' S3, Step Functions, SageMaker and SQS calls, plus one function killed mid-work, ends
  with the same report counts and byte-identical YOLO files;
- a bucket policy denying the export prefix fails the export into its dead-letter queue (the
  alarm fires, the reason names the denial), and an image deleted before its batch runs is
  rejected with a reason.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cli.main import main
from sandbox.alarms import dead_letter_reason, evaluate_alarms
from sandbox.faults import FaultInjector
from sandbox.harness import LocalCloud
from sandbox.workforce import AcceptPrelabels

from .conftest import LOCAL_WORKTEAM

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module", autouse=True)
def assembly_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    if os.environ.get("LABELLOOP_ASSEMBLY_CACHE"):
        yield
        return
    os.environ["LABELLOOP_ASSEMBLY_CACHE"] = str(tmp_path_factory.mktemp("assemblies"))
    yield
    os.environ.pop("LABELLOOP_ASSEMBLY_CACHE", None)


def _images(root: Path, count: int) -> None:
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        buffer = io.BytesIO()
        Image.new("RGB", (64, 48), (i * 19 % 255, 120, 60)).save(buffer, "JPEG")
        (root / f"img{i:02d}.jpg").write_bytes(buffer.getvalue())


def _fingerprint(dataset: Path) -> dict[str, str]:
    """Every exported file but export.json (which records times and triggers), by content."""
    return {
        p.relative_to(dataset).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(dataset.rglob("*"))
        if p.is_file() and p.name != "export.json"
    }


COUNTS = ("images_uploaded", "images_received", "auto_accepted", "human_reviewed", "exported_images")


def test_transient_faults_and_a_crash_change_nothing_the_user_gets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = tmp_path / "images"
    _images(images, 12)
    common = ["--images", str(images), "--labels", "car", "--context", "maxBatchSize=6", "--seed", "11"]
    assert main(["local", "run", *common, "--out", str(tmp_path / "clean")]) == 0, capsys.readouterr().err
    capsys.readouterr()
    faults = ["s3:*:0.1", "stepfunctions:*:0.2", "sagemaker:*:0.3", "sqs:*:0.1"]
    faulted = [arg for rule in faults for arg in ("--inject-faults", rule)] + ["--crash-once", "Prelabel:2"]
    code = main(["local", "run", *common, *faulted, "--out", str(tmp_path / "faulty")])
    err = capsys.readouterr().err
    assert code == 0, err
    clean = json.loads((tmp_path / "clean" / "report.json").read_text())
    faulty = json.loads((tmp_path / "faulty" / "report.json").read_text())
    assert (
        {k: faulty[k] for k in COUNTS}
        == {k: clean[k] for k in COUNTS}
        == {
            "images_uploaded": 12,
            "images_received": 12,
            "auto_accepted": 0,
            "human_reviewed": 12,
            "exported_images": 12,
        }
    )
    assert faulty["rejected"] == clean["rejected"] == []
    assert faulty["images"] == clean["images"]
    assert len(clean["batches"]) == len(faulty["batches"]) == 2  # --context maxBatchSize=6 reached the stack
    injected = faulty["faults"]["injected"]
    assert sum(injected.values()) >= 5 and {k.split(":")[0] for k in injected} >= {"s3"}, injected
    assert len(faulty["faults"]["crashed"]) == 1 and "Prelabel" in faulty["faults"]["crashed"][0]
    assert _fingerprint(tmp_path / "faulty" / "dataset") == _fingerprint(tmp_path / "clean" / "dataset")
    assert faulty["alarms"] == clean["alarms"] == []


def test_permanent_faults_end_with_a_reason_and_the_dead_letter_alarm(
    start_cloud: Callable[..., LocalCloud], pipeline_assembly: Path, tmp_path: Path
) -> None:
    cloud = start_cloud(
        assembly=pipeline_assembly,
        workforce=AcceptPrelabels(),
        workteams=[LOCAL_WORKTEAM],
        esm_mode="manual",
        fault_injector=FaultInjector(bucket_policies=True),
    )
    exports = cloud.outputs["ExportsPrefix"]
    s3 = cloud.client("s3")
    policy = json.loads(s3.get_bucket_policy(Bucket=cloud.bucket)["Policy"]) if _has_policy(s3, cloud.bucket) else {}
    statements = list(policy.get("Statement", []))
    statements.append(
        {
            "Sid": "FreezeExports",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:PutObject",
            "Resource": f"arn:aws:s3:::{cloud.bucket}/{exports}*",
        }
    )
    s3.put_bucket_policy(Bucket=cloud.bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": statements}))
    _images(tmp_path / "imgs", 4)
    keys = cloud.drop_images(tmp_path / "imgs", dataset="frozen")
    s3.delete_object(Bucket=cloud.bucket, Key=keys[0])  # deleted before its batch runs
    cloud.flush_event_sources()
    dlq = cloud.queue_url("ExportDeadLetters")
    sqs = cloud.client("sqs")
    message = cloud.wait_for(
        lambda: sqs.receive_message(QueueUrl=dlq, VisibilityTimeout=0).get("Messages"),
        timeout=180,
        message="the failed export in its dead-letter queue",
    )[0]
    reason = dead_letter_reason(message["Body"])
    why = cloud.diagnostics()
    assert "AccessDenied" in reason and "ExportYolo" in reason, (reason, why)
    states = {a.logical_id: a for a in evaluate_alarms(cloud.deployment, sqs)}
    export_alarm = next(a for lid, a in states.items() if "ExportDeadLetters" in lid)
    assert export_alarm.state == "ALARM", export_alarm
    assert next(a for lid, a in states.items() if "IntakeDeadLetters" in lid).state == "OK"
    # The deleted image: rejected by its batch with a reason, the other three labeled.
    batch = next(k for k in cloud.list_keys("work/batches/frozen/") if k.endswith("/rejected.jsonl"))
    rejected = cloud.read_jsonl(batch)
    assert [r["key"] for r in rejected] == [keys[0]] and rejected[0]["reason"], rejected
    assert not any(k.endswith(("latest.json", "export.json")) for k in cloud.list_keys(exports)), why


def _has_policy(s3: Any, bucket: str) -> bool:
    try:
        s3.get_bucket_policy(Bucket=bucket)
    except Exception:
        return False
    return True
