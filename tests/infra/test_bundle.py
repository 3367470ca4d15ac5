"""The synthesized Lambda asset fits the runtime that runs it (python3.14 on arm64), and the check
that says so fails on a wheel, a binary, a version or an import that would only break on AWS."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from infra.bundle_check import (
    UNZIPPED_LIMIT_BYTES,
    BundleReport,
    check_assembly,
    check_bundle,
    read_pins,
    tag_problem,
    target_for,
)
from infra.synth import STACK_NAME

REQUIREMENTS = Path(__file__).resolve().parents[2] / "lambdas" / "requirements.txt"
TARGET = target_for("python3.14", "arm64")
# An x86-64 ELF header (e_machine 62) standing in for a wheel built for the wrong CPU.
X86_64_ELF = b"\x7fELF\x02\x01\x01" + b"\x00" * 9 + b"\x03\x00" + (62).to_bytes(2, "little") + b"\x00" * 44


@pytest.fixture(scope="module")
def reports(assembly_dir: Path) -> list[BundleReport]:
    return check_assembly(assembly_dir, STACK_NAME, REQUIREMENTS)


@pytest.fixture
def asset_copy(reports: list[BundleReport], tmp_path: Path) -> Path:
    """A hard-linked copy of the real asset to add files to (existing files are never written)."""
    target = tmp_path / "asset"
    shutil.copytree(reports[0].asset_dir, target, copy_function=os.link)
    return target


def _check(asset: Path, requirements: Path = REQUIREMENTS, handlers: tuple[str, ...] = ()) -> BundleReport:
    return check_bundle(
        asset,
        runtime="python3.14",
        architecture="arm64",
        handlers=handlers or ("handlers.route.handler",),
        requirements=requirements,
    )


def test_the_bundle_fits_python314_on_arm64(reports: list[BundleReport], capsys: pytest.CaptureFixture[str]) -> None:
    [report] = reports  # one shared asset for every function
    with capsys.disabled():
        print(f"\n{report.summary()}")
    assert report.problems == []
    assert report.target.runtime == "python3.14" and report.target.machine == "aarch64"
    assert 0 < report.unzipped_bytes < UNZIPPED_LIMIT_BYTES
    assert len(report.handlers) >= 10
    names = {d.name.lower() for d in report.distributions}
    assert {"aws_lambda_powertools", "pillow", "orjson"} <= names
    # What the handlers import at cold start, and where each comes from on Lambda.
    assert report.module_sources["aws_lambda_powertools"] == "zip"
    assert report.module_sources["handlers"] == "zip"
    assert report.module_sources["botocore"] == "runtime"
    assert "boto3" not in report.module_sources  # clients are created lazily


def test_a_wheel_built_for_another_python_and_cpu_fails_the_check(asset_copy: Path, tmp_path: Path) -> None:
    info = asset_copy / "fastthing-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fastthing\nVersion: 1.0\n")
    (info / "WHEEL").write_text(
        "Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: cp311-cp311-manylinux_2_17_x86_64\n"
        "Tag: cp311-cp311-manylinux2014_x86_64\n"
    )
    (info / "RECORD").write_text("fastthing/__init__.py,,\nfastthing-1.0.dist-info/RECORD,,\n")
    (asset_copy / "fastthing").mkdir()
    (asset_copy / "fastthing" / "__init__.py").write_text("")
    (asset_copy / "fastthing" / "_speed.cpython-311-x86_64-linux-gnu.so").write_bytes(X86_64_ELF)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(REQUIREMENTS.read_text() + "fastthing==1.0\n")

    problems = _check(asset_copy, requirements).problems

    assert any(p.startswith("fastthing 1.0: no wheel tag fits python3.14") and "cp311-cp311" in p for p in problems)
    assert any("_speed.cpython-311-x86_64-linux-gnu.so: ELF machine 62" in p for p in problems)
    assert any("extension module for CPython 3.11 on x86_64" in p for p in problems)


@pytest.mark.parametrize(
    ("tag", "why"),
    [
        ("cp314-cp314-manylinux_2_28_aarch64", None),
        ("cp314-cp314-manylinux2014_aarch64", None),
        ("cp39-abi3-manylinux_2_17_aarch64", None),
        ("py3-none-any", None),
        ("cp314-none-any", None),
        ("cp313-cp313-manylinux_2_28_aarch64", "does not load on CPython 3.14"),
        ("cp314-cp314t-manylinux_2_28_aarch64", "does not load on CPython 3.14"),
        ("cp315-abi3-manylinux_2_28_aarch64", "does not load on CPython 3.14"),
        ("py2-none-any", "does not load on CPython 3.14"),
        ("cp314-cp314-manylinux_2_39_aarch64", "needs glibc 2.39, python3.14 has 2.34"),
        ("cp314-cp314-manylinux_2_28_x86_64", "built for x86_64"),
        ("cp314-cp314-musllinux_1_2_aarch64", "not a manylinux platform"),
        ("cp314-cp314-macosx_11_0_arm64", "not a manylinux platform"),
    ],
)
def test_wheel_tags_are_judged_against_the_runtime(tag: str, why: str | None) -> None:
    problem = tag_problem(tag, TARGET)
    assert problem is None if why is None else (problem is not None and why in problem), problem


def test_a_version_other_than_the_pinned_one_fails_the_check(asset_copy: Path, tmp_path: Path) -> None:
    pins = read_pins(REQUIREMENTS)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"pillow=={pins['pillow']}.post1\nnot-bundled==2.0\n")
    problems = _check(asset_copy, requirements).problems
    assert any(p.startswith(f"pillow: the bundle has {pins['pillow']}") for p in problems), problems
    assert "not-bundled==2.0 is pinned but not in the bundle" in problems


def test_an_unpinned_requirement_is_refused(asset_copy: Path, tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("pillow>=12\n")
    with pytest.raises(ValueError, match="not pinned as name==version"):
        _check(asset_copy, requirements)


def test_a_handler_importing_what_lambda_lacks_fails_the_check(asset_copy: Path) -> None:
    # yaml is in this machine's venv (cfn-lint needs it) but not in the bundle nor the runtime;
    # imghdr is in this machine's Python 3.11 but left the standard library in 3.13.
    (asset_copy / "handlers" / "needs_yaml.py").write_text("import yaml\n\ndef handler(event, context):\n    pass\n")
    (asset_copy / "handlers" / "needs_imghdr.py").write_text(
        "import imghdr\n\ndef handler(event, context):\n    pass\n"
    )
    (asset_copy / "handlers" / "no_entry.py").write_text("VALUE = 1\n")
    report = _check(
        asset_copy,
        handlers=("handlers.needs_yaml.handler", "handlers.needs_imghdr.handler", "handlers.no_entry.handler"),
    )
    assert any(
        p.startswith("handlers.needs_yaml.handler: cannot be imported") and "'yaml'" in p for p in report.problems
    )
    assert "imghdr is imported at cold start but left the standard library in Python 3.13" in report.problems
    assert any("handlers.no_entry has no callable handler" in p for p in report.problems)


def test_an_asset_over_lambdas_size_limit_fails_the_check(asset_copy: Path) -> None:
    big = asset_copy / "big.bin"
    with big.open("wb") as handle:  # sparse: costs no disk, counts in the size
        handle.truncate(UNZIPPED_LIMIT_BYTES)
    report = _check(asset_copy)
    assert report.unzipped_bytes > UNZIPPED_LIMIT_BYTES
    assert any("exceeds Lambda's 262,144,000 bytes" in p for p in report.problems)


def test_every_function_is_checked_against_its_own_runtime(assembly_dir: Path, reports: list[BundleReport]) -> None:
    template = json.loads((assembly_dir / f"{STACK_NAME}.template.json").read_text())
    handlers = {
        r["Properties"]["Handler"] for r in template["Resources"].values() if r["Type"] == "AWS::Lambda::Function"
    }
    assert handlers == {h for report in reports for h in report.handlers}
