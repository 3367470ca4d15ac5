"""The class registry: stable ids by name, persistence, remapping by NAME never by position."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from labelloop_core.classes import ClassMapError, ClassRegistry
from tests.conftest import FIXTURES


def test_ids_follow_insertion_and_never_change():
    registry = ClassRegistry(["car", "person"])
    assert registry.id_for("person") == 1
    assert registry.id_for("bus") == 2
    assert registry.names == ["car", "person", "bus"]
    assert registry.add("car") == 0
    assert len(registry) == 3 and "bus" in registry and "cat" not in registry
    assert registry.name_for(2) == "bus"
    with pytest.raises(ClassMapError):
        registry.name_for(3)
    with pytest.raises(ClassMapError):
        registry.id_for("cat", add=False)


def test_persistence_round_trip():
    registry = ClassRegistry(["car", "person", "čajník"])
    document = json.loads(json.dumps(registry.to_dict()))
    assert document == {"0": "car", "1": "person", "2": "čajník"}
    assert ClassRegistry.from_mapping(document) == registry
    assert ClassRegistry.from_mapping(registry.as_dict()) == registry
    assert ClassRegistry.from_mapping(registry.names) == registry


@pytest.mark.parametrize(
    "document",
    [
        {"0": "a", "2": "b"},  # gap
        {"1": "a"},  # not starting at 0
        {"0": "a", "1": "a"},  # duplicate name
        {"x": "a"},  # not an id
        {"01": "a"},  # not canonical
        {"0": ""},  # empty name
        {"0": 3},  # not a string
        ["a", "a"],
        "car",
    ],
)
def test_inconsistent_documents_raise(document):
    with pytest.raises(ClassMapError):
        ClassRegistry.from_mapping(document)


def test_label_categories_file():
    document = json.loads((FIXTURES / "label_categories.json").read_text())
    assert ClassRegistry.from_label_categories(document).names == ["Car", "Person"]
    with pytest.raises(ClassMapError):
        ClassRegistry.from_label_categories({"labels": [{"name": "x"}]})
    with pytest.raises(ClassMapError):
        ClassRegistry.from_label_categories({})


def test_remap_is_by_name_not_position():
    registry = ClassRegistry(["car", "person"])
    # A job whose UI listed person first: its class 0 is person.
    assert registry.remap({"0": "person", "1": "car"}) == {0: 1, 1: 0}
    assert registry.remap({"0": "bus"}) == {0: 2}
    assert registry.names == ["car", "person", "bus"]
    with pytest.raises(ClassMapError, match="truck"):
        registry.remap({"0": "truck"}, add_unknown=False)
    with pytest.raises(ClassMapError):
        registry.remap({"zero": "car"})


@given(st.lists(st.text(min_size=1).filter(str.strip), unique=True, max_size=20), st.randoms())
def test_remap_of_any_permutation_preserves_names(names, rnd):
    registry = ClassRegistry(names)
    shuffled = list(names)
    rnd.shuffle(shuffled)
    foreign = {str(i): name for i, name in enumerate(shuffled)}
    mapping = registry.remap(foreign, add_unknown=False)
    assert all(registry.name_for(mapping[int(i)]) == name for i, name in foreign.items())
