"""The class registry: one stable ``name -> id`` mapping shared by every job and every export.

Ground Truth's ``class-map`` numbers classes in whatever order the job's UI listed them, so the
same ``class_id`` can mean different classes in two jobs. LabelLoop therefore never trusts a
position: foreign ids are translated to registry ids by NAME (`ClassRegistry.remap`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

__all__ = ["ClassMapError", "ClassRegistry"]


class ClassMapError(ValueError):
    """A class map or registry document is inconsistent, or names a class the registry refuses."""


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ClassMapError(f"class names must be non-empty strings, got {name!r}")
    return name


class ClassRegistry:
    """Stable class ids by name, in insertion order (id 0 is the first name ever added).

    Persist with `to_dict` (``{"0": "car", ...}``, the shape of a Ground Truth ``class-map``) and
    restore with `from_mapping`; ids never change once assigned, so exports stay comparable.
    """

    __slots__ = ("_ids", "_names")

    def __init__(self, names: Iterable[str] = ()) -> None:
        self._names: list[str] = []
        self._ids: dict[str, int] = {}
        for name in names:
            if _check_name(name) in self._ids:
                raise ClassMapError(f"duplicate class name {name!r}")
            self.add(name)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_mapping(cls, mapping: Mapping[Any, str] | Sequence[str]) -> ClassRegistry:
        """Load a registry from ``{"0": "car", "1": "person"}`` (ids as str or int) or a name list.

        Ids must be exactly ``0..n-1`` and names unique; anything else is a `ClassMapError`.
        """
        if isinstance(mapping, Mapping):
            by_id: dict[int, str] = {}
            for raw_id, name in mapping.items():
                try:
                    class_id = int(raw_id)
                except (TypeError, ValueError):
                    raise ClassMapError(f"class id {raw_id!r} is not an integer") from None
                if str(class_id) != str(raw_id).strip():
                    raise ClassMapError(f"class id {raw_id!r} is not a canonical integer")
                by_id[class_id] = _check_name(name)
            if sorted(by_id) != list(range(len(by_id))):
                raise ClassMapError(f"class ids must be 0..{len(by_id) - 1} without gaps, got {sorted(by_id)}")
            return cls(by_id[i] for i in range(len(by_id)))
        if isinstance(mapping, str):
            raise ClassMapError("a registry document must be a mapping or a list of names, got a string")
        return cls(mapping)

    @classmethod
    def from_label_categories(cls, document: Mapping[str, Any]) -> ClassRegistry:
        """Registry from a Ground Truth label category file ``{"labels": [{"label": "car"}, ...]}``."""
        labels = document.get("labels")
        if not isinstance(labels, list) or not labels:
            raise ClassMapError("label category document has no 'labels' list")
        names = []
        for entry in labels:
            if not isinstance(entry, Mapping) or "label" not in entry:
                raise ClassMapError(f"label category entry without 'label': {entry!r}")
            names.append(entry["label"])
        return cls(names)

    # -- queries ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._ids

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ClassRegistry) and self._names == other._names

    def __hash__(self) -> int:
        return hash(tuple(self._names))

    def __repr__(self) -> str:
        return f"ClassRegistry({self._names!r})"

    @property
    def names(self) -> list[str]:
        """Class names ordered by id (a copy)."""
        return list(self._names)

    def get_id(self, name: str) -> int | None:
        """Id of ``name`` or ``None`` (never adds)."""
        return self._ids.get(name)

    def name_for(self, class_id: int) -> str:
        """Name of ``class_id``; unknown ids raise `ClassMapError`."""
        if isinstance(class_id, bool) or not isinstance(class_id, int) or not 0 <= class_id < len(self._names):
            raise ClassMapError(f"class id {class_id!r} is not in the registry ({len(self._names)} classes)")
        return self._names[class_id]

    def as_dict(self) -> dict[int, str]:
        """``{id: name}`` with int keys (the shape `data_yaml` takes)."""
        return dict(enumerate(self._names))

    def to_dict(self) -> dict[str, str]:
        """``{"0": name, ...}``: JSON-safe, the shape of a Ground Truth ``class-map``."""
        return {str(i): name for i, name in enumerate(self._names)}

    # -- updates ------------------------------------------------------------------------------
    def add(self, name: str) -> int:
        """Id of ``name``, appending it with the next id when new."""
        existing = self._ids.get(name)
        if existing is not None:
            return existing
        _check_name(name)
        self._ids[name] = len(self._names)
        self._names.append(name)
        return self._ids[name]

    def id_for(self, name: str, *, add: bool = True) -> int:
        """Id of ``name``; unknown names are added, or raise `ClassMapError` when ``add`` is false."""
        existing = self._ids.get(name)
        if existing is not None:
            return existing
        if not add:
            raise ClassMapError(f"class {name!r} is not in the registry {self._names!r}")
        return self.add(name)

    def remap(self, class_map: Mapping[Any, str], *, add_unknown: bool = True) -> dict[int, int]:
        """Translate a foreign ``class-map`` (``{"0": "car"}``) into ``{foreign id: registry id}`` by NAME.

        A class map that numbers classes differently from the registry is fine: it is remapped,
        never taken by position. Names the registry lacks are added (``add_unknown``) or raise.
        Two foreign ids naming the same class both map to the one registry id.
        """
        result: dict[int, int] = {}
        for raw_id, name in class_map.items():
            try:
                foreign_id = int(raw_id)
            except (TypeError, ValueError):
                raise ClassMapError(f"class-map id {raw_id!r} is not an integer") from None
            result[foreign_id] = self.id_for(_check_name(name), add=add_unknown)
        return result
