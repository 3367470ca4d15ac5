"""The Label Studio review backend against a REAL Label Studio server, the S3 emulation served on loopback."""

from __future__ import annotations

import base64
import io
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.server import ThreadedMotoServer
from PIL import Image

from adapters import labelstudio_review
from adapters.aws import reset_clients
from adapters.labelstudio import LabelStudioClient
from adapters.labelstudio_review import LabelStudioReview, LabelStudioSettings, open_key
from adapters.review import token_key
from adapters.review_backends import ReviewBatch
from labelloop_core.boxes import Box
from labelloop_core.classes import ClassRegistry
from labelloop_core.contract import (
    ADJUST_MANIFEST,
    ISSUES_KEY,
    META_KEY,
    PRELABEL_ATTRIBUTE,
    REVIEW_FILE,
    REVIEW_MANIFEST,
    VERIFIED_MANIFEST,
)
from labelloop_core.labelstudio import KEY_FIELD
from labelloop_core.labelstudio_verify import verify_result
from labelloop_core.manifest import bbox_label_line, dumps_line, parse_bbox_label
from tests.labelstudio.server import Server, free_port

BUCKET = "labelloop-data"
LABELS = ("car", "person")
PRE = PRELABEL_ATTRIBUTE
WIDTH, HEIGHT = 200, 100


@dataclass
class Cloud:
    s3: Any
    endpoint: str
    secret_arn: str


@pytest.fixture
def cloud(label_studio: Server) -> Iterator[Cloud]:
    """moto for this test, served on a loopback port so Label Studio can fetch the images."""
    with mock_aws():
        reset_clients()
        labelstudio_review._SECRETS.clear()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            endpoint = f"http://{host}:{port}"
            s3 = boto3.client("s3", region_name="us-east-1")
            s3.create_bucket(Bucket=BUCKET)
            secret = {
                "token": label_studio.token,
                "s3": {"endpoint": endpoint, "region": "us-east-1", "accessKeyId": "x", "secretAccessKey": "y"},
            }
            arn = boto3.client("secretsmanager", region_name="us-east-1").create_secret(
                Name="labelloop/label-studio", SecretString=json.dumps(secret)
            )["ARN"]
            yield Cloud(s3, endpoint, arn)
        finally:
            server.stop()
            reset_clients()


def _jpeg(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (WIDTH, HEIGHT), colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def make_batch(cloud: Cloud, dataset: str, names: list[str], batch_id: str = "b1") -> ReviewBatch:
    """Images in S3 and the batch's review manifest with one pre-labeled car per image."""
    rows = []
    for index, name in enumerate(names):
        key = f"incoming/{dataset}/{name}"
        cloud.s3.put_object(Bucket=BUCKET, Key=key, Body=_jpeg((40 * index % 255, 90, 160)))
        line = bbox_label_line(
            f"s3://{BUCKET}/{key}",
            PRE,
            (WIDTH, HEIGHT, 3),
            [Box("car", 20, 10, 40, 30, 0.42)],
            ClassRegistry(LABELS),
            human_annotated=False,
            job_name=PRE,
            extra_metadata={"image-confidence": 0.42, "model": "replay"},
        )
        line[META_KEY] = {"key": key, "width": WIDTH, "height": HEIGHT, "route": "review"}
        rows.append(dumps_line(line))
    prefix = f"work/batches/{dataset}/{batch_id}/"
    cloud.s3.put_object(Bucket=BUCKET, Key=f"{prefix}{REVIEW_MANIFEST}", Body="\n".join(rows).encode())
    return ReviewBatch(BUCKET, dataset, batch_id, prefix, f"labelloop-{dataset}-{batch_id}", "work/")


def backend(cloud: Cloud, label_studio: Server, namespace: str) -> LabelStudioReview:
    settings = LabelStudioSettings(
        url=label_studio.url,
        token_secret_arn=cloud.secret_arn,
        namespace=namespace,
        labels=LABELS,
        model_version="replay:test",
    )
    return LabelStudioReview(settings)


def box(x: float, y: float, w: float, h: float, label: str = "car") -> dict[str, Any]:
    return {
        "from_name": "label",
        "to_name": "image",
        "type": "rectanglelabels",
        "original_width": WIDTH,
        "original_height": HEIGHT,
        "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": [label]},
    }


def tasks_by_name(ls: LabelStudioClient, project_id: int, batch: ReviewBatch) -> dict[str, dict[str, Any]]:
    return {t["data"][KEY_FIELD].rsplit("/", 1)[-1]: t for t in ls.batch_tasks(project_id, batch.batch_id)}


