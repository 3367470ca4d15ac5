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
    contract.BATCH_REPORT_FILE,
    contract.RUN_REPORT_FILE,
    contract.VERIFY_MANIFEST,
    contract.ADJUST_MANIFEST,
    contract.VERIFIED_MANIFEST,
    contract.Estimate.SECONDS,
    contract.Estimate.TOTAL_SECONDS,
    contract.Estimate.ADJUST_EVERYTHING_SECONDS,
    contract.Estimate.SAVED_SECONDS,
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


# -- the S3 layout is spelled once ---------------------------------------------------------------------
#: Product code. Tests and benchmarks are outside this rule: their fixture keys spell concrete paths, which
#: pins the layout independently of the constants.
PRODUCT = ("app.py", "lambdas", "infra", "sandbox", "cli")


def _is_layout(name: str) -> bool:
    """Contract constants naming a key prefix, folder or file of the bucket or an export."""
    return name.endswith(("_DIR", "_FILE", "_MANIFEST")) or (name.startswith("DEFAULT_") and name.endswith("_PREFIX"))


LAYOUT: tuple[str, ...] = tuple(
    sorted({v for k, v in vars(contract).items() if _is_layout(k) and isinstance(v, str)}, key=len, reverse=True)
)
# A layout name counts where it starts a path segment ("work/batches/", f"{work}batches/"), not inside
# another word ("sub-batches/"); prose (a segment with a space: IAM reasons, help texts) is exempt.
LAYOUT_SPELLED = re.compile(r"(?<![\w.-])(" + "|".join(re.escape(n) for n in LAYOUT) + ")")


def _prose(tree: ast.AST) -> set[int]:
    """Ids of the literals that are prose: docstrings, and strings or f-strings with a space in their text
    (messages, help texts, IAM reasons); keys and prefixes have none."""
    prose = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts = [p for p in node.values if isinstance(p, ast.Constant) and isinstance(p.value, str)]
            if any(" " in p.value for p in parts):
                prose |= {id(p) for p in parts}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and " " in node.value:
            prose.add(id(node))
    return prose


def layout_spelled(path: Path, root: Path = ROOT) -> Iterator[str]:
    """``file:line name`` for each code literal in ``path`` that spells a bucket or export layout name."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    prose = _prose(tree)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Constant) or not isinstance(node.value, str) or id(node) in prose:
            continue
        line, text = node.lineno, node.value
        for match in LAYOUT_SPELLED.finditer(text):
            yield f"{path.relative_to(root)}:{line} {match.group(1)}"


def test_the_bucket_layout_is_spelled_only_in_contract_py() -> None:
    """Every S3 prefix the product writes or grants (handlers, IAM policies, the emulation, the CLI) comes
    from one constant, so a renamed folder cannot leave a grant or a reader behind."""
    files = [ROOT / "app.py"] + [p for top in PRODUCT[1:] for p in sorted((ROOT / top).rglob("*.py"))]
    found = [hit for path in files if path != CONTRACT for hit in layout_spelled(path)]
    assert LAYOUT and not found, "build these keys from labelloop_core.contract instead:\n" + "\n".join(found)


def test_the_layout_check_sees_a_respelled_prefix(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    folder = contract.LABELSTUDIO_OPEN_DIR
    sample.write_text(
        f'"""{folder} in a docstring is prose."""\n'
        f'GRANT = f"{{arn}}/{{work}}{folder}*"\n'
        f'KEY = "work/{folder}job.json"\n'
        f'REASON = "One marker per review under work/{folder}."\n'
        f'ERROR = f"{{work}}{folder} is not readable: {{error}}"\n'
    )
    assert sorted(layout_spelled(sample, tmp_path)) == [
        f"sample.py:2 {folder}",
        f"sample.py:3 {folder}",
        f"sample.py:3 {contract.DEFAULT_WORK_PREFIX}",
    ]


# -- every contract name has a caller ------------------------------------------------------------------
def _public_names(tree: ast.Module) -> dict[str, ast.AST]:
    """Top-level constants, functions and classes of contract.py, and the attributes of its key-holder
    classes (``Meta``, ``Env``: no bases, no decorators; a TypedDict's fields are document keys)."""
    names: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = node
        elif isinstance(node, ast.Assign):
            names.update({t.id: node for t in node.targets if isinstance(t, ast.Name)})
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            names[node.name] = node
            if isinstance(node, ast.ClassDef) and not node.bases and not node.decorator_list:
                for item in node.body:
                    targets = [item.target] if isinstance(item, ast.AnnAssign) else getattr(item, "targets", [])
                    names.update({f"{node.name}.{t.id}": item for t in targets if isinstance(t, ast.Name)})
    return {n: v for n, v in names.items() if not n.split(".")[-1].startswith("_")}


def _words(text: str) -> set[str]:
    """Every identifier in ``text`` and every ``a.b`` pair of identifiers (so one set lookup finds a name)."""
    return set(re.findall(r"\w+", text)) | {f"{a}.{b}" for a, b in re.findall(r"\b(?=(\w+)\.(\w+)\b)", text)}


def unused_contract_names(contract_path: Path, code: dict[Path, str]) -> list[str]:
    """Names defined in ``contract_path`` that nothing uses: neither the code outside it, nor (transitively)
    another contract name that is used, such as a folder constant behind a key helper."""
    source = contract_path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    names = _public_names(tree)
    outside = _words("\n".join(text for path, text in code.items() if path != contract_path))
    used = {n for n in names if n in outside}
    frontier = set(used)
    while frontier:
        inner = _words("\n".join(ast.get_source_segment(source, names[n]) or "" for n in frontier))
        frontier = {n for n in names if n not in used and n in inner}
        used |= frontier
    return sorted(set(names) - used)


def _code() -> dict[Path, str]:
    files = [ROOT / "app.py"] + [p for top in CODE[1:] for p in sorted((ROOT / top).rglob("*.py"))]
    return {path: path.read_text(encoding="utf-8") for path in files}


def test_every_contract_name_has_a_caller() -> None:
    code = {p: t for p, t in _code().items() if p.parent.name != "unit" or not p.name.startswith("test_contract")}
    assert unused_contract_names(CONTRACT, code) == []


def test_the_caller_check_sees_an_unused_name(tmp_path: Path) -> None:
    module = tmp_path / "contract.py"
    module.write_text(
        'A_DIR = "a/"\nB_DIR = "b/"\nC_DIR = "c/"\n\n\ndef a_key(root):\n    return root + A_DIR\n\n\n'
        'class Keys:\n    USED = "u"\n    GONE: str = "g"\n'
    )
    user = tmp_path / "user.py"
    user.write_text("from contract import a_key, Keys, C_DIR\nprint(a_key('x'), Keys.USED, C_DIR)\n")
    assert unused_contract_names(module, {module: "", user: user.read_text()}) == ["B_DIR", "Keys.GONE"]


# -- the docs state the accounting rules the code checks ------------------------------------------------
#: The batch report's rule (``MergedBatch.accounted_for``) and the run report's two invariants
#: (``sandbox.localrun.accounting``), as every doc must write them.
BATCH_RULE = "counts.received == counts.rejected + counts.accepted + counts.reviewed + counts.unlabeled"
RUN_RULES = (
    "images_received == rejected + auto_accepted + human_reviewed",
    "exported_images == auto_accepted + human_reviewed",
)
DOCS = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))


