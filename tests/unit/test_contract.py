"""The names that cross components are pinned here on purpose: they are written into manifests, S3 keys
and deployed environments, so renaming one is a data migration, never a refactor."""

from __future__ import annotations

from labelloop_core import contract, limits
from labelloop_core.contract import (
    Env,
    Meta,
)


def test_meta_keys_are_stable() -> None:
    # the manifest attribute and batch file names are pinned by docs/contracts.md (test_contract_names)
    assert (Meta.KEY, Meta.LABELED_KEY, Meta.LABEL_ATTRIBUTE) == ("key", "labeled_key", "label_attribute")


def test_batch_folder_keys() -> None:
    # the file names themselves are pinned by docs/contracts.md (test_contract_names)
    prefix = contract.batch_prefix("work/", "street", "b1")
    assert prefix == "work/batches/street/b1/"
    assert (prefix + contract.SHARDS_DIR, prefix + contract.PRELABELED_DIR) == (
        "work/batches/street/b1/shards/",
        "work/batches/street/b1/prelabeled/",
    )


def test_calibration_and_index_keys() -> None:
    root = contract.calibration_prefix("work/")
    assert root == "work/calibration/"
    assert contract.pairs_key(root, "street", "b1") == "work/calibration/street/pairs/b1.jsonl"
    assert contract.threshold_key(root, "street") == "work/calibration/street/threshold.json"
    assert contract.exports_index_key("work/", "street") == "work/exports-index/street.json"


def test_environment_names_are_their_own_values() -> None:
    names = {k: v for k, v in vars(Env).items() if k.isupper()}
    assert names and all(k == v for k, v in names.items())


def test_limits_check_and_name_the_setting() -> None:
    assert limits.WORKERS_PER_OBJECT.check(9, "workers") == 9
    for bad in (0, 10, True, 2.0):
        try:
            limits.WORKERS_PER_OBJECT.check(bad, "workers")
        except limits.LimitError as exc:
            assert str(exc).startswith("workers must be an integer in [1, 9]")
        else:
            raise AssertionError(f"{bad!r} passed")
    assert limits.is_public_workteam("arn:aws:sagemaker:us-east-1:394669845002:workteam/public-crowd/default")
    assert not limits.is_public_workteam("arn:aws:sagemaker:us-east-1:123456789012:workteam/private-crowd/t")
    assert not limits.is_public_workteam(None)
    assert limits.task_availability(None).hi == 864000
