"""`labelloop local run --model learn --waves N`: people's labels train the next version between waves.

The first version is an untrained detector (it predicts nothing: every image of wave 1 goes to people);
the export of those labels trains v2 in the emulated Rekognition Custom Labels, which is promoted only
on evidence and starts calibrated, so the next waves are auto-accepted in part. Accounting stays exact.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cli.main import main
from labelloop_core.contract import RUN_REPORT_FILE
from sandbox.localrun.spec import LEARN_RETRAIN
from sandbox.scenes import generate_scenes

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

IMAGES, WAVES = 96, 3
LABELS = "bicycle,car,person"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict[str, Any], str, Path]:
    root = tmp_path_factory.mktemp("learn")
    truth = generate_scenes(root / "images", IMAGES, LABELS.split(","), seed=5)
    images = truth.parent
    out = root / "out"
    argv = ["local", "run", "--images", str(images), "--out", str(out), "--model", "learn"]
    argv += ["--waves", str(WAVES), "--reviewer", f"oracle:{truth}", "--labels", LABELS]
    code = main(argv)
    report = json.loads((out / RUN_REPORT_FILE).read_text())
    return code, report, "", out


def test_the_run_is_exactly_accounted(run: tuple[int, dict[str, Any], str, Path]) -> None:
    code, report, _, _ = run
    assert code == 0, report["problems"]
    assert report["images_received"] == IMAGES
    assert report["images_received"] == len(report["rejected"]) + report["auto_accepted"] + report["human_reviewed"]
    assert report["exported_images"] == report["auto_accepted"] + report["human_reviewed"]
    assert sum(w["images"] for w in report["waves"]) == IMAGES and len(report["waves"]) == WAVES
    assert sum(w["auto_accepted"] + w["human_reviewed"] for w in report["waves"]) == report["exported_images"]


def test_people_label_wave_one_then_a_promoted_version_takes_over(run: tuple[int, dict[str, Any], str, Path]) -> None:
    _, report, _, out = run
    models = {m["version"]: m for m in report["models"]}
    assert models["v1"]["status"] == "retired" and models["v1"]["trained_on_images"] == 0
    # Which export trains the first promoted version depends on when the batches finish: find it.
    promoted = [m for m in report["models"][1:] if (m["evaluation"] or {}).get("promoted")]
    assert promoted, [m["evaluation"] for m in report["models"][1:]]
    evaluation = promoted[0]["evaluation"]
    assert evaluation["candidate_quality"] > evaluation["incumbent_quality"]
    assert evaluation["images"] >= LEARN_RETRAIN["minEvaluationImages"]  # no training before it could decide
    first, *later = report["waves"]
    assert first["model_version"] == "v1" and first["auto_accepted"] == 0 and first["human_reviewed"] == first["images"]
    assert later[-1]["model_version"] in {m["version"] for m in promoted}
    for model in report["models"][1:]:  # every candidate was decided, with its figures or the reason
        assert model["status"] in ("active", "retired", "rejected", "failed")
        assert model["evaluation"] is not None or model["status"] == "failed"
    assert (out / "loop.png").is_file()


def test_the_loops_cost_bills_training_and_every_versions_hosting(run: tuple[int, dict[str, Any], str, Path]) -> None:
    """Training from the registry's billable seconds, hosting from the emulation's start-to-stop intervals."""
    from labelloop_core.contract import Cost

    _, report, _, _ = run
    cost = report[Cost.FIELD]
    parts, basis, table = cost[Cost.COMPONENTS], cost[Cost.BASIS], cost[Cost.PRICES]["usd"]
    assert cost[Cost.TOTAL] == sum(parts.values())
    billed = sum(m["training_cost"]["billable_training_seconds"] for m in report["models"] if m["training_cost"])
    assert billed > 0 and basis["training"][Cost.COUNTS]["billable_training_seconds"] == billed
    assert parts["training"] == pytest.approx(billed / 3600 * table["rekognition_training_hour"])
    hosting = basis["model_hosting"]
    assert hosting[Cost.KIND] == Cost.MEASURED and hosting[Cost.COUNTS]["intervals"] >= 2  # v1, then a candidate
    assert parts["model_hosting"] == pytest.approx(
        hosting[Cost.COUNTS]["unit_hours"] * table["rekognition_inference_unit_hour"]
    )
    assert "model_hosting" not in cost["equal_to_batches"]
    assert parts["human_review"] == pytest.approx(cost["batches"][Cost.COMPONENTS]["human_review"])
