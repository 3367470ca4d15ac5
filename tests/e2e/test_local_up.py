"""`labelloop local up` end to end: the real command in a child process, driven like AWS.

One server (``--state``) serves the module: the AWS CLI and boto3 upload images from outside the
process, ``labelloop status`` / ``labelloop pull`` read the results over HTTP, a SIGTERM arrives
while a batch runs, and a restart on the same ``--state`` keeps the datasets and the bucket name.
Synthesized assemblies are cached for the module (``LABELLOOP_ASSEMBLY_CACHE``).
"""

from __future__ import annotations

import io
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest

from cli.local_up import STOP_BUDGET_S
from cli.main import main
from tests.yolo_checker import check_yolo_dataset

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
AWS_CLI = Path(sys.executable).with_name("aws")
#: Startup synthesizes the stack (minutes on a loaded machine) and deploys it.
STARTUP_TIMEOUT_S = 900.0
PIPELINE_TIMEOUT_S = 240.0
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def jpeg(colour: tuple[int, int, int], size: tuple[int, int] = (128, 96)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "JPEG")
    return buffer.getvalue()


@dataclass
class Server:
    """A running ``labelloop local up`` child process and what it printed."""

    process: subprocess.Popen[str]
    port: int
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    output: list[str] = field(default_factory=list)
    bucket: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_for_line(self, fragment: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1.0)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            self.output.append(line)
            if fragment in line:
                return line
        raise AssertionError(f"no line with {fragment!r} within {timeout}s; output so far:\n{''.join(self.output)}")

    def drain_output(self) -> str:
        while not self.lines.empty():
            self.output.append(self.lines.get())
        return "".join(self.output)


def start_server(port: int, workdir: Path, *extra: str) -> Server:
    command = [
        sys.executable,
        "-m",
        "cli.main",
        "local",
        "up",
        "--port",
        str(port),
        "--labels",
        "car",
        "--model",
        f"replay:{workdir / 'predictions.jsonl'}",
        "--images-root",
        str(workdir / "images"),
        "--reviewer",
        "accept",
        "--threshold",
        "0.9",
        *extra,
    ]
    process = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    server = Server(process, port)

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            server.lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    banner = server.wait_for_line("data bucket:", STARTUP_TIMEOUT_S)
    server.bucket = banner.split("data bucket:", 1)[1].strip()
    server.wait_for_line("Ctrl-C", 30)
    return server


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``images/`` (street: 6 images in two folders; fleet: 3) and the replay file naming them."""
    root = tmp_path_factory.mktemp("local-up")
    records = []
    for index in range(9):
        relative = f"street/cam{index % 2}/frame {index:02d}.jpg" if index < 6 else f"fleet/truck+{index}.jpg"
        path = root / "images" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg((25 * index, 120, 200 - 15 * index)))
        confidence = 0.5 if index == 2 else 0.95  # one image goes to (emulated) human review
        box = {"label": "car", "confidence": confidence, "left": 10 + index, "top": 12, "width": 40, "height": 30}
        records.append({"image": relative, "detections": [box]})
    (root / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return root


@pytest.fixture(scope="module")
def server(workdir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    cache = os.environ.get("LABELLOOP_ASSEMBLY_CACHE")
    if not cache:
        os.environ["LABELLOOP_ASSEMBLY_CACHE"] = str(tmp_path_factory.mktemp("assemblies"))
    running = start_server(free_port(), workdir, "--state", str(workdir / "state"))
    yield running
    if running.process.poll() is None:
        running.process.send_signal(signal.SIGINT)
        running.process.wait(timeout=120)
    if not cache:
        os.environ.pop("LABELLOOP_ASSEMBLY_CACHE", None)


def status(url: str, capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["status", "--endpoint-url", url, "--json", *extra]) == 0
    return dict(json.loads(capsys.readouterr().out))


def wait_for_export(url: str, dataset: str, images: int, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """Poll ``labelloop status`` until the dataset's latest export holds ``images`` images."""
    deadline = time.monotonic() + PIPELINE_TIMEOUT_S
    document: dict[str, Any] = {}
    while time.monotonic() < deadline:
        document = status(url, capsys)
        found = [d for d in document["datasets"] if d["name"] == dataset]
        export = found[0]["latest_export"] if found else None
        if export and export["images"] == images:
            return found[0]
        time.sleep(2)
    raise AssertionError(f"no export of {images} images for {dataset} within {PIPELINE_TIMEOUT_S}s: {document}")


