"""`labelloop calibrate`: the calibrate Lambda's code on files of pairs; JSON output, plots, bad lines."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from cli.main import main
from labelloop_core.calibration import CalibrationPair, calibrate


def write_pairs(path: Path, n: int, seed: int, *, perfect: bool = False) -> list[CalibrationPair]:
    rnd = random.Random(seed)
    pairs = []
    with path.open("w", encoding="utf-8") as handle:
        for _ in range(n):
            c = rnd.random()
            q = 1.0 if perfect else min(1.0, max(0.0, c + rnd.uniform(-0.2, 0.2)))
            handle.write(json.dumps({"confidence": c, "quality": q}) + "\n")
            pairs.append(CalibrationPair(c, q))
    return pairs


def test_json_is_one_object_per_file_in_order_and_matches_the_lambda_code(tmp_path, capsys):
    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    pairs_a = write_pairs(a, 300, 1)
    write_pairs(b, 10, 2)
    write_pairs(c, 200, 3, perfect=True)
    assert main(["calibrate", str(a), str(b), str(c), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["file"] for r in rows] == [str(a), str(b), str(c)]
    for row in rows:
        assert {"theta", "lower_bound", "n_above", "pairs_used", "reason", "bound"} <= row.keys()
    expected = calibrate(pairs_a).as_dict()
    assert {k: rows[0][k] for k in expected} == expected
    assert rows[0]["theta"] is not None and rows[0]["bound"] == "betting" and rows[0]["lower_bound"] >= 0.6
    assert rows[1]["theta"] is None and rows[1]["reason"] == "too_few_pairs" and rows[1]["pairs_used"] == 10
    assert rows[2]["theta"] == 0.0 and rows[2]["n_above"] == 200


def test_options_reach_the_calibration(tmp_path, capsys):
    a = tmp_path / "a.jsonl"
    pairs = write_pairs(a, 300, 4)
    args = ["calibrate", str(a), "--json", "--target", "0.7", "--confidence-level", "0.9", "--min-pairs", "50"]
    assert main([*args, "--bound", "hoeffding"]) == 0
    row = json.loads(capsys.readouterr().out)
    expected = calibrate(pairs, 0.7, 0.9, 50, "hoeffding").as_dict()
    assert {k: row[k] for k in expected} == expected and row["bound"] == "hoeffding"


def test_human_output_states_the_certificate_and_plot_is_written(tmp_path, capsys):
    a = tmp_path / "a.jsonl"
    write_pairs(a, 300, 5)
    out = tmp_path / "plots" / "cal.png"
    assert main(["calibrate", str(a), "--plot", str(out)]) == 0
    text = capsys.readouterr().out
    assert "theta 0." in text and "95% confidence" in text and "betting" in text
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_several_files_get_one_plot_each(tmp_path, capsys):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_pairs(a, 100, 6)
    write_pairs(b, 100, 7)
    assert main(["calibrate", str(a), str(b), "--json", "--plot", str(tmp_path / "p.png")]) == 0
    assert sorted(p.name for p in tmp_path.glob("p-*.png")) == ["p-1-a.png", "p-2-b.png"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"confidence": 0.5, "quality": 0.5}\n\n{"confidence": 1.5, "quality": 0.5}\n', ":3: calibration pair"),
        ('{"confidence": 0.5, "quality": 0.5}\nnot json\n', ":2: "),
        ('{"confidence": 0.5}\n', ":1: missing quality"),
        ('{"confidence": 0.5, "quality": NaN}\n', ":1: NaN is not a number"),
        ('{"confidence": 0.5, "quality": 0.5, "weight": 0.5}\n', ":1: calibration pair weight"),
        ("[0.5, 0.5]\n", ":1: expected a JSON object"),
    ],
)
def test_a_bad_line_exits_2_naming_its_line(tmp_path, capsys, body, message):
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    write_pairs(good, 50, 8)
    bad.write_text(body, encoding="utf-8")
    assert main(["calibrate", str(good), str(bad), "--json"]) == 2
    captured = capsys.readouterr()
    assert f"{bad}{message}" in captured.err and captured.out == ""  # nothing printed before the check


def test_missing_file_and_bad_options_exit_2(tmp_path, capsys):
    assert main(["calibrate", str(tmp_path / "absent.jsonl")]) == 2
    assert "cannot read" in capsys.readouterr().err
    a = tmp_path / "a.jsonl"
    write_pairs(a, 10, 9)
    assert main(["calibrate", str(a), "--target", "1.5"]) == 2
    assert main(["calibrate", str(a), "--min-pairs", "0"]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["calibrate", str(a), "--bound", "bernstein"])
    assert exc.value.code == 2
