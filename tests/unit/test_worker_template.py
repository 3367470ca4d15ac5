"""The worker templates rendered by a real Liquid engine with the pre-annotation Lambda's own taskInput.

Ground Truth renders templates with Liquid, exposes ``task.input`` and adds the filters
``grant_read_access`` (s3:// URI -> presigned URL), ``to_json`` and ``skip_autoescape``; equivalents
are registered here. The output is parsed as HTML and the crowd elements' attributes are decoded
exactly as a browser would (entity-unescaped), so the JSON the crowd elements receive is checked.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from typing import Any

import pytest
from liquid import Environment
from markupsafe import Markup

from adapters.groundtruth import DEFAULT_ELEMENT_NAME, TaskSettings, template_text
from handlers.pre_annotation import build_task_input
from labelloop_core.contract import PRELABEL_ATTRIBUTE

BUCKET = "data-bucket"


def _presign(uri: str) -> str:
    bucket, _, key = uri[5:].partition("/")
    return f"https://{bucket}.s3.amazonaws.com/{key}?X-Amz-Signature=abc&X-Amz-Expires=3600"


def _environment(autoescape: bool) -> Environment:
    env = Environment(autoescape=autoescape)
    env.filters["grant_read_access"] = _presign
    env.filters["to_json"] = lambda value: json.dumps(value)
    env.filters["skip_autoescape"] = lambda value: Markup(value)
    return env


class Elements(HTMLParser):
    """Collects every start tag with its (unescaped) attributes, and the text inside <text> tags."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.texts: list[str] = []
        self._in_text = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_text = tag == "text"

    def handle_endtag(self, tag: str) -> None:
        self._in_text = False

    def handle_data(self, data: str) -> None:
        if self._in_text and data.strip():
            self.texts.append(data.strip())

    def find(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.tags if name == tag]


def _render(mode: str, task_input: dict[str, Any], autoescape: bool = True) -> Elements:
    html = _environment(autoescape).from_string(template_text(mode)).render(task={"input": task_input})
    parser = Elements()
    parser.feed(html)
    parser.close()
    return parser


def _task_input(mode: str, labels: tuple[str, ...] = ("Car", "Person"), boxes: int = 2) -> dict[str, Any]:
    """taskInput built by the real pre-annotation code from a manifest line with pre-labels."""
    annotations = [
        {"class_id": i % len(labels), "left": 10 + 100 * i, "top": 20, "width": 50, "height": 60} for i in range(boxes)
    ]
    line = {
        "source-ref": f"s3://{BUCKET}/incoming/street/red flower +1.jpg",
        PRELABEL_ATTRIBUTE: {"image_size": [{"width": 800, "height": 600, "depth": 3}], "annotations": annotations},
        f"{PRELABEL_ATTRIBUTE}-metadata": {
            "objects": [{"confidence": 0.8}] * boxes,
            "class-map": {str(i): name for i, name in enumerate(labels)},
            "type": "groundtruth/object-detection",
            "human-annotated": "no",
            "creation-date": "2026-11-23T10:00:00.000000",
            "job-name": PRELABEL_ATTRIBUTE,
            "image-confidence": 0.64,
            "model": "m",
            "error": None,
        },
    }
    settings = TaskSettings(BUCKET, labels, mode, PRELABEL_ATTRIBUTE, DEFAULT_ELEMENT_NAME)
    task_input, notes = build_task_input(line, settings)
    assert notes == []
    return task_input


def _json_attr(attrs: dict[str, str | None], name: str) -> Any:
    value = attrs.get(name)
    assert value is not None, f"attribute {name} missing"
    return json.loads(value)


