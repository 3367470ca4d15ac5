"""`local run` and `local up` take one option set: declared once, built into one `RunSpec`, checked once."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

import pytest

from cli import local_run, local_up
from cli.local_options import SHARED_FIELDS, add_shared_options
from cli.main import build_parser, main
from sandbox.localrun import RunSpec


def _subparser(command: str) -> argparse.ArgumentParser:
    parser = build_parser()
    local = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["local"]
    sub = next(a for a in local._actions if isinstance(a, argparse._SubParsersAction))
    found: argparse.ArgumentParser = sub.choices[command]
    return found


def _shape(action: argparse.Action) -> tuple[object, ...]:
    return (tuple(action.option_strings), action.type, action.default, action.choices, action.help, action.nargs)


def _shared_actions(parser: argparse.ArgumentParser) -> dict[str, tuple[object, ...]]:
    declared = argparse.ArgumentParser(add_help=False)
    add_shared_options(declared)
    dests = {a.dest for a in declared._actions}
    return {a.dest: _shape(a) for a in parser._actions if a.dest in dests}


def test_both_commands_expose_the_shared_options_exactly_as_declared() -> None:
    declared = argparse.ArgumentParser(add_help=False)
    add_shared_options(declared)
    expected = {a.dest: _shape(a) for a in declared._actions}
    assert set(SHARED_FIELDS) | {"context"} == set(expected)
    assert _shared_actions(_subparser("run")) == expected
    assert _shared_actions(_subparser("up")) == expected


def test_the_same_shared_options_make_the_same_run_spec(tmp_path: Path) -> None:
    shared = ["--labels", "car,person", "--model", "synthetic", "--reviewer", "fail:gone", "--workers", "3"]
    shared += ["--threshold", "0.8", "--target-quality", "0.7", "--min-pairs", "12", "--task-mode", "verify"]
    shared += ["--oracle-noise", "0.05", "--seed", "7", "--context", "maxBatchSize=50"]
    run_args = build_parser().parse_args(["local", "run", "--images", str(tmp_path), "--out", str(tmp_path), *shared])
    up_args = build_parser().parse_args(["local", "up", "--port", "1", "--images-root", str(tmp_path), *shared])
    run_spec = local_run.spec_from_args(run_args)
    up_spec = local_up.spec_from_args(up_args)
    assert isinstance(up_spec.run, RunSpec)
    fields = [*SHARED_FIELDS.values(), "context"]
    assert {f: getattr(run_spec, f) for f in fields} == {f: getattr(up_spec.run, f) for f in fields}
    assert run_spec.labels == ("car", "person") and run_spec.context == {"labelloop.maxBatchSize": "50"}
    assert up_spec.images_root == tmp_path and up_spec.port == 1


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (["--workers", "0"], "--workers must be within 1-9, got 0"),
        (["--threshold", "1.5"], "--threshold must be within [0, 1], got 1.5"),
        (["--target-quality", "1.5"], "--target-quality must be within (0, 1), got 1.5"),
        (["--model", "yolo"], "--model must be none, synthetic, learn, learn-sagemaker or replay:FILE, got 'yolo'"),
        (["--reviewer", "crowd"], "--reviewer must be accept, answers:FILE, oracle:FILE"),
        (["--task-mode", "verify", "--context", "taskMode=adjust"], "--task-mode verify contradicts --context"),
    ],
)
def test_a_bad_shared_value_is_the_same_one_line_error_from_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: list[str], message: str
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.jpg").write_bytes(b"not read before the options are checked")
    errors = []
    for command in (
        ["local", "run", "--images", str(images), "--out", str(tmp_path / "out"), *bad],
        ["local", "up", "--port", str(_free_port()), "--images-root", str(images), *bad],
    ):
        assert main(command) == 2
        errors.append(capsys.readouterr().err)
    assert errors[0] == errors[1], errors
    assert errors[0].startswith("labelloop: error: ") and message in errors[0]
    assert errors[0].count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (["--labels", " , "], "argument --labels: give at least one label, e.g. car,person"),
        (
            ["--context", "maxBatchSise=5"],
            "argument --context: maxBatchSise: unknown setting; did you mean maxBatchSize?",
        ),
        (["--task-mode", "both"], "argument --task-mode: invalid choice: 'both' (choose from 'adjust', 'verify')"),
    ],
)
def test_a_malformed_shared_value_is_the_same_argument_error_from_both(
    capsys: pytest.CaptureFixture[str], bad: list[str], message: str
) -> None:
    messages = []
    for command in (["local", "run", "--images", "x", "--out", "y"], ["local", "up", "--port", "1"]):
        with pytest.raises(SystemExit) as exit_info:
            main([*command, *bad])
        assert exit_info.value.code == 2
        messages.append(capsys.readouterr().err.splitlines()[-1].split(": error: ", 1)[1])
    assert messages[0] == messages[1]
    assert messages[0].startswith(message)
