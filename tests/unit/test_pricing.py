"""The cost ledger: components add up to the total, per-image is total / labeled images, bad prices named."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from labelloop_core.pricing import PRICES, PriceError, Usage, ledger, prices

counts = st.integers(min_value=0, max_value=10**7)
hours = st.floats(min_value=0, max_value=10**4, allow_nan=False)


@given(
    images=counts,
    tasks=counts,
    model_hours=hours,
    model=st.sampled_from(["none", "rekognition", "sagemaker"]),
    requests=counts,
    gb=hours,
    transitions=counts,
    t1=counts,
    t2=counts,
)
def test_components_sum_to_total_and_per_image(images, tasks, model_hours, model, requests, gb, transitions, t1, t2):
    usage = Usage(images, tasks, model_hours, model, 2, requests, gb, transitions, t1, t2)
    cost = ledger(usage)
    total = 0.0
    for value in cost["components"].values():
        total += value
    assert cost["total_usd"] == total
    assert set(cost["components"]) == set(cost["basis"])
    if images:
        assert cost["per_image_usd"] == cost["total_usd"] / images
    else:
        assert cost["per_image_usd"] is None
    if model == "none":
        assert cost["components"]["model"] == 0


def test_review_priced_per_object_plus_workforce():
    cost = ledger(Usage(labeled_images=10, review_tasks=10), prices({"workforce_per_task": 0.012}))
    assert math.isclose(cost["components"]["human_review"], 10 * (PRICES["ground_truth_per_object"].usd + 0.012))


@pytest.mark.parametrize("bad", [-1, "nan", float("inf"), "abc", None, True])
def test_bad_price_names_its_key(bad):
    with pytest.raises(PriceError, match=r"cost\.ground_truth_per_object"):
        prices({"ground_truth_per_object": bad})


def test_unknown_price_key():
    with pytest.raises(PriceError, match=r"cost\.nope"):
        prices({"nope": 1})
