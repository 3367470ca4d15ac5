"""The emulation reaches the product's adapters only through `sandbox.product_seam`, and the
callers of a running emulation type it with `sandbox.cloud_api.CloudApi`, which LocalCloud satisfies."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found


def test_only_the_product_seam_imports_adapters() -> None:
    importers = sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "sandbox").rglob("*.py")
        if any(m == "adapters" or m.startswith("adapters.") for m in _imported_modules(path))
    )
    assert importers == ["sandbox/product_seam.py"]


def test_local_cloud_has_every_attribute_the_protocol_declares() -> None:
    from sandbox.cloud_api import CloudApi
    from sandbox.harness import LocalCloud

    declared = {name for name in vars(CloudApi) if not name.startswith("_")}
    fields = set(LocalCloud.__dataclass_fields__)
    missing = sorted(name for name in declared if not hasattr(LocalCloud, name) and name not in fields)
    assert declared and missing == []


def test_no_cloud_parameter_is_untyped() -> None:
    untyped = [
        f"{path.relative_to(ROOT)}:{number}"
        for folder in ("sandbox", "bench")
        for path in (ROOT / folder).rglob("*.py")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if "cloud: Any" in line
    ]
    assert untyped == []
