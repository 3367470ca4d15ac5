"""A verify-mode Ground Truth job in the emulation, through LabelLoop's DEPLOYED pre/post functions.

The stack is synthesized with ``taskMode: verify`` and a workteam, deployed into the in-process
emulation; the pre-annotation function turns each line's ``labelloop-prelabel`` into the boxes shown
to workers (``taskInput.mode == "verify"``), emulated workers answer the verify form, and the
post-annotation function's verdicts are read back from the output manifest with
`labelloop_core.manifest`.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from labelloop_core.contract import REVIEW_MANIFEST
from labelloop_core.manifest import find_verification_attributes, parse_verification
from sandbox.harness import LocalCloud
from sandbox.workforce import AcceptPrelabels, Oracle, ReplayAnswers
from tests.e2e.conftest import LOCAL_WORKTEAM, LOCAL_WORKTEAM_ARN
from tests.e2e.gt_jobs import job_request, png, prelabeled_line

pytestmark = pytest.mark.e2e

LABELS = ["car", "person"]
W, H = 320, 240
IMAGE_DIR = "work/e2e-verify/images/"  # outside incoming/: the intake pipeline must not pick these up
CAR = {"label": "car", "left": 40, "top": 60, "width": 80, "height": 50}
PERSON = {"label": "person", "left": 180, "top": 40, "width": 40, "height": 120}


@pytest.fixture(scope="module")
def verify_assembly(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from infra.synth import synthesize

    context = {"taskMode": "verify", "workteamArn": LOCAL_WORKTEAM_ARN, "labels": LABELS}
    return synthesize(tmp_path_factory.mktemp("verify-e2e"), context=context)


@pytest.fixture
def start(verify_assembly: Path) -> Iterator[Callable[..., LocalCloud]]:
    with contextlib.ExitStack() as stack:

        def run(**kwargs: Any) -> LocalCloud:
            kwargs.setdefault("workteams", [LOCAL_WORKTEAM])
            return stack.enter_context(LocalCloud.start(verify_assembly, **kwargs))

        yield run


def _line(cloud: LocalCloud, name: str, prelabels: list[dict[str, Any]]) -> dict[str, Any]:
    """A review-manifest line with the model's pre-labels (numbered by name through their class-map)."""
    model_ids = {"person": 0, "car": 1}
    return prelabeled_line(
        cloud, f"{IMAGE_DIR}{name}", png(W, H), prelabels, model_ids, batch_id="b1", width=W, height=H
    )


def _run_job(cloud: LocalCloud, lines: list[dict[str, Any]], workers: int) -> tuple[dict[str, Any], str, list[Any]]:
    """Create a verify job the way the workflow does, wait for it; return (description, attribute, output lines)."""
    bucket = cloud.bucket
    name = f"street-b1-verify-{uuid.uuid4().hex[:8]}"
    request = job_request(
        cloud,
        job_name=name,
        manifest_key=f"work/batches/street/{name}/{REVIEW_MANIFEST}",
        lines=lines,
        labels=LABELS,
        workteam_arn=LOCAL_WORKTEAM_ARN,
        task_mode="verify",
        workers_per_object=workers,
    )
    sm = cloud.client("sagemaker")
    sm.create_labeling_job(**request)

    def done() -> dict[str, Any] | None:
        described = sm.describe_labeling_job(LabelingJobName=name)
        return described if described["LabelingJobStatus"] not in ("InProgress", "Stopping") else None

    described = cloud.wait_for(done, timeout=60, message=f"labeling job {name}")
    assert described["LabelingJobStatus"] == "Completed", (described.get("FailureReason"), cloud.diagnostics())
    key = described["LabelingJobOutput"]["OutputDatasetS3Uri"].split("/", 3)[3]
    body = cloud.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    return described, request["LabelAttributeName"], [json.loads(x) for x in body.decode("utf-8").splitlines()]


