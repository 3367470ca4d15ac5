"""``--context KEY=VALUE``: parsed and validated exactly as ``cdk deploy -c labelloop.KEY=VALUE``."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cli.context import ContextError, parse_context_pairs, resolve_overrides
from cli.main import main
from infra.config import ConfigError, config_from_context, labelloop_context, override_keys
from sandbox.localrun import RunSpec, run_config, stack_context


def test_keys_with_or_without_the_prefix_keep_the_raw_value() -> None:
    pairs = parse_context_pairs(['labels=["car","person"]', "labelloop.model.minConfidence=0.3", "maxBatchSize=7"])
    assert pairs == {
        "labelloop.labels": '["car","person"]',
        "labelloop.model.minConfidence": "0.3",
        "labelloop.maxBatchSize": "7",
    }


def test_every_documented_key_is_accepted() -> None:
    keys = override_keys()
    assert "labelloop.calibration.minPairs" in keys and "labelloop.model.kind" in keys
    assert parse_context_pairs(f"{k}=1" for k in keys).keys() == set(keys)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("labels", "expects KEY=VALUE"),
        ("=3", "expects KEY=VALUE"),
        ("maxBatchSise=3", "did you mean maxBatchSize?"),
        ("model.knd=none", "did you mean model.kind?"),
        ("nothing.like.it=1", "unknown setting"),
    ],
)
def test_malformed_or_unknown_keys_are_refused(value: str, message: str) -> None:
    with pytest.raises(ContextError, match=message.replace("?", r"\?")):
        parse_context_pairs([value])


def test_a_key_given_twice_with_different_values_is_refused() -> None:
    assert parse_context_pairs(["maxBatchSize=3", "labelloop.maxBatchSize=3"]) == {"labelloop.maxBatchSize": "3"}
    with pytest.raises(ContextError, match="twice"):
        parse_context_pairs(["maxBatchSize=3", "maxBatchSize=4"])


_VALUES = st.sampled_from(
    ["1", "0", "-1", "0.5", "2.5", "true", "null", '"x"', "[]", '["a","b"]', '["a","a"]', "a,b", "{}", "none", "", "9"]
)


@given(st.dictionaries(st.sampled_from(override_keys()), _VALUES, max_size=4))
def test_local_validation_is_the_deploy_validation(overrides: dict[str, str]) -> None:
    """Same accepted configs, same error messages, as `config_from_context` on the CDK context."""
    cdk_context = {"labelloop": labelloop_context(), **overrides}
    try:
        deployed = config_from_context(cdk_context.get)
    except ConfigError as exc:
        with pytest.raises(ContextError) as info:
            resolve_overrides(None, overrides)
        assert str(info.value) == f"--context: {exc}"
        return
    merged, local = resolve_overrides(None, overrides)
    assert local == deployed
    assert config_from_context({"labelloop": merged}.get) == deployed  # what synthesis will see


def test_context_is_applied_after_the_runs_own_options(tmp_path: Path) -> None:
    spec = RunSpec(
        images=tmp_path,
        out=tmp_path / "out",
        workers=1,
        context={"labelloop.workersPerObject": "3", "labelloop.maxBatchSize": "25", "labelloop.labels": "car,bus"},
    )
    context = stack_context(spec, ("object",))
    assert context["workersPerObject"] == 3 and context["maxBatchSize"] == 25
    assert context["batchWindowSeconds"] == 1  # the run's own setting stays where not overridden
    config = run_config(spec, ("object",))
    assert config.labels == ("car", "bus") and config.workers_per_object == 3


def _jpeg() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("maxBatchSize=0", "labelloop.maxBatchSize: must be an integer in [1, 100000], got 0"),
        ("model.kind=rekognition", "labelloop.model.projectVersionArn: required"),
        ("labels=[]", "labelloop.labels: must be a non-empty list"),
        ("cost.workforce_per_task=-0.5", "labelloop.cost.workforce_per_task: must be a finite number >= 0"),
        ("colour=blue", "unknown setting"),
    ],
)
def test_local_run_refuses_a_bad_context_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str, message: str
) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes(_jpeg())
    args = ["--images", str(tmp_path / "images"), "--out", str(tmp_path / "out"), "--context", value]
    if value.startswith("colour"):
        with pytest.raises(SystemExit) as info:  # argparse: the option's own type check
            main(["local", "run", *args])
        assert info.value.code == 2
    else:
        assert main(["local", "run", *args]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not (tmp_path / "out").exists()
