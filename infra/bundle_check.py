"""Check a synthesized Lambda asset against the runtime that will run it, before any `cdk deploy`.

The asset is built on this machine with ``pip --platform`` for another interpreter and CPU, so
nothing local ever loads its compiled wheels. This module reads what is actually in the asset and
answers: do its wheels fit the function's runtime and architecture (interpreter/ABI tags, glibc no
newer than the runtime's Amazon Linux, ELF machine of every shared object); does every module the
handlers import at cold start resolve from the zip, the standard library or the runtime's
boto3/botocore; does it stay under Lambda's unzipped size limit; are its versions the pinned ones.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Lambda's limit on a function's deployment package, unzipped (250 MB = 262,144,000 bytes).
UNZIPPED_LIMIT_BYTES = 250 * 1024 * 1024
# Packages every AWS Lambda Python runtime ships next to the interpreter (boto3 and what it needs).
RUNTIME_PROVIDED = frozenset({"boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six", "urllib3"})
# Standard-library modules removed by a later CPython (PEP 594 and friends): present on this
# machine's interpreter, missing on the runtime's.
_REMOVED_FROM_STDLIB: dict[str, tuple[int, int]] = {
    **dict.fromkeys(("distutils", "imp", "asynchat", "asyncore", "smtpd"), (3, 12)),
    **dict.fromkeys(
        (
            "aifc", "audioop", "cgi", "cgitb", "chunk", "crypt", "imghdr", "mailcap", "msilib", "nis",
            "nntplib", "ossaudiodev", "pipes", "sndhdr", "spwd", "sunau", "telnetlib", "uu", "xdrlib",
            "lib2to3",
        ),
        (3, 13),
    ),
}  # fmt: skip


@dataclass(frozen=True)
class RuntimeTarget:
    """What a function's runtime and architecture accept: CPython version, CPU, glibc."""

    runtime: str
    python: tuple[int, int]
    machine: str  # as in wheel platform tags and extension-module suffixes
    elf_machine: int  # e_machine in an ELF header
    glibc: tuple[int, int]

    def describe(self) -> str:
        py = f"cp{self.python[0]}{self.python[1]}"
        return f"{self.runtime} on {self.machine} ({py} or abi3 or py3 wheels, manylinux glibc <= {_ver(self.glibc)})"


# Lambda Python runtimes on Amazon Linux 2023 (glibc 2.34); older runtimes are not targets here.
_RUNTIME_GLIBC: dict[str, tuple[int, int]] = {"python3.12": (2, 34), "python3.13": (2, 34), "python3.14": (2, 34)}
_ARCHITECTURES: dict[str, tuple[str, int]] = {"arm64": ("aarch64", 183), "x86_64": ("x86_64", 62)}


class BundleError(ValueError):
    """The asset cannot be checked (unknown runtime, no asset folder); the message says why."""


def target_for(runtime: str, architecture: str) -> RuntimeTarget:
    """The target of a function declared with ``Runtime``/``Architectures`` as in the template."""
    if runtime not in _RUNTIME_GLIBC:
        raise BundleError(f"unknown Lambda runtime {runtime!r}: add its glibc to infra/bundle_check.py")
    if architecture not in _ARCHITECTURES:
        raise BundleError(f"unknown Lambda architecture {architecture!r} (expected arm64 or x86_64)")
    major, minor = runtime.removeprefix("python").split(".")
    machine, elf = _ARCHITECTURES[architecture]
    return RuntimeTarget(runtime, (int(major), int(minor)), machine, elf, _RUNTIME_GLIBC[runtime])


@dataclass(frozen=True)
class Distribution:
    """One installed distribution in the asset, read from its ``*.dist-info``."""

    name: str
    version: str
    tags: tuple[str, ...]
    top_levels: frozenset[str]
    dist_info: str

    @property
    def pure(self) -> bool:
        """Pure Python: every wheel tag is ``*-none-any`` (loads on any CPU and CPython 3)."""
        return bool(self.tags) and all(t.endswith("-none-any") for t in self.tags)


