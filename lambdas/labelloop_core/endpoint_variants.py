"""Which production variants the configured SageMaker endpoint runs while a version is evaluated and after.

Pure (docs/retrain.md, "SageMaker backend"): version ``vN`` is hosted as the variant
``labelloop-vN`` of the user's endpoint. While it is evaluated the endpoint runs its current
variants unchanged plus the candidate's at weight 0 (LabelLoop reaches it with ``TargetVariant``;
nobody else's traffic moves). A promotion gives the candidate weight 1 and keeps the previous
version's variant at weight 0, so batches still pinned to it keep invoking it; older variants go.
A rejection returns the endpoint to the config it had before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .contract import SAGEMAKER_VARIANT_PREFIX

__all__ = ["evaluation_variants", "incumbent_variant", "promotion_variants", "variant_name"]

#: Production-variant fields an endpoint config is created with (DescribeEndpointConfig adds others).
VARIANT_FIELDS = (
    "VariantName",
    "ModelName",
    "InitialInstanceCount",
    "InstanceType",
    "InitialVariantWeight",
    "AcceleratorType",
    "VolumeSizeInGB",
    "ModelDataDownloadTimeoutInSeconds",
    "ContainerStartupHealthCheckTimeoutInSeconds",
    "ServerlessConfig",
)


def variant_name(version: str) -> str:
    """The production variant hosting registry version ``version`` (``labelloop-v2``)."""
    return f"{SAGEMAKER_VARIANT_PREFIX}{version}"


def _clean(variant: Mapping[str, Any], weight: float | None = None) -> dict[str, Any]:
    out = {k: variant[k] for k in VARIANT_FIELDS if k in variant}
    if weight is not None:
        out["InitialVariantWeight"] = weight
    return out


def incumbent_variant(variants: Sequence[Mapping[str, Any]], known: str | None) -> str:
    """The variant serving the active version: ``known`` when the registry names it, else the heaviest one."""
    names = [str(v["VariantName"]) for v in variants]
    if known is not None:
        if known not in names:
            raise ValueError(f"the endpoint has no variant {known!r} (it has {', '.join(names)})")
        return known
    if not variants:
        raise ValueError("the endpoint config has no production variant")
    heaviest = max(variants, key=lambda v: float(v.get("InitialVariantWeight", 1.0)))
    return str(heaviest["VariantName"])


def evaluation_variants(
    current: Sequence[Mapping[str, Any]], version: str, model_name: str, instance_type: str
) -> list[dict[str, Any]]:
    """The current variants as they are, plus the candidate's at weight 0 (replacing a leftover of the same name)."""
    name = variant_name(version)
    kept = [_clean(v) for v in current if v.get("VariantName") != name]
    candidate = {
        "VariantName": name,
        "ModelName": model_name,
        "InitialInstanceCount": 1,
        "InstanceType": instance_type,
        "InitialVariantWeight": 0.0,
    }
    return [*kept, candidate]


def promotion_variants(evaluated: Sequence[Mapping[str, Any]], version: str, incumbent: str) -> list[dict[str, Any]]:
    """The candidate with all the traffic, the previous version's variant kept at weight 0, nothing else."""
    by_name = {str(v["VariantName"]): v for v in evaluated}
    name = variant_name(version)
    if name not in by_name or incumbent not in by_name:
        raise ValueError(f"the evaluation config lacks {name!r} or {incumbent!r}")
    return [_clean(by_name[name], 1.0), _clean(by_name[incumbent], 0.0)]
