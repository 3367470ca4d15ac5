"""Load: 5,000 images in 10 datasets dropped at once, every image accounted for exactly once.

The deployed stack (an emulated SageMaker endpoint answered from a predictions file, a fixed
auto-accept threshold, the Ground Truth emulation accepting pre-labels) gets 500 tiny images per
dataset plus a few files that are not images, uploaded before intake delivers anything. Then,
read back from what the pipeline wrote (batch reports, output manifests, rejected.jsonl, exports):

- every upload is in exactly one outcome — auto-accepted, human-reviewed, or rejected with a reason;
- the batch reports' counts agree with those lines, and each dataset's one export holds exactly its
  accepted and reviewed images;
- one workflow execution per batch and no batch labeled twice, at most one labeling job per batch.

moto's SQS bookkeeping was quadratic in the queue (sandbox/moto_speedups.py makes it linear: a
10 x 50 run went from 674 s to 130-180 s on 2 shared cores; with S3 URL patterns no longer reloaded per
request, one host session and syscall-free ids, 61 s). The full 10 x 500 = 5,000 takes about 450 s of
test time on 2 cores (every function invocation is serialised in the emulation); `make test` runs it.
``LABELLOOP_LOAD_PER_DATASET=50`` gives a quicker run while developing.
"""

from __future__ import annotations

import io
import json
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from labelloop_core.contract import BATCH_REPORT_FILE, META_KEY, OUTPUT_MANIFEST, REJECTED_FILE
from sandbox.harness import LocalCloud
from sandbox.localrun.spec import LOCAL_ENDPOINT
from sandbox.model_emulation import ReplayPredictions
from sandbox.workforce import AcceptPrelabels

from .conftest import LOCAL_WORKTEAM, LOCAL_WORKTEAM_ARN

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.load]

DATASETS = 10
NOT_IMAGES_PER_DATASET = 2
PER_DATASET_ENV = "LABELLOOP_LOAD_PER_DATASET"
PER_DATASET = int(os.environ.get(PER_DATASET_ENV, "500"))
BOX = {"label": "car", "left": 1, "top": 1, "width": 5, "height": 4}


