"""The demo's cost table and its two comparisons, computed from a ledger."""

from __future__ import annotations

import pytest

from cli.cost_view import comparison_lines, comparisons, cost_table
from labelloop_core.batch_cost import BatchWork, batch_cost, summed
from labelloop_core.contract import Cost
from labelloop_core.pricing import prices


def _cost() -> dict:
    table = prices({"workforce_per_task": 0.02})
    work = BatchWork(100, 100, "sagemaker", 1, 0.1, "groundtruth", 30, 2, 14, 40, 1, 50)
    return batch_cost(work, table)


def test_the_table_lists_every_component_with_its_basis_and_the_total() -> None:
    cost = _cost()
    lines = cost_table(cost)
    for name in cost[Cost.COMPONENTS]:
        assert any(line.split()[:1] == [name] for line in lines), name
    assert any(line.split()[:2] == ["human_review", f"{cost[Cost.COMPONENTS]['human_review']:.6f}"] for line in lines)
    assert any("model_hosting" in line and line.endswith(Cost.ESTIMATED) for line in lines)
    assert any(line.split()[:2] == ["total", f"{cost[Cost.TOTAL]:.6f}"] for line in lines)


def test_ground_truth_for_every_image_and_the_model_left_running() -> None:
    cost = _cost()
    found = comparisons(cost, images=100, workers=2, model="sagemaker", units=1, seconds=7200)
    parts = cost[Cost.COMPONENTS]
    # 100 objects x $0.08 and 200 worker tasks x $0.02, plus the run's own orchestration
    assert found["all_to_ground_truth_review_usd"] == pytest.approx(100 * 0.08 + 200 * 0.02)
    assert found["all_to_ground_truth_usd"] == pytest.approx(12.0 + parts["orchestration"])
    hosting = 2 * prices()["sagemaker_instance_hour"]
    assert found["model_left_running_hosting_usd"] == pytest.approx(hosting)
    assert found["model_left_running_usd"] == pytest.approx(cost[Cost.TOTAL] - parts["model_hosting"] + hosting)
    text = "\n".join(comparison_lines(found, boxes=321))
    assert "every image to Ground Truth, no model: $" in text and "321 boxes" in text


def test_summed_batches_add_up_per_dataset_and_per_image() -> None:
    costs = [_cost(), _cost(), None, {"status": "no ledger"}]
    total = summed(costs)
    assert total["batches"] == 2 and total[Cost.LABELED_IMAGES] == 200
    assert total[Cost.TOTAL] == sum(total[Cost.COMPONENTS].values())
    assert total[Cost.TOTAL] == pytest.approx(2 * _cost()[Cost.TOTAL])
    assert total[Cost.PER_IMAGE] * 200 == pytest.approx(total[Cost.TOTAL])
    assert summed([])[Cost.PER_IMAGE] is None
