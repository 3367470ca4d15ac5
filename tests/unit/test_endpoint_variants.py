"""The SageMaker backend's variant arithmetic and names: the candidate joins at weight 0, a promotion keeps
exactly the new and the previous version's variants, names stay within SageMaker's rules."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.sagemaker_training import sagemaker_name
from labelloop_core.endpoint_variants import evaluation_variants, incumbent_variant, promotion_variants, variant_name

CURRENT = [
    {
        "VariantName": "primary",
        "ModelName": "user-model",
        "InitialInstanceCount": 2,
        "InstanceType": "ml.g4dn.xlarge",
        "InitialVariantWeight": 1.0,
        "CurrentWeight": 1.0,  # DescribeEndpoint-only fields are not sent back
    }
]


def test_the_candidate_joins_at_weight_zero_and_nobody_elses_variant_changes() -> None:
    variants = evaluation_variants(CURRENT, "v2", "m-v2", "ml.m5.large")
    assert variants[0] == {k: v for k, v in CURRENT[0].items() if k != "CurrentWeight"}
    assert variants[1] == {
        "VariantName": "labelloop-v2",
        "ModelName": "m-v2",
        "InitialInstanceCount": 1,
        "InstanceType": "ml.m5.large",
        "InitialVariantWeight": 0.0,
    }
    again = evaluation_variants(variants, "v2", "m-v2b", "ml.m5.large")  # a leftover of the same name is replaced
    assert [v["VariantName"] for v in again] == ["primary", "labelloop-v2"] and again[1]["ModelName"] == "m-v2b"


def test_a_promotion_moves_the_weight_and_keeps_only_the_previous_version_reachable() -> None:
    older = {**CURRENT[0], "VariantName": "labelloop-v1x", "InitialVariantWeight": 0.0}
    evaluated = evaluation_variants([*CURRENT, older], "v3", "m-v3", "ml.m5.large")
    live = promotion_variants(evaluated, "v3", "primary")
    assert [(v["VariantName"], v["InitialVariantWeight"]) for v in live] == [("labelloop-v3", 1.0), ("primary", 0.0)]
    with pytest.raises(ValueError, match="lacks"):
        promotion_variants(CURRENT, "v3", "primary")


def test_the_incumbent_is_the_named_variant_or_the_heaviest() -> None:
    two = [{**CURRENT[0], "InitialVariantWeight": 0.2}, {**CURRENT[0], "VariantName": "b", "InitialVariantWeight": 0.8}]
    assert incumbent_variant(two, None) == "b"
    assert incumbent_variant(two, "primary") == "primary"
    with pytest.raises(ValueError, match="no variant 'gone'"):
        incumbent_variant(two, "gone")
    assert variant_name("v12") == "labelloop-v12"


@given(st.lists(st.text(min_size=1, max_size=80), min_size=1, max_size=4))
def test_sagemaker_names_follow_the_services_pattern(parts: list[str]) -> None:
    name = sagemaker_name(*parts)
    assert name == "" or re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", name)
    assert sagemaker_name("LabelLoop-labelloop", "v2", "20261208T013658Z-000004-d86682301530").startswith(
        "LabelLoop-labelloop-v2-20261208T013658Z"
    )
