"""`labelloop local run` without the emulation: argument and input checking (one-line errors, exit 2),
the run's stack context, upload waves, image name resolution, failure reasons and the demo's
structural dataset check."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from typing import Any

import pytest

from cli.demo import check_dataset
from cli.local_run import print_outcome
from cli.main import main
from labelloop_core.contract import AUTO_ATTRIBUTE, BATCH_REPORT_FILE, META_KEY, PRELABEL_ATTRIBUTE
from sandbox.imagerefs import ImageRef
from sandbox.localrun import (
    Accounting,
    BatchRecords,
    ImageNames,
    NamedWorkforce,
    RunRecords,
    RunResult,
    RunSpec,
    _failure_reason,
    _keys_in_event,
    _waves,
    aggregate,
    labels_for,
    list_images,
    parse_model,
    parse_reviewer,
    stack_context,
)
from sandbox.workforce import Oracle, Task


def _jpeg(colour: tuple[int, int, int] = (10, 20, 30)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), colour).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture
def images(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    for name, colour in (("a.jpg", (1, 2, 3)), ("sub/b.jpg", (40, 50, 60)), ("other/b.jpg", (90, 10, 10))):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_jpeg(colour))
    return root


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["local", "run", *args])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model", "yolo"], "--model must be none, synthetic, learn, learn-sagemaker or replay:FILE"),
        (["--model", "replay:/no/such/file.jsonl"], "no such file"),
        (["--reviewer", "crowd"], "--reviewer must be accept, answers:FILE, oracle:FILE"),
        (["--reviewer", "oracle:"], "needs a file name"),
        (["--workers", "0"], "--workers must be within 1-9"),
        (["--threshold", "1.5"], "--threshold must be within [0, 1]"),
        (["--first-wave", "0"], "--first-wave must be within (0, 1]"),
        (["--dataset", "a/b"], "--dataset must be a non-empty name without '/'"),
        (["--model-fault", "nope.jpg=error"], "no such image"),
        (["--reviewer", "human"], "--reviewer human needs --review-backend labelstudio"),
        (["--review-backend", "labelstudio"], "needs --labelstudio-url URL"),
        (["--labelstudio-url", "http://127.0.0.1:9"], "only used with --review-backend labelstudio"),
        (["--review-backend", "labelstudio", "--labelstudio-url", "http://127.0.0.1:9"], "LABEL_STUDIO_API_KEY"),
        (
            ["--review-backend", "labelstudio", "--labelstudio-url", "http://127.0.0.1:9", "--workers", "2"],
            "runs with --workers 1",
        ),
    ],
)
def test_bad_options_are_one_line_errors(
    images: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    extra: list[str],
    message: str,
) -> None:
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    code, err = _run(["--images", str(images), "--out", str(tmp_path / "out"), *extra], capsys)
    assert code == 2
    assert err.startswith("labelloop: error: ") and message in err
    assert err.count("\n") == 1  # one line, no traceback
    assert not (tmp_path / "out").exists()  # refused before anything ran


def test_an_unreachable_label_studio_is_a_one_line_error_without_the_token(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "secret-token-value")
    args = ["--review-backend", "labelstudio", "--labelstudio-url", "http://127.0.0.1:9"]
    code, err = _run(["--images", str(images), "--out", str(tmp_path / "out"), *args], capsys)
    assert code == 2 and "Label Studio at http://127.0.0.1:9 is not usable" in err and err.count("\n") == 1
    assert "secret-token-value" not in err


def test_missing_or_empty_image_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(["--images", str(tmp_path / "nope"), "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and "not a folder" in err
    (tmp_path / "empty").mkdir()
    code, err = _run(["--images", str(tmp_path / "empty"), "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and "no files to upload" in err


def test_output_inside_the_image_folder_is_refused(images: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(["--images", str(images), "--out", str(images / "out")], capsys)
    assert code == 2 and "is inside --images" in err


def test_bad_fault_kind_is_an_argument_error(images: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["local", "run", "--images", str(images), "--out", str(tmp_path), "--model-fault", "a.jpg=explode"])
    assert exited.value.code == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"image": "a.jpg", "detections": [\n', "is malformed"),
        ('{"image": "a.jpg"}\n', "has no list 'detections'"),
        (
            '{"image": "a.jpg", "detections": [{"label": "cat", "confidence": 87, "left": 1, "top": 1, '
            '"width": 2, "height": 2}]}\n',
            "confidence must be within 0-1",
        ),
        ('{"image": "a.jpg", "detections": [{"label": "cat", "confidence": 0.5}]}\n', "lacks"),
    ],
)
def test_malformed_replay_files_are_refused(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    replay = tmp_path / "model.jsonl"
    replay.write_text(content)
    code, err = _run(["--images", str(images), "--out", str(tmp_path / "out"), "--model", f"replay:{replay}"], capsys)
    assert code == 2 and message in err, err


def test_labels_come_from_the_option_else_the_files_else_object(images: Path, tmp_path: Path) -> None:
    replay = tmp_path / "m.jsonl"
    replay.write_text(json.dumps({"image": "a.jpg", "detections": [{"label": "dog"}]}) + "\n")
    answers = tmp_path / "a.jsonl"
    answers.write_text(json.dumps({"image": "a.jpg", "workers": [[{"label": "cat"}], [{"label": "bird"}]]}) + "\n")
    model, reviewer = parse_model(f"replay:{replay}", images), parse_reviewer(f"answers:{answers}", images)
    spec = RunSpec(images=images, out=tmp_path)
    assert labels_for(spec, model, reviewer) == ("bird", "cat", "dog")
    assert labels_for(RunSpec(images=images, out=tmp_path, labels=("x", "y")), model, reviewer) == ("x", "y")
    assert labels_for(spec, parse_model("none", images), parse_reviewer("accept", images)) == ("object",)


def test_stack_context_matches_the_run(tmp_path: Path) -> None:
    spec = RunSpec(
        images=tmp_path, out=tmp_path, model="synthetic", workers=3, threshold=0.4, target_quality=0.75, min_pairs=60
    )
    context = stack_context(spec, ("car", "person"))
    assert context["labels"] == ["car", "person"]
    assert context["model"] == {"kind": "sagemaker", "endpointName": "labelloop-local", "endpointFormat": "builtin"}
    assert context["workersPerObject"] == 3 and context["autoAcceptThreshold"] == 0.4
    assert context["calibration"] == {"targetQuality": 0.75, "minPairs": 60}
    assert context["workteamArn"].startswith("arn:aws:sagemaker:us-east-1:123456789012:workteam/private-crowd/")
    plain = stack_context(RunSpec(images=tmp_path, out=tmp_path), ("object",))
    assert plain["model"] == {"kind": "none"} and plain["autoAcceptThreshold"] is None
    assert "calibration" not in plain
    # The context is valid for the stack's own config parser.
    from infra.config import parse_config

    config = parse_config(context)
    assert config.model.endpoint_name == "labelloop-local" and config.calibration.min_pairs == 60


def test_the_run_files_inside_the_folder_are_not_uploaded(images: Path) -> None:
    truth = images / "truth.jsonl"
    truth.write_text(json.dumps({"image": "a.jpg", "detections": []}) + "\n")
    assert [rel for _, rel in list_images(images, [truth])] == ["a.jpg", "other/b.jpg", "sub/b.jpg"]
    assert "truth.jsonl" in [rel for _, rel in list_images(images, [])]


def test_waves_split_every_image_once(tmp_path: Path) -> None:
    files = [(tmp_path / f"{i}.jpg", f"{i}.jpg") for i in range(50)]
    first, second = _waves(files, 0.4)
    assert len(first) == 20 and len(second) == 30
    assert sorted(first + second) == sorted(files)
    assert _waves(files, 0.4) == [first, second]  # deterministic
    assert _waves(files, 1.0) == [files]
    assert _waves(files[:1], 0.4) == [files[:1]]


def test_image_names_resolve_keys_derived_copies_and_bytes(images: Path) -> None:
    files = list_images(images, [])
    names = ImageNames(files)
    names.attach(s3=None, bucket="bkt", incoming_prefix="incoming/", work_prefix="work/", dataset="ds")
    assert names.resolve(ImageRef(key="incoming/ds/sub/b.jpg")) == "sub/b.jpg"
    assert names.resolve(ImageRef(key="work/derived/ds/other/b.jpg")) == "other/b.jpg"
    assert names.resolve(ImageRef(key="incoming/ds/with+space.jpg")) == "with+space.jpg"
    assert names.resolve(ImageRef(data=(images / "sub/b.jpg").read_bytes())) == "sub/b.jpg"
    assert names.resolve(ImageRef(data=b"unknown bytes")) is None
    assert names.resolve(ImageRef(key="incoming/otherds/a.jpg")) is None


def test_oracle_finds_its_record_by_path_even_when_file_names_repeat(images: Path) -> None:
    truth = [
        {"image": "sub/b.jpg", "detections": [{"label": "cat", "left": 1, "top": 2, "width": 3, "height": 4}]},
        {"image": "other/b.jpg", "detections": [{"label": "dog", "left": 5, "top": 6, "width": 7, "height": 8}]},
    ]
    names = ImageNames(list_images(images, []))
    names.attach(s3=None, bucket="bkt", incoming_prefix="incoming/", work_prefix="work/", dataset="ds")
    workforce = NamedWorkforce(names, Oracle([dict(r, _base=str(images)) for r in truth]))
    derived = b"re-encoded pixels of other/b.jpg"  # an EXIF-normalised copy has new bytes
    task = Task(
        job_name="job",
        dataset_object_id="0",
        data_object={META_KEY: {"key": "incoming/ds/other/b.jpg"}},
        task_input={},
        image=ImageRef(data=derived, bucket="bkt", key="work/derived/ds/other/b.jpg"),
        image_width=32,
        image_height=24,
        labels=["cat", "dog"],
        workers=2,
    )
    answers = workforce.answer(task)
    assert len(answers) == 2
    assert all(a.boxes == [{"label": "dog", "left": 5, "top": 6, "width": 7, "height": 8}] for a in answers)


def test_failure_reason_names_the_error_and_the_jobs_reason() -> None:
    report: dict[str, Any] = {
        "error": "LabelingJobFailed",
        "cause": None,
        "review": {"job_name": "labelloop-x", "status": "Failed", "failure_reason": "WorkforceError: gone"},
    }
    assert (
        _failure_reason(report)
        == "batch failed: LabelingJobFailed: labeling job labelloop-x Failed: WorkforceError: gone"
    )
    lambda_error = {"error": "States.TaskFailed", "cause": {"errorMessage": "boom", "errorType": "ValueError"}}
    assert _failure_reason(lambda_error) == "batch failed: States.TaskFailed: boom"


def test_dead_letter_events_name_their_decoded_keys() -> None:
    body = json.dumps({"detail": {"object": {"key": "incoming/ds/caf%C3%A9+1.jpg"}}})
    assert _keys_in_event(body) == ["incoming/ds/café 1.jpg"]
    assert _keys_in_event("not json") == []
    assert _keys_in_event(json.dumps({"detail": {}})) == []


def _dataset(root: Path, rows: str = "0 0.500000 0.500000 0.250000 0.250000\n") -> Path:
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        (root / "images" / split / f"{split}-1.jpg").write_bytes(_jpeg())
        (root / "labels" / split / f"{split}-1.txt").write_text(rows)
    (root / "data.yaml").write_text("train: images/train\nval: images/val\nnc: 1\nnames:\n  0: cat\n")
    return root


def test_dataset_check_passes_a_valid_dataset(tmp_path: Path) -> None:
    counts, problems = check_dataset(_dataset(tmp_path / "ok"))
    assert problems == []
    assert counts == {"train_images": 1, "val_images": 1, "labeled_images": 2, "boxes": 2}


@pytest.mark.parametrize(
    ("rows", "problem"),
    [
        ("0 0.5 0.5 0.25 0.25\n", "6-decimal"),
        ("3 0.500000 0.500000 0.250000 0.250000\n", "bad row"),
        ("0 0.500000 0.500000 0.250000\n", "bad row"),
        ("0 0.500000 0.500000 1.250000 0.250000\n", "in [0, 1]"),
        ("0 0.500000 0.500000 0.000000 0.250000\n", "empty box"),
        ("0 0.500000 0.500000 0.250000 0.250000\n" * 2, "duplicate rows"),
    ],
)
def test_dataset_check_flags_bad_rows(tmp_path: Path, rows: str, problem: str) -> None:
    _, problems = check_dataset(_dataset(tmp_path / "bad", rows))
    assert any(problem in p for p in problems), problems


def test_dataset_check_flags_missing_labels_and_yaml_problems(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "d")
    (root / "labels" / "val" / "val-1.txt").unlink()
    (root / "labels" / "train" / "orphan.txt").write_text("")
    (root / "data.yaml").write_text("train: images/train\nnc: 2\nnames: [cat]\ndownload: http://x\n")
    _, problems = check_dataset(root)
    text = "\n".join(problems)
    for expected in ("has no label file", "orphan.txt has no image", "nc 2 != 1", "no 'val' key", "download key"):
        assert expected in text, (expected, problems)


# ---------------------------------------------------------------- the report and its invariants

INCOMING = "incoming/ds/"


def _line(name: str, attribute: str, error: str | None = None) -> dict[str, Any]:
    return {
        "source-ref": f"s3://bkt/{INCOMING}{name}",
        META_KEY: {"key": f"{INCOMING}{name}", "label_attribute": attribute},
        f"{PRELABEL_ATTRIBUTE}-metadata": {"error": error},
    }


def _labeled_batch() -> BatchRecords:
    """A batch as merge writes it: 4 objects, 1 rejected, 1 accepted, 2 reviewed (one had a model error)."""
    names = ["a.jpg", "b.jpg", "c.jpg", "bad.jpg"]
    return BatchRecords(
        batch_id="b1",
        objects=[f"{INCOMING}{n}" for n in names],
        report={
            "status": "labeled",
            "counts": {"received": 4, "rejected": 1, "accepted": 1, "reviewed": 2, "audited": 0, "unlabeled": 0},
            "unlabeled": [],
            "jobs": ["labelloop-ds-1"],
            "threshold": {"value": 0.5, "source": "fixed"},
        },
        rejected=[{"key": f"{INCOMING}bad.jpg", "reason": "corrupt JPEG: header cannot be parsed"}],
        output_lines=[
            _line("a.jpg", AUTO_ATTRIBUTE),
            _line("b.jpg", "labelloop-ds-1"),
            _line("c.jpg", "labelloop-ds-1", error="ModelError: boom"),
        ],
    )


def _records(**changes: Any) -> RunRecords:
    base = RunRecords(
        incoming=INCOMING,
        uploaded=[f"{INCOMING}{n}" for n in ("a.jpg", "b.jpg", "c.jpg", "bad.jpg")],
        batches=[_labeled_batch()],
        jobs=[{"name": "labelloop-ds-1", "status": "Completed", "counters": {"HumanLabeled": 2}}],
        latest={"version": "v1"},
        export_document={"version": "v1", "counts": {"images": 3}},
    )
    return dataclasses.replace(base, **changes)


def _aggregate(records: RunRecords) -> Accounting:
    spec = RunSpec(images=Path("."), out=Path("."), dataset="ds", threshold=0.5)
    return aggregate(records, spec, ("cat",), parse_reviewer("accept", Path(".")))


def test_report_from_consistent_records_holds_both_invariants() -> None:
    report, problems = _aggregate(_records())
    assert problems == []
    assert (report["images_received"], report["auto_accepted"], report["human_reviewed"]) == (4, 1, 2)
    assert report["rejected"] == [
        {"image": "bad.jpg", "reason": "corrupt JPEG: header cannot be parsed", "batch": "b1"}
    ]
    assert report["exported_images"] == 3 and report["export_version"] == "v1"
    assert all(report["invariants"].values())
    assert report["images"] == {
        "a.jpg": "auto_accepted",
        "b.jpg": "human_reviewed",
        "c.jpg": "human_reviewed",
        "bad.jpg": "rejected",
    }
    assert report["model_errors"] == [{"image": "c.jpg", "error": "ModelError: boom", "batch": "b1"}]
    assert report["labeling_jobs"] == [
        {"name": "labelloop-ds-1", "batch_id": "b1", "status": "Completed", "counters": {"HumanLabeled": 2}}
    ]


def test_an_export_missing_an_image_breaks_the_invariant_loudly() -> None:
    report, problems = _aggregate(_records(export_document={"version": "v1", "counts": {"images": 2}}))
    assert report["invariants"]["exported_equals_accepted_plus_reviewed"] is False
    assert any(p.startswith("INVARIANT BROKEN: exported_images 2") for p in problems), problems


def test_a_report_count_without_its_image_breaks_the_invariant() -> None:
    batch = _labeled_batch()
    assert batch.report is not None
    batch.report["counts"]["received"] = 5  # the pipeline claims an object it does not list anywhere
    report, problems = _aggregate(_records(batches=[batch]))
    assert report["invariants"]["received_equals_rejected_plus_accepted_plus_reviewed"] is False
    assert any("INVARIANT BROKEN: images_received 5" in p for p in problems)


def test_uploads_that_reached_no_batch_are_a_problem_unless_dead_lettered() -> None:
    uploaded = [*_records().uploaded, f"{INCOMING}lost.jpg"]
    problems = _aggregate(_records(uploaded=uploaded)).problems
    assert any("1 uploaded image(s) reached no batch" in p and "lost.jpg" in p for p in problems)
    report, problems = _aggregate(_records(uploaded=uploaded, dead_letter_keys=[f"{INCOMING}lost.jpg"]))
    assert problems == []  # accounted for: rejected with the intake reason
    assert report["images_received"] == 5
    assert {"image": "lost.jpg", "reason": "intake failed; the upload event is in the intake dead-letter queue"} in (
        report["rejected"]
    )


def test_failed_and_unfinished_batches_list_every_object_with_a_reason() -> None:
    failed = BatchRecords(
        batch_id="b2",
        objects=[f"{INCOMING}x.jpg", f"{INCOMING}zero.jpg"],
        report={
            "status": "failed",
            "error": "LabelingJobFailed",
            "cause": None,
            "review": {"job_name": "labelloop-ds-2", "status": "Failed", "failure_reason": "gone"},
        },
        rejected=[{"key": f"{INCOMING}zero.jpg", "reason": "empty object (0 bytes)"}],
        output_lines=[],
    )
    unfinished = BatchRecords("b3", [f"{INCOMING}y.jpg"], None, [], [])
    uploaded = [*_records().uploaded, *failed.objects, *unfinished.objects]
    report, problems = _aggregate(_records(uploaded=uploaded, batches=[_labeled_batch(), failed, unfinished]))
    reasons = {r["image"]: r["reason"] for r in report["rejected"]}
    assert reasons["zero.jpg"] == "empty object (0 bytes)"
    assert reasons["x.jpg"] == "batch failed: LabelingJobFailed: labeling job labelloop-ds-2 Failed: gone"
    assert reasons["y.jpg"] == "its batch did not finish"
    assert report["images_received"] == 7 and all(report["invariants"].values())
    assert problems == [f"batch b3 has no {BATCH_REPORT_FILE} (executions: )"]  # unfinished is a problem, failed is not
    assert [b["status"] for b in report["batches"]] == ["labeled", "failed", "unfinished"]


def test_an_image_labeled_in_two_batches_is_flagged() -> None:
    again = _labeled_batch()
    again.batch_id = "b9"
    problems = _aggregate(_records(batches=[_labeled_batch(), again])).problems
    assert any("labeled in more than one batch" in p for p in problems)
    assert any("INVARIANT BROKEN: exported_images 3" in p for p in problems)


def test_a_run_with_problems_exits_1_and_says_so_loudly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report, problems = _aggregate(_records(export_document={"version": "v1", "counts": {"images": 2}}))
    code = print_outcome(RunResult(report, problems, None), tmp_path)
    captured = capsys.readouterr()
    assert code == 1
    assert "the run is NOT complete" in captured.err and "INVARIANT BROKEN" in captured.err
    assert "exported == accepted + reviewed: BROKEN" in captured.out