def test_project_and_tasks_with_predictions_created_once(cloud: Cloud, label_studio: Server, unique: str) -> None:
    review = backend(cloud, label_studio, unique)
    batch = make_batch(cloud, "cars", ["a.jpg", "b.jpg"])
    started = review.start(batch)
    assert started["imported"] == 2 and started["project_url"].startswith(label_studio.url)
    again = review.start(batch)  # a retried StartReview: same project, no new task
    assert again["project_id"] == started["project_id"] and again["imported"] == 0 and again["already_present"] == 2
    ls = review.client()
    (project,) = ls.find_projects(f"{unique}/cars")
    assert 'canRotate="false"' in project["label_config"] and '<Label value="person"/>' in project["label_config"]
    assert project["show_collab_predictions"] is True and project["model_version"] == "replay:test"
    tasks = tasks_by_name(ls, project["id"], batch)
    assert sorted(tasks) == ["a.jpg", "b.jpg"]
    (prediction,) = tasks["a.jpg"]["predictions"]
    assert prediction["model_version"] == "replay:test" and prediction["score"] == pytest.approx(0.42)
    (region,) = prediction["result"]
    assert region["value"] == {"x": 10.0, "y": 10.0, "width": 20.0, "height": 30.0, "rotation": 0,
                               "rectanglelabels": ["car"]}  # fmt: skip
    assert (region["original_width"], region["original_height"]) == (WIDTH, HEIGHT)
    assert tasks["a.jpg"]["data"]["image"] == f"s3://{BUCKET}/incoming/cars/a.jpg"


