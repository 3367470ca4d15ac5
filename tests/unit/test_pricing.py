"""The cost ledger: components add up to the total, per-image is total / labeled images, bad prices named."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from labelloop_core.batch_cost import MEASURED, BatchWork, batch_cost, usage, window_hours
from labelloop_core.contract import Cost
from labelloop_core.pricing import COMPONENTS, PRICES, PriceError, Usage, ledger, prices, total, usage_fields

counts = st.integers(min_value=0, max_value=10**7)
hours = st.floats(min_value=0, max_value=10**4, allow_nan=False)
price = st.floats(min_value=0, max_value=100, allow_nan=False)
tables = st.dictionaries(st.sampled_from(sorted(PRICES)), price).map(prices)


@given(
    images=counts,
    objects=counts,
    workers=st.integers(1, 9),
    model_hours=hours,
    model=st.sampled_from(["none", "rekognition", "sagemaker"]),
    backend=st.sampled_from(["groundtruth", "labelstudio"]),
    training=hours,
    requests=counts,
    gb=hours,
    transitions=counts,
    t1=counts,
    t2=counts,
    table=tables,
)
def test_components_sum_to_total_and_per_image(
    images, objects, workers, model_hours, model, backend, training, requests, gb, transitions, t1, t2, table
):
    usage = Usage(
        labeled_images=images,
        model=model,
        model_hours=model_hours,
        inference_units=2,
        model_calls=images,
        training_seconds=training,
        review_backend=backend,
        review_objects=objects,
        review_tasks=objects * workers,
        lambda_requests=requests,
        lambda_gb_seconds=gb,
        state_transitions=transitions,
        s3_tier1=t1,
        s3_tier2=t2,
    )
    cost = ledger(usage, table)
    assert list(cost[Cost.COMPONENTS]) == list(COMPONENTS) == list(cost[Cost.BASIS])
    assert cost[Cost.TOTAL] == total(cost[Cost.COMPONENTS].values())
    assert math.isclose(cost[Cost.TOTAL], math.fsum(cost[Cost.COMPONENTS].values()), rel_tol=1e-9, abs_tol=1e-9)
    if images:
        assert cost[Cost.PER_IMAGE] == cost[Cost.TOTAL] / images
        assert math.isclose(cost[Cost.PER_IMAGE] * images, cost[Cost.TOTAL], rel_tol=1e-9, abs_tol=1e-12)
    else:
        assert cost[Cost.PER_IMAGE] is None
    if model == "none":
        assert cost[Cost.COMPONENTS]["model_hosting"] == 0
    assert all(v >= 0 for v in cost[Cost.COMPONENTS].values())
    assert all(b[Cost.KIND] == Cost.ESTIMATED for b in cost[Cost.BASIS].values())  # nothing marked measured


@given(
    accepted=st.integers(0, 2000),
    reviewed=st.integers(0, 2000),
    model=st.sampled_from(["none", "rekognition", "sagemaker"]),
    backend=st.sampled_from(["groundtruth", "labelstudio"]),
    seconds=st.floats(0, 86400, allow_nan=False),
    units=st.integers(1, 5),
    workers=st.integers(1, 9),
    invocations=st.integers(1, 500),
    transitions=st.integers(1, 5000),
    written=st.integers(0, 10**5),
    verify=st.booleans(),
    table=tables,
)
def test_a_batch_ledger_adds_up(
    accepted, reviewed, model, backend, seconds, units, workers, invocations, transitions, written, verify, table
):
    """Over any batch: components sum to the total, per image x images = total, each input counted once."""
    objects = reviewed * (2 if verify else 1)  # verify-then-adjust: both jobs bill their objects
    work = BatchWork(
        labeled_images=accepted + reviewed,
        prelabeled_images=accepted + reviewed,
        model=model,
        inference_units=units,
        hosting_hours=seconds / 3600,
        review_backend=backend,
        review_objects=objects,
        workers_per_object=workers,
        workflow_invocations=invocations,
        state_transitions=transitions,
        review_jobs=2 if verify and reviewed else int(bool(reviewed)),
        objects_written=written,
    )
    cost = batch_cost(work, table)
    parts = cost[Cost.COMPONENTS]
    assert cost[Cost.TOTAL] == total(parts.values())
    if work.labeled_images:
        assert math.isclose(cost[Cost.PER_IMAGE] * work.labeled_images, cost[Cost.TOTAL], rel_tol=1e-9, abs_tol=1e-12)
    assert parts["training"] == 0
    gt = objects * table["ground_truth_per_object"] + objects * workers * table["workforce_per_task"]
    expected = objects * table["label_studio_per_task"] if backend == "labelstudio" else gt
    assert math.isclose(parts["human_review"], expected, rel_tol=1e-12, abs_tol=1e-12)
    hourly = table["rekognition_inference_unit_hour"] if model == "rekognition" else table["sagemaker_instance_hour"]
    hosted = 0.0 if model == "none" else seconds / 3600 * units * hourly
    assert math.isclose(parts["model_hosting"], hosted, rel_tol=1e-12, abs_tol=1e-12)
    basis = cost[Cost.BASIS]
    assert basis["human_review"][Cost.KIND] == Cost.MEASURED
    assert basis["model_hosting"][Cost.KIND] == Cost.ESTIMATED and basis["orchestration"][Cost.KIND] == Cost.ESTIMATED
    assert set(MEASURED) <= set(usage_fields())
    assert usage(work).s3_tier1 == written


def test_review_priced_per_object_plus_workforce():
    usage = Usage(labeled_images=10, review_objects=10, review_tasks=20)
    cost = ledger(usage, prices({"workforce_per_task": 0.012}))
    expected = 10 * PRICES["ground_truth_per_object"].usd + 20 * 0.012
    assert math.isclose(cost[Cost.COMPONENTS]["human_review"], expected)


def test_label_studio_review_is_priced_per_task_without_the_ground_truth_fee():
    usage = Usage(labeled_images=10, review_objects=10, review_tasks=10, review_backend="labelstudio")
    cost = ledger(usage, prices({"label_studio_per_task": 0.3}))
    assert math.isclose(cost[Cost.COMPONENTS]["human_review"], 3.0)


def test_training_is_billed_per_training_hour():
    cost = ledger(Usage(training_seconds=5400), prices())
    assert math.isclose(cost[Cost.COMPONENTS]["training"], 1.5 * PRICES["rekognition_training_hour"].usd)


@pytest.mark.parametrize("route", [{}, {"prelabel_window": None}, {"prelabel_window": {"seconds": -3}}])
def test_a_missing_window_bills_no_hosting(route):
    assert window_hours(route) == 0.0


def test_window_hours():
    assert window_hours({"prelabel_window": {"seconds": 5400}}) == 1.5


@pytest.mark.parametrize("bad", [-1, "nan", float("inf"), "abc", None, True])
def test_bad_price_names_its_key(bad):
    with pytest.raises(PriceError, match=r"cost\.ground_truth_per_object"):
        prices({"ground_truth_per_object": bad})


def test_unknown_price_key():
    with pytest.raises(PriceError, match=r"cost\.nope"):
        prices({"nope": 1})


def test_the_readme_price_table_is_the_code_table():
    """README's "Cost" section lists every price as the table has it (one source, no drift)."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("**The price table**", 1)[1].split("**Overrides**", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = float(cells[1])
    assert rows == {name: price.usd for name, price in PRICES.items()}