def normalize(name: str) -> str:
    """PEP 503 name normalisation (``Pillow`` == ``pillow``, ``aws_lambda_powertools`` == ``aws-lambda-powertools``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_distributions(asset_dir: Path) -> list[Distribution]:
    """Every ``*.dist-info`` at the top of the asset, with its wheel tags and top-level names."""
    dists = []
    for info in sorted(asset_dir.glob("*.dist-info")):
        meta = _headers((info / "METADATA").read_text(encoding="utf-8", errors="replace"))
        wheel = (info / "WHEEL").read_text(encoding="utf-8") if (info / "WHEEL").exists() else ""
        tags = tuple(_expand_tag(v) for v in _headers(wheel, multi=True).get("Tag", []))
        dists.append(
            Distribution(
                name=meta.get("Name", [info.name.split("-")[0]])[0],
                version=meta.get("Version", ["?"])[0],
                tags=tuple(t for group in tags for t in group),
                top_levels=frozenset(_top_levels(info)),
                dist_info=info.name,
            )
        )
    return dists


def _headers(text: str, multi: bool = False) -> dict[str, list[str]]:
    """RFC 822-style ``Key: value`` headers (METADATA, WHEEL) up to the first blank line."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if not line.strip():
            break
        key, sep, value = line.partition(":")
        if sep and not line.startswith((" ", "\t")):
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def _expand_tag(tag: str) -> list[str]:
    """Compressed tag sets (``py2.py3-none-any``) as single tags."""
    interp, abi, plat = tag.split("-")
    return [f"{i}-{a}-{p}" for i in interp.split(".") for a in abi.split(".") for p in plat.split(".")]


def _top_levels(info: Path) -> set[str]:
    """Top-level importable names a distribution installed (``top_level.txt``, else its RECORD)."""
    top_level = info / "top_level.txt"
    if top_level.exists():
        return {t.strip() for t in top_level.read_text().splitlines() if t.strip()}
    names: set[str] = set()
    record = info / "RECORD"
    for line in record.read_text().splitlines() if record.exists() else []:
        first = line.split(",", 1)[0].split("/", 1)[0]
        if first and not first.endswith((".dist-info", ".data")) and not first.startswith(".."):
            names.add(first.removesuffix(".py"))
    return {n for n in names if not n.endswith(".libs") and n != "bin"}


def tag_problem(tag: str, target: RuntimeTarget) -> str | None:
    """Why one wheel tag does not run on ``target`` (None when it does)."""
    interp, abi, plat = tag.split("-")
    major, minor = target.python
    cp = f"cp{major}{minor}"
    if abi == "none":
        ok_interp = interp in {f"py{major}", f"py{major}{minor}", cp}
    elif abi == "abi3":
        found = re.fullmatch(r"cp(\d)(\d+)", interp)
        ok_interp = bool(found) and (int(found[1]), int(found[2])) <= target.python if found else False
    else:
        ok_interp = interp == cp and abi == cp
    if not ok_interp:
        return f"interpreter/ABI {interp}-{abi} does not load on CPython {major}.{minor}"
    if plat == "any":
        return None
    legacy = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
    found = re.fullmatch(r"(manylinux1|manylinux2010|manylinux2014|manylinux_(\d+)_(\d+))_(\w+)", plat)
    if not found:
        return f"platform {plat} is not a manylinux platform for {target.machine}"
    glibc = legacy[found[1]] if found[1] in legacy else (int(found[2]), int(found[3]))
    if found[4] != target.machine:
        return f"platform {plat} is built for {found[4]}, the function runs on {target.machine}"
    if glibc > target.glibc:
        return f"platform {plat} needs glibc {_ver(glibc)}, {target.runtime} has {_ver(target.glibc)}"
    return None