def _png(index: int, dataset: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (index % 256, index // 256, dataset * 20)).save(buffer, "PNG")
    return buffer.getvalue()


def _write_inputs(root: Path, per_dataset: int) -> tuple[dict[str, dict[str, bytes]], Path]:
    """Images (and not-images) per dataset on disk, and the model's predictions for them."""
    files: dict[str, dict[str, bytes]] = {}
    predictions = root / "predictions.jsonl"
    with predictions.open("w") as out:
        for d in range(DATASETS):
            dataset = f"load{d:02d}"
            files[dataset] = {}
            for i in range(per_dataset):
                name = f"{dataset}-{i:04d}.png"
                data = _png(i, d)
                (root / name).write_bytes(data)
                files[dataset][name] = data
                confidence = 0.95 if i % 2 else 0.2  # half above the fixed threshold 0.5
                out.write(json.dumps({"image": name, "detections": [{**BOX, "confidence": confidence}]}) + "\n")
            for i in range(NOT_IMAGES_PER_DATASET):
                files[dataset][f"{dataset}-broken{i}.png"] = b"not an image " + str(i).encode()
    return files, predictions


@pytest.fixture(scope="module")
def load_assembly(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stack with an endpoint model, a fixed threshold and batches big enough for a dataset."""
    from infra.synth import synthesize

    context = {
        "labels": ["car"],
        "model": {"kind": "sagemaker", "endpointName": LOCAL_ENDPOINT, "endpointFormat": "builtin"},
        "workteamArn": LOCAL_WORKTEAM_ARN,
        "batchWindowSeconds": 1,
        "maxBatchSize": 10_000,  # the whole drop reaches one batch-starter call: a batch per dataset
        "autoAcceptThreshold": 0.5,
    }
    return synthesize(tmp_path_factory.mktemp("load") / "cdk.out", context=context)


def _outcomes(cloud: LocalCloud, work: str, dataset: str) -> tuple[dict[str, list[str]], list[dict[str, Any]]]:
    """Per upload key, the outcomes the dataset's batches recorded; and the batch reports."""
    outcomes: dict[str, list[str]] = {}
    reports = []
    prefix = f"{work}batches/{dataset}/"
    for key in cloud.list_keys(prefix):
        if not key.endswith(f"/{BATCH_REPORT_FILE}"):
            continue
        report = cloud.read_json(key)
        reports.append(report)
        batch = key[: -len(BATCH_REPORT_FILE)]
        for line in cloud.read_jsonl(f"{batch}{OUTPUT_MANIFEST}"):
            meta = line[META_KEY]
            outcomes.setdefault(meta["key"], []).append("accepted" if meta["route"] == "accept" else "reviewed")
        for row in cloud.read_jsonl(f"{batch}{REJECTED_FILE}"):
            assert row.get("reason"), row
            outcomes.setdefault(row["key"], []).append("rejected")
    return outcomes, reports


@pytest.mark.parametrize("per_dataset", [PER_DATASET], ids=lambda n: f"{DATASETS}x{n}")
def test_ten_datasets_dropped_at_once_each_image_ends_in_exactly_one_outcome(
    start_cloud: Callable[..., LocalCloud], load_assembly: Path, tmp_path: Path, per_dataset: int
) -> None:
    files, predictions = _write_inputs(tmp_path, per_dataset)
    cloud = start_cloud(
        assembly=load_assembly,
        workforce=AcceptPrelabels(),
        predictor=ReplayPredictions(predictions),
        labels=["car"],
        workteams=[LOCAL_WORKTEAM],
        esm_mode="manual",
        esm_retry="immediate",
    )
    uploaded = {
        dataset: [
            cloud.put_bytes(f"{cloud.incoming_prefix}{dataset}/{name}", data, "image/png")
            for name, data in names.items()
        ]
        for dataset, names in files.items()
    }
    cloud.flush_event_sources()  # every upload event at once
    exports = cloud.outputs["ExportsPrefix"]
    cloud.wait_for(
        lambda: all(cloud.list_keys(f"{exports}{dataset}/latest.json") for dataset in files),
        timeout=900,
        interval=1.0,
        message="a latest export for every dataset",
    )
    work = "work/"
    machine = cloud.state_machine_arn("Workflow")
    executions = cloud.client("stepfunctions").list_executions(stateMachineArn=machine)["executions"]
    assert Counter(e["status"] for e in executions) == {"SUCCEEDED": DATASETS}, cloud.diagnostics()
    jobs = cloud.labeling_jobs()
    batch_ids = []
    for dataset, keys in uploaded.items():
        outcomes, reports = _outcomes(cloud, work, dataset)
        assert sorted(outcomes) == sorted(keys), dataset  # nothing lost, nothing foreign
        doubled = {k: v for k, v in outcomes.items() if len(v) != 1}
        assert not doubled, doubled
        counts = Counter(v[0] for v in outcomes.values())
        # Half the images are above the threshold; a few of those are audited (reviewed) instead.
        assert counts["accepted"] + counts["reviewed"] == per_dataset, (dataset, counts)
        assert per_dataset // 2 <= counts["reviewed"] < per_dataset * 0.6, (dataset, counts)
        assert counts["rejected"] == NOT_IMAGES_PER_DATASET, (dataset, counts)
        assert len(reports) == 1 and reports[0]["status"] == "labeled", reports
        report = reports[0]
        assert report["accounted_for"] is True
        assert {k: report["counts"][k] for k in ("received", "accepted", "reviewed", "rejected")} == {
            "received": len(keys),
            "accepted": counts["accepted"],
            "reviewed": counts["reviewed"],
            "rejected": counts["rejected"],
        }
        assert len(report["jobs"]) == 1 and report["jobs"][0] in jobs, report["jobs"]
        batch_ids.append(report["batch_id"])
        versions = {k.split("/")[-2] for k in cloud.list_keys(f"{exports}{dataset}/") if k.endswith("/export.json")}
        assert len(versions) == 1, versions  # one export per dataset
        latest = cloud.read_json(f"{exports}{dataset}/latest.json")
        exported = [k for k in cloud.list_keys(f"{exports}{dataset}/{latest['version']}/images/")]
        assert len(exported) == latest["images"] == counts["accepted"] + counts["reviewed"]
    assert len(set(batch_ids)) == DATASETS
    assert len(jobs) == DATASETS, sorted(jobs)  # one labeling job per batch, none started twice
    assert sorted(e["name"] for e in executions) == sorted({e["name"] for e in executions})
    assert all(any(b in e["name"] for e in executions) for b in batch_ids)