def test_reimport_after_a_crash_between_import_and_bookkeeping_creates_no_duplicate(
    cloud: Cloud, label_studio: Server, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    review = backend(cloud, label_studio, unique)
    batch = make_batch(cloud, "crash", ["a.jpg", "b.jpg", "c.jpg"])
    ls = review.client()
    project = review.ensure_project(ls, batch)
    # A retried POST whose first response was lost: Label Studio now holds two copies of one task.
    tasks, _ = review._tasks(batch)
    ls.post(f"/api/projects/{project['id']}/import", tasks[:1])
    ls.post(f"/api/projects/{project['id']}/import", tasks[:2])

    def crash(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("Lambda timed out right after the import")

    real_import = LabelStudioClient.import_tasks

    def import_then_crash(self: LabelStudioClient, *args: Any, **kwargs: Any) -> dict[str, int]:
        real_import(self, *args, **kwargs)
        crash()
        return {}

    monkeypatch.setattr(LabelStudioClient, "import_tasks", import_then_crash)
    with pytest.raises(RuntimeError):
        review.start(batch)
    monkeypatch.setattr(LabelStudioClient, "import_tasks", real_import)
    result = review.start(batch)  # the workflow's retry
    assert result["imported"] == 0 and result["duplicates_removed"] == 0
    keys = [t["data"][KEY_FIELD] for t in ls.batch_tasks(int(project["id"]), batch.batch_id)]
    assert sorted(keys) == sorted(f"b1/incoming/crash/{n}" for n in ("a.jpg", "b.jpg", "c.jpg"))


def test_skip_keeps_the_batch_open_and_a_late_edit_is_what_is_collected(
    cloud: Cloud, label_studio: Server, unique: str
) -> None:
    review = backend(cloud, label_studio, unique)
    batch = make_batch(cloud, "skips", ["a.jpg", "b.jpg"])
    project_id = review.start(batch)["project_id"]
    ls = review.client()
    tasks = tasks_by_name(ls, project_id, batch)
    ls.annotate(tasks["a.jpg"]["id"], [], skip=True)
    first = ls.annotate(tasks["b.jpg"]["id"], [box(10, 10, 20, 30)])
    outcome = review.outcome(batch)
    assert outcome["status"] == "InProgress"
    assert outcome["counters"] == {"TotalLabeled": 1, "HumanLabeled": 1, "Unlabeled": 1, "Skipped": 1,
                                   "FailedNonRetryableError": 0}  # fmt: skip
    # The server restarts mid-review: nothing is lost, the backend carries on.
    label_studio.restart()
    ls = review.client()
    ls.update_annotation(first["id"], [box(50, 0, 25, 50, "person")])  # b: the reviewer changes their mind
    ls.annotate(tasks["a.jpg"]["id"], [box(-5, 90, 20, 20), box(40, 40, -10, -10)])  # a: finally answered
    outcome = review.outcome(batch)
    assert outcome["status"] == "Completed" and outcome["counters"]["TotalLabeled"] == 2
    body = cloud.s3.get_object(Bucket=BUCKET, Key=batch.output_key)["Body"].read().decode()
    lines = {json.loads(raw)[META_KEY]["key"]: json.loads(raw) for raw in body.splitlines()}
    b = parse_bbox_label(lines["incoming/skips/b.jpg"], batch.job_name)
    assert [(x.label, x.left, x.top, x.width, x.height) for x in b.boxes] == [("person", 100, 0, 50, 50)]
    a = lines["incoming/skips/a.jpg"]
    assert [(x.left, x.top, x.width, x.height) for x in parse_bbox_label(a, batch.job_name).boxes] == [
        (0, 90, 30, 10),  # clipped to the image
        (60, 30, 20, 10),  # negative size normalised
    ]
    issues = a[f"{batch.job_name}-metadata"][ISSUES_KEY]
    assert any("negative" in note for note in issues) and any("clipped" in note for note in issues)


def test_images_resolve_through_the_task_url_to_the_bucket(cloud: Cloud, label_studio: Server, unique: str) -> None:
    review = backend(cloud, label_studio, unique)
    batch = make_batch(cloud, "images", ["deep/x.jpg"])
    project_id = review.start(batch)["project_id"]
    ls = review.client()
    (task,) = ls.batch_tasks(project_id, batch.batch_id)
    shown = ls.task(int(task["id"]))["data"]["image"]  # what the browser gets
    assert shown.startswith(f"/tasks/{task['id']}/resolve/?fileuri=")
    assert base64.b64decode(shown.split("fileuri=")[1]).decode() == f"s3://{BUCKET}/incoming/images/deep/x.jpg"

    class Keep(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    request = urllib.request.Request(label_studio.url + shown, headers={"Authorization": f"Token {label_studio.token}"})
    with pytest.raises(urllib.error.HTTPError) as redirect:
        urllib.request.build_opener(Keep).open(request)
    assert redirect.value.code in (302, 303)
    location = redirect.value.headers["Location"]
    assert location.startswith(cloud.endpoint) and "X-Amz-Signature" in location
    with urllib.request.urlopen(location) as response:
        assert Image.open(io.BytesIO(response.read())).size == (WIDTH, HEIGHT)


def test_the_reconcile_sweep_completes_the_batch_once(cloud: Cloud, label_studio: Server, unique: str) -> None:
    from handlers import review_sync

    review = backend(cloud, label_studio, unique)
    batch = make_batch(cloud, "sweep", ["a.jpg"])
    token_doc = {"token": "never-issued", "job_name": batch.job_name, "bucket": BUCKET, "dataset": batch.dataset,
                 "batch_id": batch.batch_id, "batch_prefix": batch.batch_prefix, "backend": "labelstudio"}  # fmt: skip
    for key in (token_key("work/", batch.job_name), open_key("work/", batch.job_name)):
        cloud.s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(token_doc).encode())
    project_id = review.start(batch)["project_id"]
    cfg = review_sync.ReviewSyncSettings(bucket=BUCKET, work_prefix="work/", labelstudio=review.settings)
    assert review_sync.sweep(cfg, review) == {"reviews": {batch.job_name: "waiting"}}
    ls = review.client()
    (task,) = ls.batch_tasks(project_id, batch.batch_id)
    ls.annotate(int(task["id"]), [box(10, 10, 20, 30)])
    # No workflow waits here (the full pipeline test has one): the token is used once, the batch recorded.
    assert review_sync.sweep(cfg, review)["reviews"][batch.job_name].startswith("completed (")
    token = json.loads(cloud.s3.get_object(Bucket=BUCKET, Key=token_key("work/", batch.job_name))["Body"].read())
    assert token["resolved"] in ("sent", "stale") and token["status"] == "Completed"
    assert review_sync.sweep(cfg, review) == {"reviews": {}}  # closed: nothing left to sweep
    record = json.loads(cloud.s3.get_object(Bucket=BUCKET, Key=f"{batch.batch_prefix}{REVIEW_FILE}")["Body"].read())
    assert record["status"] == "Completed" and record["output_manifest"] == f"s3://{BUCKET}/{batch.output_key}"


def test_verify_stage_judged_in_label_studio_splits_into_verified_and_adjust(
    cloud: Cloud, label_studio: Server, unique: str
) -> None:
    """Verify-then-adjust's first stage: a correct/incorrect project, answers -> the split the workflow runs next."""
    from handlers import review_stages, review_sync

    review = backend(cloud, label_studio, unique)
    base = make_batch(cloud, "verify", ["a.jpg", "b.jpg", "c.jpg"])
    assert review_stages.plan(BUCKET, base.batch_prefix)["verify"] == 3
    batch = ReviewBatch.for_stage(
        BUCKET, "verify", "b1", base.batch_prefix, f"{base.job_name}-verify", "work/", "verify"
    )
    token_doc = {"token": "never-issued", "job_name": batch.job_name, "bucket": BUCKET, "dataset": batch.dataset,
                 "batch_id": batch.batch_id, "batch_prefix": batch.batch_prefix, "backend": "labelstudio",
                 "stage": "verify", "task_mode": "verify"}  # fmt: skip
    for key in (token_key("work/", batch.job_name), open_key("work/", batch.job_name)):
        cloud.s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(token_doc).encode())
    project_id = review.start(batch)["project_id"]
    ls = review.client()
    (project,) = ls.find_projects(f"{unique}/verify#verify")
    assert project["id"] == project_id and '<Choices name="verdict"' in project["label_config"]
    assert ls.find_projects(f"{unique}/verify") == []  # the adjust stage's project is made when it starts
    tasks = tasks_by_name(ls, project_id, batch)
    assert sorted(tasks) == ["a.jpg", "b.jpg", "c.jpg"] and all(t["predictions"] for t in tasks.values())
    shown = [{k: v for k, v in r.items() if k != "score"} for r in tasks["a.jpg"]["predictions"][0]["result"]]
    ls.annotate(tasks["a.jpg"]["id"], verify_result("correct", shown=shown))
    ls.annotate(tasks["b.jpg"]["id"], verify_result("incorrect", "misses the second car", shown))
    ls.annotate(tasks["c.jpg"]["id"], [], skip=True)
    cfg = review_sync.ReviewSyncSettings(bucket=BUCKET, work_prefix="work/", labelstudio=review.settings)
    assert review_sync.sweep(cfg, review) == {"reviews": {batch.job_name: "waiting"}}  # c was only skipped
    ls.annotate(tasks["c.jpg"]["id"], shown)  # submitted without picking a verdict (the API does not force it)
    assert review_sync.sweep(cfg, review)["reviews"][batch.job_name].startswith("completed (")
    record = json.loads(
        cloud.s3.get_object(Bucket=BUCKET, Key=f"{batch.batch_prefix}review-verify.json")["Body"].read()
    )
    assert record["status"] == "Completed" and record["stage"] == "verify"
    split = review_stages.split(BUCKET, batch.batch_prefix, record)
    assert (split["verified_correct"], split["judged_incorrect"], split["no_verdict"], split["adjust"]) == (1, 1, 1, 2)
    verified = cloud.s3.get_object(Bucket=BUCKET, Key=f"{batch.batch_prefix}{VERIFIED_MANIFEST}")["Body"].read()
    (line,) = [json.loads(raw) for raw in verified.decode().splitlines()]
    assert line[META_KEY]["key"] == "incoming/verify/a.jpg" and line[META_KEY]["provenance"] == "verified"
    adjust = cloud.s3.get_object(Bucket=BUCKET, Key=f"{batch.batch_prefix}{ADJUST_MANIFEST}")["Body"].read().decode()
    reasons = {json.loads(raw)[META_KEY]["key"]: json.loads(raw)[META_KEY] for raw in adjust.splitlines()}
    assert reasons["incoming/verify/b.jpg"]["verification"]["comments"] == ["misses the second car"]
    assert reasons["incoming/verify/c.jpg"]["adjust_reason"] == "no_verdict"
    # The adjust stage is the dataset's ordinary boxes project, with the rejected images' predictions.
    adjust_batch = ReviewBatch.for_stage(
        BUCKET, "verify", "b1", batch.batch_prefix, f"{base.job_name}-adjust", "work/", "adjust"
    )
    adjust_project = review.start(adjust_batch)["project_id"]
    assert adjust_project != project_id and "<Choices" not in ls.find_projects(f"{unique}/verify")[0]["label_config"]
    assert sorted(tasks_by_name(ls, adjust_project, adjust_batch)) == ["b.jpg", "c.jpg"]
