"""No import circle among LabelLoop's modules: every import statement counts (lazy, TYPE_CHECKING too).

A circle means two modules each need the other's pieces; the shared piece belongs in one of them
(or a third), and hiding the import inside a function or a TYPE_CHECKING block does not change that.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: Folder -> the dotted prefix its modules are imported under (``lambdas/`` holds top-level packages).
PACKAGE_ROOTS = {ROOT / "lambdas": "", ROOT / "infra": "infra", ROOT / "sandbox": "sandbox", ROOT / "cli": "cli"}


def _module_name(path: Path, folder: Path, prefix: str) -> str:
    parts = list(path.relative_to(folder).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([prefix, *parts] if prefix else parts)


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder, prefix in PACKAGE_ROOTS.items():
        for path in sorted(folder.rglob("*.py")):
            if "__pycache__" not in path.parts and (name := _module_name(path, folder, prefix)):
                found[name] = path
    return found


def _imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The known modules one file imports, anywhere in it, relative imports resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import sub` depends on the submodule when there is one, on the package otherwise.
            candidates = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for candidate in candidates:
            # `import a.b.c` depends on the deepest known module it names.
            parts = candidate.split(".")
            for end in range(len(parts), 0, -1):
                if (dotted := ".".join(parts[:end])) in known:
                    targets.add(dotted)
                    break
    targets.discard(name)
    return targets


def import_graph() -> dict[str, set[str]]:
    """Module -> the LabelLoop modules it imports."""
    modules = _modules()
    known = set(modules)
    return {name: _imported(name, path, known) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_cycle_finder_sees_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_graph_covers_every_package_and_resolves_imports() -> None:
    graph = import_graph()
    assert {"adapters", "handlers", "labelloop_core", "infra", "sandbox", "cli.main"} <= set(graph)
    assert "labelloop_core.contract" in graph["sandbox.groundtruth"]


def test_no_import_circles() -> None:
    graph = import_graph()
    found = cycles(graph)
    described = [
        " <-> ".join(component)
        + ": "
        + "; ".join(f"{a} -> {b}" for a in component for b in sorted(graph[a]) if b in component)
        for component in found
    ]
    assert not found, "import circles (move the shared piece to the module it belongs to):\n" + "\n".join(described)
