"""Faults in the emulation: transient ones change nothing a user gets, permanent ones end with a reason.

- the same `labelloop local run` with and without injected throttling/5xx on the deployed
  functions' S3, Step Functions and SageMaker calls, plus one function killed mid-work, ends
  with the same report counts and byte-identical YOLO files;
- a source image deleted before its batch runs fails the batch with the reason in its report; a
  bucket policy denying the export prefix fails the export into its dead-letter queue (the
  alarm fires, the reason names the denial).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cli.main import main
from labelloop_core.contract import BATCH_REPORT_FILE, RUN_REPORT_FILE
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
        # training/ records each run's labeling-job names and dates (its images are checked elsewhere).
        if p.is_file() and p.name != "export.json" and "training" not in p.relative_to(dataset).parts
    }


COUNTS = ("images_uploaded", "images_received", "auto_accepted", "human_reviewed", "exported_images")


def test_transient_faults_and_a_crash_change_nothing_the_user_gets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = tmp_path / "images"
    _images(images, 12)
    common = ["--images", str(images), "--labels", "car", "--context", "valFraction=0.5", "--seed", "11"]
    assert main(["local", "run", *common, "--out", str(tmp_path / "clean")]) == 0, capsys.readouterr().err
    capsys.readouterr()
    faults = ["s3:*:0.1", "stepfunctions:*:0.3", "sagemaker:*:0.3"]
    faulted = [arg for rule in faults for arg in ("--inject-faults", rule)] + ["--crash-once", "Prelabel:2"]
    faulted += ["--timeout", "300"]
    code = main(["local", "run", *common, *faulted, "--out", str(tmp_path / "faulty")])
    err = capsys.readouterr().err
    assert code == 0, err
    clean = json.loads((tmp_path / "clean" / RUN_REPORT_FILE).read_text())
    faulty = json.loads((tmp_path / "faulty" / RUN_REPORT_FILE).read_text())
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
    assert clean["export"]["counts"]["val"] > 0  # --context valFraction=0.5 reached the deployed export
    assert json.loads((tmp_path / "faulty" / "dataset" / "export.json").read_text())["val_fraction"] == 0.5
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
    s3, sqs = cloud.client("s3"), cloud.client("sqs")
    # 1. A source image deleted before its batch runs: the batch fails, its report.json says why.
    _images(tmp_path / "gone", 3)
    keys = cloud.drop_images(tmp_path / "gone", dataset="gone")
    s3.delete_object(Bucket=cloud.bucket, Key=keys[0])
    cloud.flush_event_sources()
    report_key = cloud.wait_for(
        lambda: [k for k in cloud.list_keys("work/batches/gone/") if k.endswith(f"/{BATCH_REPORT_FILE}")],
        timeout=180,
        message="the batch's report",
    )[0]
    report = cloud.read_json(report_key)
    text = json.dumps(report)
    assert report["status"] == "failed" and keys[0].rsplit("/", 1)[-1] in text, report
    # 2. A bucket policy denying the export prefix: the export fails into its DLQ, the alarm fires.
    exports = cloud.outputs["ExportsPrefix"]
    deny = {
        "Sid": "FreezeExports",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:PutObject",
        "Resource": f"arn:aws:s3:::{cloud.bucket}/{exports}*",
    }
    s3.put_bucket_policy(Bucket=cloud.bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [deny]}))
    _images(tmp_path / "frozen", 3)
    cloud.drop_images(tmp_path / "frozen", dataset="frozen")
    cloud.flush_event_sources()
    dlq = cloud.queue_url("ExportDeadLetters")
    message = cloud.wait_for(
        lambda: sqs.receive_message(QueueUrl=dlq, VisibilityTimeout=0).get("Messages"),
        timeout=180,
        message="the failed export in its dead-letter queue",
    )[0]
    reason = dead_letter_reason(message["Body"])
    why = cloud.diagnostics()
    assert "AccessDenied" in reason and "ExportYolo" in reason and "data.yaml" in reason, (reason, why)
    states = {a.logical_id: a for a in evaluate_alarms(cloud.deployment, sqs)}
    export_alarm = next(a for lid, a in states.items() if "ExportDeadLetters" in lid)
    assert export_alarm.state == "ALARM", export_alarm
    assert next(a for lid, a in states.items() if "IntakeDeadLetters" in lid).state == "OK"
    assert not any(k.endswith(("latest.json", "export.json")) for k in cloud.list_keys(f"{exports}frozen/")), why
