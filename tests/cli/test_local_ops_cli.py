"""`local up` / `status` / `pull` pieces without a server: ports, image matching, state, listings, errors."""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import socket
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from cli import pull, status
from cli.aws_target import connect
from cli.errors import CliError
from cli.main import main
from labelloop_core.contract import ACCEPTED_MANIFEST, INPUT_MANIFEST, REVIEW_MANIFEST
from sandbox.imagerefs import ImageRef
from sandbox.localrun import RunSpec
from sandbox.localstate import StateDir, StateError
from sandbox.localup import Endpoint, LocalUpError, RootNames, UpSpec, banner_lines, copy_command, prepare
from sandbox.server import PortInUseError, check_port


def test_a_busy_port_is_refused_with_a_clear_message() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"port {port} on 127.0.0.1 is already in use"):
            check_port(port)
    check_port(port)  # free again
    with pytest.raises(PortInUseError, match="not within 1-65535"):
        check_port(70000)


def test_local_up_refuses_a_busy_port_before_synthesizing(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert main(["local", "up", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"labelloop: error: port {port} on 127.0.0.1 is already in use; stop what listens")
    assert err.count("\n") == 1


def _up(tmp_path: Path, images_root: Path | None = None, **run: Any) -> UpSpec:
    return UpSpec(run=RunSpec(images=tmp_path, out=tmp_path, **run), port=1, images_root=images_root)


def test_bad_options_fail_before_anything_is_deployed(tmp_path: Path) -> None:
    with pytest.raises(LocalUpError, match="--threshold"):
        prepare(_up(tmp_path, threshold=1.5))
    with pytest.raises(LocalUpError, match="--images-root"):
        prepare(_up(tmp_path, images_root=tmp_path / "missing"))
    with pytest.raises(LocalUpError, match="replay:FILE"):
        prepare(_up(tmp_path, model="replay:"))
    with pytest.raises(LocalUpError, match="contradicts"):
        prepare(_up(tmp_path, task_mode="verify", context={"labelloop.taskMode": "adjust"}))


def _jpeg(colour: tuple[int, int, int]) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), colour).save(buffer, "JPEG")
    return buffer.getvalue()


@mock_aws
def test_images_are_recognised_by_content_under_any_key(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    (root / "a").mkdir(parents=True)
    (root / "a" / "one.jpg").write_bytes(_jpeg((200, 0, 0)))
    (root / "two.jpg").write_bytes(_jpeg((0, 200, 0)))
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="data")
    names = RootNames(root)
    names.attach_bucket(s3, "data", "incoming/", "work/")
    # Uploaded under another dataset and file name: found by the bytes behind the key.
    s3.put_object(Bucket="data", Key="incoming/any/renamed.jpg", Body=(root / "a" / "one.jpg").read_bytes())
    assert names.resolve(ImageRef(key="incoming/any/renamed.jpg")) == "a/one.jpg"
    assert names.resolve(ImageRef(data=(root / "two.jpg").read_bytes())) == "two.jpg"
    # An EXIF-normalised copy has other bytes: found through the original it was derived from.
    derived = _jpeg((1, 2, 3))
    s3.put_object(Bucket="data", Key="work/derived/any/renamed.jpg", Body=derived)
    assert names.resolve(ImageRef(data=derived)) == "a/one.jpg"
    assert names.resolve(ImageRef(data=b"unknown")) is None