def _terms(rule: str) -> tuple[str, list[str]]:
    left, right = rule.split(" == ")
    return left.removeprefix("counts."), [t.strip().removeprefix("counts.") for t in right.split("+")]


def test_the_batch_rule_is_the_one_merge_checks() -> None:
    from labelloop_core.batch_report import MergedBatch

    total, terms = _terms(BATCH_RULE)

    def accounted(**counts: int) -> bool:
        full = {"received": 0, "rejected": 0, "accepted": 0, "reviewed": 0, "unlabeled": 0, **counts}
        return MergedBatch(full, {}, [], [], []).accounted_for  # type: ignore[arg-type]

    assert all(accounted(**{total: 1, term: 1}) for term in terms)
    assert not accounted(**{total: 1}) and not accounted(**{total: 1, terms[0]: 1, terms[1]: 1})
    assert not accounted(**{total: 1, "audited": 1})  # audits are inside reviewed, never a term of their own


def test_the_run_rules_are_the_ones_local_run_checks() -> None:
    from sandbox.localrun.accounting import _Ledger

    def invariants(received: int, rejected: int, accepted: int, reviewed: int, exported: int) -> list[bool]:
        ledger = _Ledger(contract.DEFAULT_INCOMING_PREFIX, "")
        ledger.received, ledger.accepted, ledger.reviewed = received, accepted, reviewed
        ledger.rejected = [{"image": f"r{i}", "reason": "x"} for i in range(rejected)]
        return list(ledger.check(exported, True).values())

    assert [_terms(rule) for rule in RUN_RULES] == [
        ("images_received", ["rejected", "auto_accepted", "human_reviewed"]),
        ("exported_images", ["auto_accepted", "human_reviewed"]),
    ]
    assert invariants(received=6, rejected=1, accepted=2, reviewed=3, exported=5) == [True, True]
    assert invariants(received=6, rejected=0, accepted=2, reviewed=3, exported=5) == [False, True]
    assert invariants(received=6, rejected=1, accepted=2, reviewed=3, exported=6) == [True, False]


def test_every_doc_states_the_accounting_rules_as_the_code_checks_them() -> None:
    """An accounting equation in README.md or docs/ is one of the rules above, word for word."""
    written = {
        " ".join(span.split())
        for path in DOCS
        for span in re.findall(r"`([^`]*==[^`]*)`", path.read_text(encoding="utf-8"))
        if re.search(r"\b(received|exported\w*)\b", span)
    }
    assert written and sorted(written - {BATCH_RULE, *RUN_RULES}) == []
    contracts = " ".join((ROOT / "docs" / "contracts.md").read_text(encoding="utf-8").split())
    assert all(f"`{rule}`" in contracts for rule in (BATCH_RULE, *RUN_RULES))
