"""The model registry: every version of the assisting model, its status and what it was trained on.

One JSON document per stack (``models/registry.json`` in the data bucket, written only through
`adapters.registry` with conditional writes). Pure: documents in, documents out; a transition that
the lifecycle does not allow raises `RegistryError` with the reason.

Statuses and the moves between them::

    training ─▶ evaluating ─▶ active ─▶ retired
        │            └──────▶ rejected
        └──▶ failed          (evaluating ─▶ failed too)

Exactly one version is ``active`` at a time (promoting one retires the previous); the deploy-time
model settings are the first version (``v1``, active, trained on nothing LabelLoop knows of).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

__all__ = [
    "STATUSES",
    "RegistryError",
    "active_version",
    "add_candidate",
    "initial_registry",
    "set_identity",
    "set_status",
    "training_in_flight",
    "update_fields",
]

TRAINING = "training"
EVALUATING = "evaluating"
ACTIVE = "active"
REJECTED = "rejected"
FAILED = "failed"
RETIRED = "retired"
STATUSES = (TRAINING, EVALUATING, ACTIVE, REJECTED, FAILED, RETIRED)
#: Allowed moves (from → to); ``active`` is reached only through `set_status` with a promotion.
MOVES: Mapping[str, frozenset[str]] = {
    TRAINING: frozenset({EVALUATING, FAILED}),
    EVALUATING: frozenset({ACTIVE, REJECTED, FAILED}),
    ACTIVE: frozenset({RETIRED}),
    REJECTED: frozenset(),
    FAILED: frozenset(),
    RETIRED: frozenset(),
}
SCHEMA = 1


class RegistryError(ValueError):
    """A registry document or a transition breaks the lifecycle; the message says how."""


def initial_registry(identity: Mapping[str, Any], created: str) -> dict[str, Any]:
    """The registry of a new stack: its deploy-time model as version ``v1``, active."""
    return {
        "schema": SCHEMA,
        "versions": [
            {
                "version": "v1",
                "status": ACTIVE,
                "identity": dict(identity),
                "trained_on": None,
                "evaluation": None,
                "training_cost": None,
                "history": [{"status": ACTIVE, "at": created, "reason": "the deploy-time model"}],
            }
        ],
    }


def _versions(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    versions = document.get("versions")
    if document.get("schema") != SCHEMA or not isinstance(versions, list):
        raise RegistryError(f"not a registry document of schema {SCHEMA}")
    return versions


def _find(document: Mapping[str, Any], version: str) -> dict[str, Any]:
    for entry in _versions(document):
        if entry.get("version") == version:
            return entry
    raise RegistryError(f"no version {version!r} in the registry")


def active_version(document: Mapping[str, Any]) -> dict[str, Any]:
    """The one active version (a batch pins it when it starts)."""
    active = [v for v in _versions(document) if v.get("status") == ACTIVE]
    if len(active) != 1:
        raise RegistryError(f"the registry must hold exactly one active version, found {len(active)}")
    return active[0]


def training_in_flight(document: Mapping[str, Any]) -> dict[str, Any] | None:
    """The version being trained or evaluated, if any (at most one per stack)."""
    return next((v for v in _versions(document) if v.get("status") in (TRAINING, EVALUATING)), None)


def add_candidate(
    document: Mapping[str, Any], identity: Mapping[str, Any], trained_on: Mapping[str, Any], at: str
) -> tuple[dict[str, Any], str]:
    """A copy with a new version in ``training``; refused while another training is in flight."""
    busy = training_in_flight(document)
    if busy is not None:
        raise RegistryError(f"version {busy['version']} is {busy['status']}: one training per stack at a time")
    export_version = trained_on.get("export_version")
    for entry in _versions(document):
        if export_version is not None and (entry.get("trained_on") or {}).get("export_version") == export_version:
            raise RegistryError(f"export {export_version} already trained version {entry['version']}")
    updated = copy.deepcopy(dict(document))
    name = f"v{len(updated['versions']) + 1}"
    updated["versions"].append(
        {
            "version": name,
            "status": TRAINING,
            "identity": dict(identity),
            "trained_on": dict(trained_on),
            "evaluation": None,
            "training_cost": None,
            "history": [{"status": TRAINING, "at": at, "reason": "training started"}],
        }
    )
    return updated, name


def set_status(
    document: Mapping[str, Any], version: str, status: str, at: str, reason: str, **fields: Any
) -> dict[str, Any]:
    """A copy with ``version`` moved to ``status`` (promotion retires the previous active version)."""
    if status not in STATUSES:
        raise RegistryError(f"unknown status {status!r}; use one of {STATUSES}")
    updated = copy.deepcopy(dict(document))
    entry = _find(updated, version)
    if status not in MOVES[str(entry["status"])]:
        raise RegistryError(f"version {version} cannot go from {entry['status']} to {status}")
    if status == ACTIVE:
        previous = active_version(updated)
        previous["status"] = RETIRED
        previous["history"].append({"status": RETIRED, "at": at, "reason": f"replaced by {version}"})
    entry["status"] = status
    entry["history"].append({"status": status, "at": at, "reason": reason})
    for key, value in fields.items():
        if key in ("version", "status", "history", "identity"):
            raise RegistryError(f"{key} is set by the registry, not by a caller")
        entry[key] = value
    return updated


def update_fields(document: Mapping[str, Any], version: str, **fields: Any) -> dict[str, Any]:
    """A copy with fields of ``version`` changed in place (its progress, its identity once known)."""
    updated = copy.deepcopy(dict(document))
    entry = _find(updated, version)
    for key, value in fields.items():
        if key in ("version", "status", "history"):
            raise RegistryError(f"{key} changes only through set_status")
        entry[key] = value
    return updated


def set_identity(document: Mapping[str, Any], version: str, identity: Mapping[str, Any]) -> dict[str, Any]:
    """A copy with the identity of a version still in flight (known once the service named it)."""
    updated = copy.deepcopy(dict(document))
    entry = _find(updated, version)
    if entry["status"] not in (TRAINING, EVALUATING):
        raise RegistryError(f"version {version} is {entry['status']}: its identity is fixed")
    entry["identity"] = dict(identity)
    return updated