@mock_aws
def test_state_saves_incrementally_and_restores_without_events(tmp_path: Path) -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="data")
    s3.put_object(Bucket="data", Key="incoming/d/a b+c.jpg", Body=b"one", ContentType="image/jpeg")
    s3.put_object(Bucket="data", Key="exports/d/latest.json", Body=b"{}", Metadata={"k": "v"})
    state = StateDir(tmp_path / "state")
    assert state.saved() is None
    assert state.save(s3, "data", "LabelLoop") == 2
    saved = state.saved()
    assert saved is not None and saved.bucket == "data" and saved.objects == 2
    s3.delete_object(Bucket="data", Key="exports/d/latest.json")
    assert state.save(s3, "data", "LabelLoop") == 1
    assert len(list((tmp_path / "state" / "blobs").iterdir())) == 1  # the deleted object's blob is gone

    s3.create_bucket(Bucket="fresh")
    queue_url = boto3.client("sqs", region_name="us-east-1").create_queue(QueueName="events")["QueueUrl"]
    arn = f"arn:aws:sqs:us-east-1:123456789012:{queue_url.rsplit('/', 1)[-1]}"
    s3.put_bucket_notification_configuration(
        Bucket="fresh",
        NotificationConfiguration={"QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]},
    )
    sqs = boto3.client("sqs", region_name="us-east-1")
    sqs.purge_queue(QueueUrl=queue_url)
    assert state.restore(s3, "fresh", "123456789012") == 1
    obj = s3.get_object(Bucket="fresh", Key="incoming/d/a b+c.jpg")
    assert obj["Body"].read() == b"one" and obj["ContentType"] == "image/jpeg"
    assert "Messages" not in sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=0)
    s3.put_object(Bucket="fresh", Key="incoming/d/new.jpg", Body=b"x")  # notifications are back
    assert "Messages" in sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=0)


def test_a_foreign_state_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text('{"format": 99}')
    with pytest.raises(StateError, match="not a LabelLoop local state"):
        StateDir(tmp_path).saved()
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(StateError, match="unreadable"):
        StateDir(tmp_path).saved()


def test_the_banner_has_a_copy_paste_upload_line() -> None:
    endpoint = Endpoint("http://127.0.0.1:4566", "us-east-1", "bkt", "LabelLoop", "incoming/", "exports/", ("car",))
    line = copy_command(endpoint, "photos", "street")
    assert line == (
        "aws --endpoint-url http://127.0.0.1:4566 --region us-east-1 s3 cp photos s3://bkt/incoming/street/ --recursive"
    )
    text = "\n".join(banner_lines(endpoint))
    assert "data bucket: bkt" in text and "http://127.0.0.1:4566" in text and "s3 cp DIR" in text


def _file(relative: str, data: bytes = b"x") -> pull.RemoteFile:
    return pull.RemoteFile(f"exports/d/v/{relative}", relative, len(data), f'"{hashlib.md5(data).hexdigest()}"')


def test_the_listing_must_match_export_json() -> None:
    files = [_file("data.yaml"), _file("images/train/a.jpg"), _file("labels/train/a.txt")]
    files += [_file("images/val/sub/b.png"), _file("labels/val/sub/b.txt")]
    pull.check_listing(files, {"counts": {"images": 2, "train": 1, "val": 1}})
    with pytest.raises(CliError, match="counts 3 image"):
        pull.check_listing(files, {"counts": {"images": 3, "train": 1, "val": 1}})
    with pytest.raises(CliError, match="no label file"):
        pull.check_listing(files[:-1], {"counts": {"images": 2}})
    with pytest.raises(CliError, match=r"data\.yaml is missing"):
        pull.check_listing(files[1:], {"counts": {"images": 2}})