def test_the_aws_cli_uploads_a_folder_and_pull_writes_a_trainable_dataset(
    server: Server, workdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = workdir / "images" / "street"
    copy = subprocess.run(
        [
            str(AWS_CLI),
            *("--endpoint-url", server.url, "s3", "cp", str(folder)),
            *(f"s3://{server.bucket}/incoming/street/", "--recursive", "--only-show-errors"),
        ],
        env={**os.environ, **CREDENTIALS},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert copy.returncode == 0, copy.stderr
    dataset = wait_for_export(server.url, "street", 6, capsys)
    assert dataset["images"]["uploaded"] == 6
    assert dataset["images"]["received"] == 6
    assert dataset["images"]["auto_accepted"] + dataset["images"]["reviewed"] == 6
    assert dataset["images"]["reviewed"] >= 1  # the 0.5-confidence image went to review
    assert {b["state"] for b in dataset["batches"]} == {"merged"}
    assert dataset["threshold_in_use"] == {"value": 0.9, "source": "fixed"}

    out = tmp_path / "street"
    assert main(["pull", "street", "--out", str(out), "--endpoint-url", server.url]) == 0
    assert "6 image(s)" in capsys.readouterr().out
    report = check_yolo_dataset(out)
    assert report.total_images == 6
    stems = sorted(p.stem.rsplit("-", 1)[0] for p in out.glob("images/*/*"))
    assert stems == sorted(f"frame {i:02d}" for i in range(6))

    # Resumable and verified: a damaged file is fetched again, correct ones are skipped.
    damaged = next(out.glob("labels/*/*.txt"))
    damaged.write_text("garbage\n")
    assert main(["pull", "street", "--out", str(out), "--endpoint-url", server.url]) == 0
    assert "1 file(s) downloaded" in capsys.readouterr().out
    check_yolo_dataset(out)

    # The human table names the dataset, its export and its batches.
    assert main(["status", "--endpoint-url", server.url]) == 0
    table = capsys.readouterr().out
    assert "street: 6 uploaded, 6 received" in table and "latest export" in table and "merged" in table


def test_boto3_puts_start_batches_and_an_incomplete_version_is_refused(
    server: Server, workdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s3 = boto3.client("s3", endpoint_url=server.url, region_name="us-east-1", **_keys())
    for path in sorted((workdir / "images" / "fleet").iterdir()):
        s3.put_object(Bucket=server.bucket, Key=f"incoming/fleet/{path.name}", Body=path.read_bytes())
    dataset = wait_for_export(server.url, "fleet", 3, capsys)
    assert dataset["latest_export"]["prefix"].startswith(f"s3://{server.bucket}/exports/fleet/")

    # A version the export Lambda has not finished (no export.json) is never pulled.
    version = "29991231T000000Z-000009-unfinished"
    s3.put_object(Bucket=server.bucket, Key=f"exports/fleet/{version}/data.yaml", Body=b"")
    capsys.readouterr()
    code = main(["pull", "fleet", "--out", str(tmp_path / "x"), "--version", version, "--endpoint-url", server.url])
    err = capsys.readouterr().err
    assert code == 2 and "incomplete" in err and err.count("\n") == 1


def _keys() -> dict[str, str]:
    return {"aws_access_key_id": "test", "aws_secret_access_key": "test"}


def test_common_failures_are_one_line_errors_with_exit_2(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = [
        (["status", "--endpoint-url", server.url, "--dataset", "nope"], "dataset 'nope' unknown"),
        (["pull", "nope", "--out", str(tmp_path / "o"), "--endpoint-url", server.url], "dataset 'nope' unknown"),
        (["status", "--endpoint-url", f"http://127.0.0.1:{free_port()}"], "cannot reach"),
        (["status", "--stack", "Other", "--endpoint-url", server.url], "stack Other not found"),
    ]
    for argv, message in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err, err

    busy = subprocess.run(
        [sys.executable, "-m", "cli.main", "local", "up", "--port", str(server.port)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert busy.returncode == 2
    assert f"port {server.port} on 127.0.0.1 is already in use" in busy.stderr
    assert "Traceback" not in busy.stderr


def test_sigterm_during_a_batch_then_a_restart_on_the_same_state(
    server: Server, workdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s3 = boto3.client("s3", endpoint_url=server.url, region_name="us-east-1", **_keys())
    for index in range(3):
        s3.put_object(Bucket=server.bucket, Key=f"incoming/late/img{index}.jpg", Body=jpeg((0, 40 * index, 90)))
    server.process.send_signal(signal.SIGTERM)
    # The stop budget is the command's guarantee (its watchdog exits at that point at the latest).
    assert server.process.wait(timeout=STOP_BUDGET_S + 2) == 0
    text = server.drain_output()
    assert "SIGTERM received, stopping" in text
    assert "stopped in" in text and ("in flight" in text or "drained" in text)
    assert "saved" in text and str(workdir / "state") in text

    restarted = start_server(free_port(), workdir, "--state", str(workdir / "state"))
    try:
        assert restarted.bucket == server.bucket  # the same bucket name after a restart
        assert "restored" in restarted.drain_output()
        document = status(restarted.url, capsys)
        names = {d["name"]: d for d in document["datasets"]}
        assert names["street"]["latest_export"]["images"] == 6
        assert names["fleet"]["latest_export"]["images"] == 3
        out = tmp_path / "again"
        assert main(["pull", "street", "--out", str(out), "--endpoint-url", restarted.url]) == 0
        assert check_yolo_dataset(out).total_images == 6
    finally:
        restarted.process.send_signal(signal.SIGINT)
        assert restarted.process.wait(timeout=STOP_BUDGET_S + 2) == 0