@pytest.mark.parametrize("autoescape", [True, False])
def test_adjust_template_carries_boxes_and_labels_as_json(autoescape: bool) -> None:
    task_input = _task_input("adjust")
    parsed = _render("adjust", task_input, autoescape)
    assert len(parsed.find("crowd-form")) == 1
    (box,) = parsed.find("crowd-bounding-box")
    assert box["name"] == DEFAULT_ELEMENT_NAME
    assert box["src"] == _presign(task_input["taskObject"])
    assert _json_attr(box, "labels") == ["Car", "Person"]
    assert _json_attr(box, "initial-value") == task_input["initialValue"]
    assert [b["label"] for b in _json_attr(box, "initial-value")] == ["Car", "Person"]
    assert len(parsed.find("full-instructions")) == 1 and len(parsed.find("short-instructions")) == 1


def test_adjust_template_without_prelabels() -> None:
    task_input = _task_input("adjust", boxes=0)
    (box,) = _render("adjust", task_input).find("crowd-bounding-box")
    assert _json_attr(box, "initial-value") == []


@pytest.mark.parametrize("autoescape", [True, False])
def test_hostile_label_names_stay_data(autoescape: bool) -> None:
    labels = ('Car "quoted"', "<script>alert(1)</script>", "a'b&c")
    task_input = _task_input("adjust", labels=labels, boxes=3)
    parsed = _render("adjust", task_input, autoescape)
    (box,) = parsed.find("crowd-bounding-box")
    assert _json_attr(box, "labels") == list(labels)
    assert [b["label"] for b in _json_attr(box, "initial-value")] == list(labels)
    # Only the template's own script tag exists: labels did not inject markup.
    assert len(parsed.find("script")) == 1


def test_verify_template_shows_boxes_and_asks_for_a_verdict() -> None:
    task_input = _task_input("verify")
    parsed = _render("verify", task_input)
    assert len(parsed.find("crowd-form")) == 1
    assert parsed.find("crowd-bounding-box") == []
    radios = parsed.find("crowd-radio-button")
    assert [(r["name"], r["value"]) for r in radios] == [("correct", "correct"), ("incorrect", "incorrect")]
    assert [t["name"] for t in parsed.find("crowd-text-area")] == ["comment"]
    (stage,) = [a for a in parsed.find("div") if a.get("id") == "prelabels"]
    assert _json_attr(stage, "data-boxes") == task_input["initialValue"]
    (img,) = parsed.find("img")
    assert img["src"] == _presign(task_input["taskObject"])
    (svg,) = parsed.find("svg")
    assert svg["viewbox"] == "0 0 800 600"
    rects = [
        (int(r["x"] or 0), int(r["y"] or 0), int(r["width"] or 0), int(r["height"] or 0)) for r in parsed.find("rect")
    ]
    assert rects == [tuple(b[k] for k in ("left", "top", "width", "height")) for b in task_input["initialValue"]]
    assert parsed.texts[: len(rects)] == ["Car", "Person"]


@pytest.mark.parametrize("autoescape", [True, False])
def test_verify_template_keeps_hostile_labels_as_text(autoescape: bool) -> None:
    labels = ("<script>alert(1)</script>", "<b>bold</b>")
    task_input = _task_input("verify", labels=labels, boxes=2)
    parsed = _render("verify", task_input, autoescape)
    assert len(parsed.find("script")) == 2  # the template's own two
    assert parsed.find("b") == []
    assert parsed.texts[:2] == list(labels)


def test_verify_template_without_a_known_size_lets_the_page_measure() -> None:
    task_input = _task_input("verify")
    del task_input["imageWidth"], task_input["imageHeight"]
    parsed = _render("verify", task_input)
    (svg,) = parsed.find("svg")
    assert svg["viewbox"] == "0 0 1 1"
    (stage,) = [a for a in parsed.find("div") if a.get("id") == "prelabels"]
    assert stage["data-image-width"] == ""


def test_element_name_is_what_the_emulator_and_handlers_expect() -> None:
    from sandbox.gt_runtime import _ELEMENT_NAME

    match = _ELEMENT_NAME.search(template_text("adjust"))
    assert match is not None and match.group(1) == DEFAULT_ELEMENT_NAME


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="task_mode"):
        template_text("classify")