def test_a_local_file_counts_as_present_only_with_the_right_size_and_md5(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    assert pull._file_ok(path, _file("f", b"abc"))
    assert not pull._file_ok(path, _file("f", b"abd"))  # same size, other content
    assert not pull._file_ok(path, _file("f", b"abcd"))
    multipart = pull.RemoteFile("k", "f", 3, '"0123-2"')
    assert pull._file_ok(path, multipart)  # no MD5 in a multipart ETag: the size decides


def test_pull_refuses_a_folder_that_is_not_an_earlier_pull(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(CliError, match="not empty"):
        pull._prepare_out(tmp_path, "d", "v1", set())
    out = tmp_path / "out"
    assert pull._prepare_out(out, "d", "v1", {"data.yaml"}) == 0
    (out / "images").mkdir()
    (out / "images" / "old.jpg").write_bytes(b"old version")
    assert pull._prepare_out(out, "d", "v2", {"data.yaml"}) == 1
    with pytest.raises(CliError, match="holds dataset 'd'"):
        pull._prepare_out(out, "other", "v1", set())


@pytest.mark.parametrize(
    ("files", "state"),
    [
        ([], "building"),
        ([INPUT_MANIFEST, "shards/0.jsonl"], "pre-labeling"),
        ([INPUT_MANIFEST, "shards/0.jsonl", "prelabeled/0.jsonl"], "routing"),
        ([INPUT_MANIFEST, "shards/0.jsonl", "prelabeled/0.jsonl", REVIEW_MANIFEST], "in review"),
        ([INPUT_MANIFEST, "shards/0.jsonl", "prelabeled/0.jsonl", ACCEPTED_MANIFEST], "merging"),
    ],
)
def test_a_running_batch_state_follows_its_files(files: list[str], state: str) -> None:
    assert status._running_state({f"p/{f}" for f in files}, "p/") == state


def test_a_failure_reason_names_the_error_cause_and_job() -> None:
    report: dict[str, Any] = {
        "error": "ReviewFailed",
        "cause": {"errorMessage": "job failed"},
        "review": {"job_name": "j1", "failure_reason": "no workers"},
    }
    assert status.failure_reason(report) == "ReviewFailed: job failed: labeling job j1: no workers"


def _args(**values: Any) -> argparse.Namespace:
    base = {"stack": "LabelLoop", "endpoint_url": None, "region": None, "profile": None}
    return argparse.Namespace(**{**base, **values})


def test_aws_without_region_or_credentials_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(CliError, match="no AWS region configured"):
        connect(_args())
    with pytest.raises(CliError, match="no AWS credentials found"):
        connect(_args(region="eu-west-1"))
    with pytest.raises(CliError, match="must be an http"):
        connect(_args(endpoint_url="127.0.0.1:4566"))


def test_the_status_table_shows_states_jobs_reasons_theta_and_export() -> None:
    document = {
        "stack": "LabelLoop",
        "bucket": "bkt",
        "endpoint": None,
        "region": "eu-west-1",
        "datasets": [
            {
                "name": "street",
                "images": {
                    "uploaded": 12,
                    "received": 10,
                    "auto_accepted": 6,
                    "reviewed": 3,
                    "rejected": 1,
                    "rejected_reasons": {"not an image": 1},
                    "in_progress": 2,
                    "in_failed_batches": 0,
                },
                "batches": [
                    {"batch_id": "b1", "state": "merged", "images": 10},
                    {
                        "batch_id": "b2",
                        "state": "in review",
                        "images": 2,
                        "labeling_job": {
                            "name": "labelloop-street-1",
                            "status": "InProgress",
                            "counters": {"HumanLabeled": 1},
                        },
                    },
                    {"batch_id": "b3", "state": "failed", "images": 0, "reason": "ReviewFailed: no workers"},
                ],
                "threshold": {
                    "theta": 0.8125,
                    "lower_bound": 0.64,
                    "target": 0.6,
                    "confidence_level": 0.95,
                    "pairs_used": 40,
                },
                "threshold_in_use": {"value": 0.8125, "source": "calibrated"},
                "latest_export": {"version": "v1", "images": 9, "prefix": "s3://bkt/exports/street/v1/"},
            }
        ],
    }
    table = status.render(document)
    assert "street: 12 uploaded, 10 received, 6 auto-accepted, 3 reviewed, 1 rejected, 2 in progress" in table
    assert "rejected 1 x not an image" in table
    assert "θ 0.8125 in use (calibrated); calibrated θ 0.812: mIoU lower bound 0.640 ≥ target 0.6" in table
    assert "latest export v1: 9 image(s) at s3://bkt/exports/street/v1/" in table
    assert "batches: 1 in review, 1 merged, 1 failed" in table
    assert "job labelloop-street-1 InProgress (1 labeled)" in table
    assert "reason: ReviewFailed: no workers" in table


def test_status_names_a_running_and_a_failed_distributed_export() -> None:
    """Versions without export.json are shown: shards done so far, or failed.json's cause."""
    from cli.aws_target import Target
    from labelloop_core import contract

    with mock_aws():
        session = boto3.Session(region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s")
        s3 = session.client("s3")
        s3.create_bucket(Bucket="bkt")
        root = f"{contract.DEFAULT_EXPORTS_PREFIX}street/"
        s3.put_object(Bucket="bkt", Key=f"{root}v1/{contract.EXPORT_FILE}", Body=b"{}")
        for index in range(3):
            s3.put_object(Bucket="bkt", Key=f"{root}v2/{contract.EXPORT_SHARDS_DIR}{index:05d}.jsonl", Body=b"")
        s3.put_object(Bucket="bkt", Key=f"{root}v2/{contract.EXPORT_SHARD_DONE_DIR}00000.json", Body=b"{}")
        s3.put_object(Bucket="bkt", Key=f"{root}v3/{contract.EXPORT_SHARDS_DIR}00000.jsonl", Body=b"")
        failed = {"cause": "shard 0: AccessDenied on PutObject"}
        s3.put_object(Bucket="bkt", Key=f"{root}v3/{contract.EXPORT_FAILED_FILE}", Body=json.dumps(failed).encode())
        target = Target(session, None, "LabelLoop", {"DataBucketName": "bkt"})

        unfinished = status._unfinished_exports(target, "street")

    assert unfinished == [
        {"version": "v2", "state": "exporting", "shards": 3, "shards_done": 1},
        {"version": "v3", "state": "failed", "reason": "shard 0: AccessDenied on PutObject"},
    ]
    document = {
        "stack": "LabelLoop",
        "bucket": "bkt",
        "endpoint": None,
        "region": "us-east-1",
        "datasets": [
            {
                "name": "street",
                "images": {
                    "uploaded": 1,
                    "received": 1,
                    "auto_accepted": 1,
                    "reviewed": 0,
                    "rejected": 0,
                    "rejected_reasons": {},
                    "in_progress": 0,
                    "in_failed_batches": 0,
                },
                "batches": [],
                "threshold": None,
                "threshold_in_use": None,
                "latest_export": None,
                "unfinished_exports": unfinished,
            }
        ],
    }
    table = status.render(document)
    assert "export v2 in progress: 1 of 3 shard(s)" in table
    assert "export v3 FAILED: shard 0: AccessDenied on PutObject" in table


def test_status_shows_each_datasets_cost_so_far() -> None:
    """The merged batches' ``cost`` sections summed per dataset (a failed batch's report has none)."""
    from cli.aws_target import Target
    from labelloop_core import contract
    from labelloop_core.batch_cost import BatchWork, batch_cost
    from labelloop_core.contract import BATCH_REPORT_FILE, Cost
    from labelloop_core.pricing import prices

    def work(images: int, reviewed: int) -> BatchWork:
        return BatchWork(images, images, "sagemaker", 1, 0.25, "groundtruth", reviewed, 1, 12, 30, 1, 20)

    costs = [batch_cost(work(10, 4), prices()), batch_cost(work(30, 6), prices())]
    with mock_aws():
        session = boto3.Session(region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s")
        s3 = session.client("s3")
        s3.create_bucket(Bucket="bkt")
        for index, cost in enumerate(costs):
            key = contract.batch_prefix(contract.DEFAULT_WORK_PREFIX, "street", f"b{index}") + BATCH_REPORT_FILE
            s3.put_object(Bucket="bkt", Key=key, Body=json.dumps({"status": "labeled", Cost.FIELD: cost}).encode())
        failed = contract.batch_prefix(contract.DEFAULT_WORK_PREFIX, "street", "b9") + BATCH_REPORT_FILE
        s3.put_object(Bucket="bkt", Key=failed, Body=json.dumps({"status": "failed", "error": "x"}).encode())
        target = Target(session, None, "LabelLoop", {"DataBucketName": "bkt"})
        dataset = status.collect_dataset(target, "street", None)

    cost = dataset[Cost.FIELD]
    assert cost["batches"] == 2 and cost[Cost.LABELED_IMAGES] == 40
    for name, value in cost[Cost.COMPONENTS].items():
        assert value == pytest.approx(sum(c[Cost.COMPONENTS][name] for c in costs))
    assert cost[Cost.TOTAL] == sum(cost[Cost.COMPONENTS].values())
    assert cost[Cost.TOTAL] == pytest.approx(costs[0][Cost.TOTAL] + costs[1][Cost.TOTAL])
    assert cost[Cost.PER_IMAGE] == cost[Cost.TOTAL] / 40
    line = status.cost_line(cost)
    assert line.startswith(f"  cost so far: ${cost[Cost.TOTAL]:.4f}, ${cost[Cost.PER_IMAGE]:.4f} per labeled image")
    assert "human review $0.8000" in line  # 10 objects x $0.08
    assert status.cost_line(None) == "  cost so far: no merged batch yet"
