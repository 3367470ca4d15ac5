"""`labelloop local run --model learn-sagemaker --waves 2`: the retrain loop on the SageMaker backend, end to end.

v1 is an untrained detector served by the emulated endpoint (every image of wave 1 goes to people); the
export of their labels trains v2 with CreateTrainingJob on the YOLO export, which is hosted beside v1 as a
weight-0 variant, evaluated on the held-out human labels and promoted or rejected; accounting stays exact.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cli.main import main
from labelloop_core.contract import RUN_REPORT_FILE
from sandbox.scenes import generate_scenes

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

IMAGES, WAVES = 48, 2
LABELS = "bicycle,car,person"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict[str, Any], Path]:
    root = tmp_path_factory.mktemp("learn-sagemaker")
    truth = generate_scenes(root / "images", IMAGES, LABELS.split(","), seed=5)
    out = root / "out"
    argv = ["local", "run", "--images", str(truth.parent), "--out", str(out), "--model", "learn-sagemaker"]
    argv += ["--waves", str(WAVES), "--reviewer", f"oracle:{truth}", "--labels", LABELS]
    # 48 images hold out about 7 in wave 1: let such a set decide, so wave 1's labels train v2.
    argv += ["--context", "labelloop.retrain.minEvaluationImages=5"]
    code = main(argv)
    return code, json.loads((out / RUN_REPORT_FILE).read_text()), out


def test_the_run_is_exactly_accounted(run: tuple[int, dict[str, Any], Path]) -> None:
    code, report, _ = run
    assert code == 0, report["problems"]
    assert report["images_received"] == IMAGES
    assert report["images_received"] == len(report["rejected"]) + report["auto_accepted"] + report["human_reviewed"]
    assert report["exported_images"] == report["auto_accepted"] + report["human_reviewed"]
    assert sum(w["images"] for w in report["waves"]) == IMAGES and len(report["waves"]) == WAVES
    assert sum(w["auto_accepted"] + w["human_reviewed"] for w in report["waves"]) == report["exported_images"]


def test_a_version_trained_by_a_sagemaker_job_is_decided_on_the_evaluation_set(
    run: tuple[int, dict[str, Any], Path],
) -> None:
    _, report, _ = run
    models = {m["version"]: m for m in report["models"]}
    assert models["v1"]["trained_on_images"] == 0
    v2 = models["v2"]
    assert v2["status"] in ("active", "retired", "rejected"), v2
    assert v2["training_cost"]["measured"] == "billable seconds (SageMaker's count)"
    assert isinstance(v2["training_cost"]["billable_training_seconds"], int)
    evaluation = v2["evaluation"]
    assert evaluation["images"] >= 5 and evaluation["incumbent_f1"] == 0.0  # v1 predicts nothing
    assert evaluation["promoted"] == (v2["status"] in ("active", "retired"))
    assert models["v1"]["status"] == ("retired" if evaluation["promoted"] else "active")
    first, second = report["waves"]
    assert first["model_version"] == "v1" and first["auto_accepted"] == 0 and first["human_reviewed"] == first["images"]
    if evaluation["promoted"]:
        assert second["model_version"] != "v1"  # the promoted variant pre-labels the next wave