def _ver(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def wheel_problems(dists: Iterable[Distribution], target: RuntimeTarget) -> list[str]:
    """Distributions none of whose wheel tags fits the target."""
    problems = []
    for dist in dists:
        if not dist.tags:
            problems.append(
                f"{dist.name} {dist.version}: {dist.dist_info}/WHEEL has no Tag (not installed from a wheel)"
            )
            continue
        reasons = [tag_problem(tag, target) for tag in dist.tags]
        if all(reasons):
            detail = "; ".join(f"{tag}: {why}" for tag, why in zip(dist.tags, reasons, strict=True))
            problems.append(f"{dist.name} {dist.version}: no wheel tag fits {target.describe()} ({detail})")
    return problems


_EXT_SUFFIX = re.compile(r"\.cpython-(\d)(\d+)-(\w+?)-linux-gnu\.so$")


def binary_problems(asset_dir: Path, target: RuntimeTarget) -> list[str]:
    """Shared objects built for another CPU, and extension modules built for another CPython."""
    problems = []
    for path in sorted(asset_dir.rglob("*.so*")):
        if not path.is_file() or not re.search(r"\.so(\.\d+)*$", path.name):
            continue
        rel = path.relative_to(asset_dir)
        head = path.read_bytes()[:20]
        if head[:4] != b"\x7fELF":
            problems.append(f"{rel}: not an ELF shared object")
            continue
        machine = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
        if machine != target.elf_machine:
            problems.append(f"{rel}: ELF machine {machine}, {target.machine} is {target.elf_machine}")
        found = _EXT_SUFFIX.search(path.name)
        if found and ((int(found[1]), int(found[2])) != target.python or found[3] != target.machine):
            problems.append(f"{rel}: extension module for CPython {found[1]}.{found[2]} on {found[3]}")
    return problems


def read_pins(requirements: Path) -> dict[str, str]:
    """``name==version`` lines of a requirements file, by normalised name; anything else is refused."""
    pins: dict[str, str] = {}
    for raw in requirements.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        found = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*==\s*([^\s;]+)", line)
        if not found:
            raise BundleError(f"{requirements}: {line!r} is not pinned as name==version")
        pins[normalize(found[1])] = found[2]
    return pins


def version_problems(dists: Iterable[Distribution], pins: Mapping[str, str]) -> list[str]:
    """Pinned requirements missing from the asset or present at another version."""
    found = {normalize(d.name): d.version for d in dists}
    problems = []
    for name, version in sorted(pins.items()):
        if name not in found:
            problems.append(f"{name}=={version} is pinned but not in the bundle")
        elif found[name] != version:
            problems.append(f"{name}: the bundle has {found[name]}, lambdas/requirements.txt pins {version}")
    return problems


def unzipped_size(asset_dir: Path) -> int:
    """Bytes of every file in the asset: what Lambda counts against the 250 MB limit."""
    return sum(p.stat().st_size for p in asset_dir.rglob("*") if p.is_file() and not p.is_symlink())


# Runs in a fresh interpreter without site-packages: the asset first on sys.path, the standard
# library, and — through a finder — only the runtime's boto3 family and the asset's compiled
# packages taken from this machine (the asset's own builds are for another CPU).
_IMPORT_PROBE = r"""
import importlib, importlib.machinery, json, sys
args = json.loads(sys.argv[1])
host = set(args["host_names"])
class HostFinder:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if "." in name or name not in host:
            return None
        return importlib.machinery.PathFinder.find_spec(name, args["host_paths"])
sys.meta_path.insert(0, HostFinder)
sys.path.insert(0, args["asset"])
baseline = set(sys.modules)
result = {"errors": {}, "modules": {}}
for handler in args["handlers"]:
    module_name, _, attr = handler.rpartition(".")
    try:
        module = importlib.import_module(module_name)
        if not callable(getattr(module, attr, None)):
            result["errors"][handler] = f"{module_name} has no callable {attr}"
    except BaseException as exc:
        result["errors"][handler] = f"{type(exc).__name__}: {exc}"
for name, module in sys.modules.copy().items():
    if name in baseline or "." in name:
        continue
    spec = getattr(module, "__spec__", None)
    origin = getattr(spec, "origin", None) or getattr(module, "__file__", None) or ""
    locations = list(getattr(spec, "submodule_search_locations", None) or [])
    result["modules"][name] = origin if origin not in ("", "namespace") else (locations[0] if locations else origin)
print(json.dumps(result))
"""


def import_problems(
    asset_dir: Path, handlers: Iterable[str], dists: Iterable[Distribution], target: RuntimeTarget
) -> tuple[list[str], dict[str, str]]:
    """Import every handler as a cold start would; return problems and {top-level module: source}."""
    dists = list(dists)
    compiled = {name for d in dists if not d.pure for name in d.top_levels}
    in_zip = {p.name.removesuffix(".py") for p in asset_dir.iterdir()} - {"bin"}
    host_names = compiled | (RUNTIME_PROVIDED - in_zip)
    host_paths = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    args = {"asset": str(asset_dir), "handlers": sorted(set(handlers)), "host_names": sorted(host_names)}
    args["host_paths"] = list(dict.fromkeys(host_paths))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update({"POWERTOOLS_TRACE_DISABLED": "true", "AWS_DEFAULT_REGION": env.get("AWS_DEFAULT_REGION", "us-east-1")})
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _IMPORT_PROBE, json.dumps(args)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd=asset_dir,
        timeout=120,
    )
    if proc.returncode != 0:
        raise BundleError(f"the cold-start import probe crashed:\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    problems = [
        f"{handler}: cannot be imported at cold start ({error}); every module must be in the bundle, "
        f"the standard library or the runtime's boto3/botocore"
        for handler, error in sorted(result["errors"].items())
    ]
    sources: dict[str, str] = {}
    asset_prefix = str(asset_dir.resolve()) + os.sep
    for name, origin in sorted(result["modules"].items()):
        if str(Path(origin).resolve()).startswith(asset_prefix) if origin else False:
            sources[name] = "zip (compiled: host build)" if name in compiled else "zip"
        elif name in RUNTIME_PROVIDED:
            sources[name] = "runtime"
        elif name in compiled:
            sources[name] = "zip (compiled: host build)"
        elif name.split(".")[0] not in sys.stdlib_module_names:
            sources[name] = "host"
            problems.append(f"{name} was imported at cold start from this machine, not from the bundle ({origin})")
        else:
            sources[name] = "stdlib"
            removed = _REMOVED_FROM_STDLIB.get(name)
            if removed and target.python >= removed:
                problems.append(
                    f"{name} is imported at cold start but left the standard library in Python {_ver(removed)}"
                )
    return problems, sources


