"""Request validation against the botocore service model, as the real API does it (moto does not).

Types and required members come from botocore's ParamValidator; lengths, ranges, patterns and enums
(which it skips) are checked here, and a failure is raised with AWS's ValidationException wording.
"""

from __future__ import annotations

import re
from typing import Any

import botocore.session
from botocore.model import OperationModel, Shape
from botocore.validate import ParamValidator
from moto.sagemaker.exceptions import ValidationError

_MODELS: dict[str, Any] = {}


def _operation(service: str, name: str) -> OperationModel:
    if service not in _MODELS:
        _MODELS[service] = botocore.session.get_session().get_service_model(service)
    return _MODELS[service].operation_model(name)


def _violation(value: Any, path: str, constraint: str) -> str:
    shown = "" if isinstance(value, list | dict) else f" '{value}'"
    return f"Value{shown} at '{path}' failed to satisfy constraint: Member must {constraint}"


def _constraint_errors(shape: Shape, value: Any, path: str) -> list[str]:
    """Length, range, pattern and enum checks botocore's ParamValidator does not do."""
    errors: list[str] = []
    if shape.type_name == "structure" and isinstance(value, dict):
        for name, member in shape.members.items():
            if name in value:
                errors += _constraint_errors(member, value[name], f"{path}.{name[0].lower()}{name[1:]}")
    elif shape.type_name == "list" and isinstance(value, list):
        for index, item in enumerate(value):
            errors += _constraint_errors(shape.member, item, f"{path}.{index + 1}.member")
        if "max" in shape.metadata and len(value) > shape.metadata["max"]:
            errors.append(_violation(value, path, f"have length less than or equal to {shape.metadata['max']}"))
    elif shape.type_name == "map" and isinstance(value, dict):
        for key, item in value.items():
            errors += _constraint_errors(shape.value, item, f"{path}.{key}")
    elif shape.type_name == "string" and isinstance(value, str):
        errors += _string_errors(shape, value, path)
    elif shape.type_name in ("integer", "long") and isinstance(value, int):
        errors += _number_errors(shape, value, path)
    return errors


def _string_errors(shape: Shape, value: str, path: str) -> list[str]:
    errors: list[str] = []
    meta = shape.metadata
    if "min" in meta and len(value) < meta["min"]:
        errors.append(_violation(value, path, f"have length greater than or equal to {meta['min']}"))
    if "max" in meta and len(value) > meta["max"]:
        errors.append(_violation(value, path, f"have length less than or equal to {meta['max']}"))
    pattern = meta.get("pattern")
    if pattern:
        try:
            compiled = re.compile(pattern)
        except re.error:
            compiled = None  # a Java-only construct: AWS checks it, we cannot
        if compiled is not None and not compiled.fullmatch(value):
            errors.append(_violation(value, path, f"satisfy regular expression pattern: {pattern}"))
    if shape.enum and value not in shape.enum:
        errors.append(_violation(value, path, f"satisfy enum value set: {shape.enum}"))
    return errors


def _number_errors(shape: Shape, value: int, path: str) -> list[str]:
    errors: list[str] = []
    meta = shape.metadata
    if "min" in meta and value < meta["min"]:
        errors.append(_violation(value, path, f"have value greater than or equal to {meta['min']}"))
    if "max" in meta and value > meta["max"]:
        errors.append(_violation(value, path, f"have value less than or equal to {meta['max']}"))
    return errors


def validate_request(operation: str, params: dict[str, Any], service: str = "sagemaker") -> None:
    """Reject a request AWS would reject, with AWS's ValidationException wording."""
    shape = _operation(service, operation).input_shape
    report = ParamValidator().validate(params, shape)
    if report.has_errors():
        raise ValidationError(report.generate_report())
    errors: list[str] = []
    for name, member in shape.members.items():
        if name in params:
            errors += _constraint_errors(member, params[name], f"{name[0].lower()}{name[1:]}")
    if errors:
        count = len(errors)
        raise ValidationError(f"{count} validation error{'s' if count > 1 else ''} detected: " + "; ".join(errors))
