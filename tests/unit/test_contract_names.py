"""The manifest attribute names and batch-layout file names are spelled once, in
`labelloop_core.contract`: product code and tests import them (docs and fixture JSON excepted)."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from labelloop_core import contract

ROOT = Path(__file__).resolve().parents[2]
#: Where code lives (the docs are outside this rule).
CODE = ("app.py", "lambdas", "infra", "sandbox", "cli", "tests", "bench")
CONTRACT = ROOT / "lambdas" / "labelloop_core" / "contract.py"

#: The names that must be spelled only in contract.py (taken from it, so this file spells none).
NAMES: tuple[str, ...] = (
    contract.PRELABEL_ATTRIBUTE,
    contract.AUTO_ATTRIBUTE,
    contract.VERIFIED_ATTRIBUTE,
    contract.META_KEY,
    contract.TASK_KEY,
    contract.STATUS_KEY,
    contract.ISSUES_KEY,
    contract.SOURCE_ETAG_METADATA,
    contract.ORIENTATION_METADATA,
    contract.OBJECTS_FILE,
    contract.BATCH_FILE,
    contract.BUILD_FILE,
    contract.BUILD_PARTS_DIR,
    contract.INPUT_MANIFEST,
    contract.REJECTED_FILE,
    contract.ACCEPTED_MANIFEST,
    contract.REVIEW_MANIFEST,
    contract.ROUTE_FILE,
    contract.REVIEW_FILE,
    contract.OUTPUT_MANIFEST,
    contract.REPORT_FILE,
    contract.VERIFY_MANIFEST,
    contract.ADJUST_MANIFEST,
    contract.VERIFIED_MANIFEST,
)
# A name counts where it starts a word: "validation-report.json" is another file, not the batch report.
SPELLED = re.compile(r"(?<![\w-])(" + "|".join(re.escape(n) for n in sorted(NAMES, key=len, reverse=True)) + ")")


def _docstrings(tree: ast.AST) -> set[int]:
    """Ids of the string statements (module, class and function docstrings, attribute notes): prose."""
    return {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
    }


def spelled(path: Path, root: Path = ROOT) -> Iterator[str]:
    """``file:line name`` for each string or bytes literal in ``path`` that spells a contract name."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    prose = _docstrings(tree)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Constant) or id(node) in prose:
            continue
        value = node.value
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        if isinstance(text, str):
            for match in SPELLED.finditer(text):
                yield f"{path.relative_to(root)}:{node.lineno} {match.group(1)}"


def test_contract_names_are_spelled_only_in_contract_py() -> None:
    files = [ROOT / "app.py"] + [p for top in CODE[1:] for p in sorted((ROOT / top).rglob("*.py"))]
    found = [hit for path in files if path != CONTRACT for hit in spelled(path)]
    assert files and not found, "import these from labelloop_core.contract instead:\n" + "\n".join(found)


def test_the_check_sees_a_spelled_name(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    name = contract.OUTPUT_MANIFEST
    sample.write_text(f'"""{name} in prose is fine."""\nKEY = "batch/{name}"\nOTHER = "x-{name}"\n')
    assert list(spelled(sample, tmp_path)) == [f"sample.py:2 {name}"]


def test_every_name_is_documented() -> None:
    """The names are written into manifests and S3 keys: renaming one is a data migration, and
    docs/contracts.md is where users read them."""
    documented = set(re.findall(r"`([^`]+)`", (ROOT / "docs" / "contracts.md").read_text(encoding="utf-8")))
    assert [name for name in NAMES if name not in documented] == []
