"""Import rules of the package layout: imports only go down the data flow.

    cli (and the top-level api) -> run, executors, results -> analyzers -> models -> core

Every module under ``src/mirflow`` is parsed (not imported) and each of its imports, lazy ones
inside functions included, is checked against :data:`ALLOWED`. Executors run whatever analyzers a
run names, through the registry, so they must not import a concrete analyzer module; the same holds
for results (export and reports read any analyzer's records, e.g. its installed version).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mirflow

SRC = Path(mirflow.__file__).parent

#: Layer -> the layers its modules may import from. Top-level modules (``mirflow``, ``api``,
#: ``__main__``) and the CLI may import anything.
ALLOWED: dict[str, set[str]] = {
    "core": {"core"},
    "models": {"core", "models"},
    "analyzers": {"core", "models", "analyzers"},
    "executors": {"core", "models", "analyzers", "run", "executors"},
    "run": {"core", "models", "analyzers", "executors", "run"},
    "results": {"core", "analyzers", "results", "run.plan"},
    "cli": None,  # anything
}
#: Modules of the analyzers package that executors and results may import: the registry and the
#: contract, never a concrete analyzer (they know no feature).
ANALYZER_CONTRACT = {"mirflow.analyzers", "mirflow.analyzers.base"}
FEATURE_BLIND = {"executors", "results"}


def module_name(path: Path, root: Path = SRC) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(tree: ast.AST, name: str, is_package: bool, known: set[str]) -> list[tuple[int, str]]:
    """``(line, module)`` for every import of a ``mirflow`` module in ``tree`` (relative ones resolved)."""
    out: list[tuple[int, str]] = []
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "mirflow"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] != "mirflow":
                continue
            for alias in node.names:  # `from pkg import module` imports the module
                sub = f"{base}.{alias.name}"
                out.append((node.lineno, sub if sub in known else base))
    return out


def layer_of(module: str) -> str | None:
    """``mirflow.run.plan`` -> ``run``; top-level modules -> ``None`` (no rule)."""
    parts = module.split(".")
    if len(parts) < 2 or parts[1] not in ALLOWED:
        return None
    return parts[1]


def violations(root: Path = SRC) -> list[str]:
    """Every wrong-way import under ``root`` (a ``mirflow`` package folder), as readable lines."""
    files = sorted(root.rglob("*.py"))
    known = {module_name(f, root) for f in files}
    problems: list[str] = []
    for path in files:
        name = module_name(path, root)
        layer = layer_of(name)
        if layer is None or ALLOWED[layer] is None:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, target in imported_modules(tree, name, path.name == "__init__.py", known):
            target_layer = layer_of(target)
            if target_layer is None:
                if target == "mirflow" and layer != "core":
                    continue  # the package itself (version string)
                problems.append(f"{path.relative_to(root.parent)}:{line}: {name} imports {target}")
                continue
            allowed = ALLOWED[layer]
            ok = target_layer in allowed or any(  # single modules of another layer ("run.plan")
                target == f"mirflow.{a}" or target.startswith(f"mirflow.{a}.")
                for a in allowed if "." in a)
            if ok and layer in FEATURE_BLIND and target_layer == "analyzers":
                ok = target in ANALYZER_CONTRACT
            if not ok:
                problems.append(f"{path.relative_to(root.parent)}:{line}: {name} ({layer}) imports "
                                f"{target} ({target_layer})")
    return problems


def test_imports_only_go_down() -> None:
    found = violations()
    assert not found, "wrong-way imports:\n" + "\n".join(found)


def _fake_package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "mirflow"
    for rel, text in {"__init__.py": "", "core/__init__.py": "", "core/audio.py": "",
                      "models/__init__.py": "", "analyzers/__init__.py": "",
                      "analyzers/base.py": "", "analyzers/spectral.py": "", "run/__init__.py": "",
                      "run/plan.py": "", "run/coordinator.py": "", "executors/__init__.py": "",
                      "results/__init__.py": "", "cli/__init__.py": "", **files}.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


@pytest.mark.parametrize("rel, source, culprit", [
    ("core/audio.py", "from ..run.coordinator import run\n", "mirflow.run.coordinator"),
    ("core/audio.py", "def f():\n    import mirflow.analyzers.spectral\n", "mirflow.analyzers.spectral"),
    ("models/reg.py", "from ..analyzers import base\n", "mirflow.analyzers.base"),
    ("analyzers/spectral.py", "from ..cli import commands\n", "mirflow.cli"),
    ("analyzers/spectral.py", "from mirflow.run.plan import decide\n", "mirflow.run.plan"),
    ("executors/local.py", "from ..analyzers import spectral\n", "mirflow.analyzers.spectral"),
    ("executors/local.py", "from ..analyzers.spectral import SpectralAnalyzer\n", "mirflow.analyzers.spectral"),
    ("results/export.py", "from ..run.coordinator import run\n", "mirflow.run.coordinator"),
    ("results/export.py", "from ..analyzers.tonal import KEY_PROFILES\n", "mirflow.analyzers.tonal"),
    ("run/plan.py", "from ..cli.progress import RunProgress\n", "mirflow.cli.progress"),
])
def test_the_checker_catches_a_wrong_way_import(tmp_path: Path, rel: str, source: str,
                                               culprit: str) -> None:
    root = _fake_package(tmp_path, {rel: source})
    found = violations(root)
    assert len(found) == 1 and culprit in found[0], found


def test_the_checker_accepts_downward_imports(tmp_path: Path) -> None:
    root = _fake_package(tmp_path, {
        "analyzers/spectral.py": "from ..core.audio import TrackContext\nfrom .base import Analyzer\n",
        "executors/local.py": "from .. import analyzers as registry\nfrom ..run.coordinator import x\n",
        "results/export.py": "from ..core import audio\nfrom ..run.plan import decide\n",
        "cli/commands.py": "from ..run.coordinator import run\nfrom ..analyzers import spectral\n",
    })
    assert violations(root) == []
