"""The suite's parallel layout: which tests must share one xdist worker."""

from __future__ import annotations

from tests.conftest import work_unit


def test_an_e2e_module_is_one_work_unit() -> None:
    first = work_unit("tests/e2e/test_local_up.py::test_the_aws_cli_uploads_a_folder")
    second = work_unit("tests/e2e/test_local_up.py::test_sigterm_during_a_batch[x@y]")
    assert first == second == "tests/e2e/test_local_up.py"
    assert work_unit("tests/e2e/test_local_run.py::test_demo") != first


def test_every_label_studio_test_shares_one_unit() -> None:
    assert work_unit("tests/labelstudio/test_a.py::t") == work_unit("tests/labelstudio/test_b.py::u")


def test_other_tests_spread_one_by_one() -> None:
    assert work_unit("tests/unit/test_yolo.py::test_a") == "tests/unit/test_yolo.py::test_a"
    assert work_unit("tests/unit/test_yolo.py::test_a") != work_unit("tests/unit/test_yolo.py::test_b")
    assert work_unit("tests/handlers/test_route.py::test_x[1]") == "tests/handlers/test_route.py::test_x[1]"


def test_a_module_with_a_module_scoped_fixture_is_one_unit() -> None:
    """Its fixture is built once per run, not once on every worker."""
    first = work_unit("tests/handlers/test_retrain.py::test_a")
    assert first == work_unit("tests/handlers/test_retrain.py::test_b[1]") == "tests/handlers/test_retrain.py"