def test_oracle_judges_prelabels_against_the_truth(start: Callable[..., LocalCloud]) -> None:
    truth: list[dict[str, Any]] = [
        {"image": f"{IMAGE_DIR}right.png", "detections": [CAR, PERSON]},
        {"image": f"{IMAGE_DIR}loose.png", "detections": [CAR]},
        {"image": f"{IMAGE_DIR}missed.png", "detections": [CAR, PERSON]},
        {"image": f"{IMAGE_DIR}wrong-class.png", "detections": [CAR]},
        {"image": f"{IMAGE_DIR}empty.png", "detections": []},
    ]
    cloud = start(workforce=Oracle(truth, verify_min_quality=0.75))
    lines = [
        _line(cloud, "right.png", [PERSON, {**CAR, "left": 42}]),  # both boxes, one off by 2 px: right
        _line(cloud, "loose.png", [{**CAR, "left": 10, "width": 140}]),  # IoU ~0.57: wrong
        _line(cloud, "missed.png", [CAR]),  # the person is missing: wrong
        _line(cloud, "wrong-class.png", [{**CAR, "label": "person"}]),  # the right box, wrong name: wrong
        _line(cloud, "empty.png", []),  # background confirmed: right
    ]
    described, attribute, output = _run_job(cloud, lines, workers=3)
    assert described["LabelCounters"]["HumanLabeled"] == 5

    # The deployed pre function asked workers to verify the model's boxes, named by the registry.
    pre_calls = [i for i in cloud.invocations if i.event and "dataObject" in i.event]
    assert len(pre_calls) == 5 and all(i.error is None for i in pre_calls)
    first = pre_calls[0].response["taskInput"]
    assert first["mode"] == "verify" and first["initialValue"] == [PERSON, {**CAR, "left": 42}]
    post_calls = [i for i in cloud.invocations if i.event and "payload" in i.event]
    assert len(post_calls) == 1 and post_calls[0].error is None

    assert [line["source-ref"] for line in output] == [line["source-ref"] for line in lines]
    verdicts = {}
    for line in output:
        assert find_verification_attributes(line) == [attribute]
        parsed = parse_verification(line, attribute)
        assert parsed.human_annotated is True and parsed.confidence == 1.0
        assert line[attribute]["votes"][parsed.class_name] == 3
        verdicts[line["source-ref"].rsplit("/", 1)[1]] = parsed
    assert {name: v.class_name for name, v in verdicts.items()} == {
        "right.png": "correct",
        "loose.png": "incorrect",
        "missed.png": "incorrect",
        "wrong-class.png": "incorrect",
        "empty.png": "correct",
    }
    assert verdicts["right.png"].worker_feedback == () and verdicts["empty.png"].worker_feedback == ()
    # Every worker's comment reaches the manifest as feedback, saying what is wrong.
    assert len(verdicts["missed.png"].worker_feedback) == 3
    assert "1 shown, 2 present" in verdicts["missed.png"].worker_feedback[0]
    assert "mean IoU 0.57" in verdicts["loose.png"].worker_feedback[0]
    assert "mean IoU 0.00" in verdicts["wrong-class.png"].worker_feedback[0]
    assert output[0][attribute]["boxes-shown"] == 2


def test_replayed_verdicts_are_consolidated_by_majority(start: Callable[..., LocalCloud]) -> None:
    answers = [
        {
            "image": f"{IMAGE_DIR}split.png",
            "verdicts": ["correct", {"verdict": "incorrect", "comment": "car box too tall"}, "incorrect"],
        },
        {"image": f"{IMAGE_DIR}agreed.png", "verdicts": ["correct", "correct", {"verdict": "correct"}]},
    ]
    cloud = start(workforce=ReplayAnswers(answers))
    lines = [_line(cloud, "split.png", [CAR]), _line(cloud, "agreed.png", [PERSON]), _line(cloud, "none.png", [CAR])]
    described, attribute, output = _run_job(cloud, lines, workers=3)
    # The file names no answers for none.png: nobody answered it.
    assert described["LabelCounters"]["HumanLabeled"] == 2 and described["LabelCounters"]["Unlabeled"] == 1
    split, agreed = (parse_verification(line, attribute) for line in output[:2])
    assert split.class_name == "incorrect" and split.confidence == pytest.approx(2 / 3, abs=1e-6)
    assert split.worker_feedback == ("car box too tall",)
    assert agreed.class_name == "correct" and agreed.confidence == 1.0 and agreed.worker_feedback == ()
    assert find_verification_attributes(output[2]) == []


def test_accepting_reviewers_judge_everything_correct(start: Callable[..., LocalCloud]) -> None:
    cloud = start(workforce=AcceptPrelabels())
    described, attribute, output = _run_job(cloud, [_line(cloud, "any.png", [{**CAR, "left": 0}])], workers=1)
    assert described["LabelCounters"]["HumanLabeled"] == 1
    (line,) = output
    parsed = parse_verification(line, attribute)
    assert parsed.class_name == "correct" and line[attribute]["votes"] == {"correct": 1, "incorrect": 0}