@dataclass
class BundleReport:
    """The outcome of checking one asset: problems (empty when it fits) and what was measured."""

    asset_dir: Path
    target: RuntimeTarget
    handlers: list[str]
    distributions: list[Distribution]
    unzipped_bytes: int
    module_sources: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One paragraph for a person: target, size, distributions, handler imports."""
        dists = ", ".join(f"{d.name} {d.version}{'' if d.pure else ' (compiled)'}" for d in self.distributions)
        third_party = sorted(n for n, s in self.module_sources.items() if s != "stdlib")
        return (
            f"Lambda bundle for {self.target.describe()}: {self.unzipped_bytes / 2**20:.1f} MB unzipped "
            f"(Lambda's limit {UNZIPPED_LIMIT_BYTES / 2**20:.0f} MB); {len(self.handlers)} handlers; "
            f"distributions: {dists}; "
            f"non-stdlib modules imported at cold start: {', '.join(third_party)}; "
            f"{len(self.problems)} problem(s)"
        )


def check_bundle(
    asset_dir: Path, *, runtime: str, architecture: str, handlers: Iterable[str], requirements: Path
) -> BundleReport:
    """Run every check on one unzipped asset folder for functions of one runtime/architecture."""
    if not asset_dir.is_dir():
        raise BundleError(f"asset folder {asset_dir} does not exist")
    target = target_for(runtime, architecture)
    dists = read_distributions(asset_dir)
    handlers = sorted(set(handlers))
    report = BundleReport(asset_dir, target, handlers, dists, unzipped_size(asset_dir))
    report.problems += wheel_problems(dists, target)
    report.problems += binary_problems(asset_dir, target)
    report.problems += version_problems(dists, read_pins(requirements))
    if report.unzipped_bytes >= UNZIPPED_LIMIT_BYTES:
        report.problems.append(
            f"unzipped size {report.unzipped_bytes:,} bytes exceeds Lambda's {UNZIPPED_LIMIT_BYTES:,} bytes"
        )
    problems, report.module_sources = import_problems(asset_dir, handlers, dists, target)
    report.problems += problems
    return report


def check_assembly(assembly_dir: Path, stack_name: str, requirements: Path) -> list[BundleReport]:
    """Check every zip asset of a synthesized stack against the functions that run it."""
    template = json.loads((assembly_dir / f"{stack_name}.template.json").read_text())
    assets = json.loads((assembly_dir / f"{stack_name}.assets.json").read_text()).get("files", {})
    by_key = {
        dest["objectKey"]: assembly_dir / asset["source"]["path"]
        for asset in assets.values()
        if asset["source"].get("packaging") == "zip"
        for dest in asset["destinations"].values()
    }
    groups: dict[tuple[Path, str, str], list[str]] = {}
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] != "AWS::Lambda::Function":
            continue
        props = resource["Properties"]
        key = props.get("Code", {}).get("S3Key")
        if key not in by_key:
            continue
        if "Runtime" not in props:
            raise BundleError(f"{logical_id} has no Runtime")
        arch = (props.get("Architectures") or ["x86_64"])[0]
        groups.setdefault((by_key[key], props["Runtime"], arch), []).append(props["Handler"])
    if not groups:
        raise BundleError(f"{stack_name} has no Lambda function built from a zip asset")
    return [
        check_bundle(asset, runtime=runtime, architecture=arch, handlers=handlers, requirements=requirements)
        for (asset, runtime, arch), handlers in sorted(groups.items())
    ]
