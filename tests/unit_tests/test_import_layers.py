"""The README's Architecture table, held against the code: no import runs up the layers.

Each row of the table names a layer and, in backticks outside parentheses, its modules
(paths in the package, or in the repository for ``graphs/``); text in parentheses only
describes them. Every module of the package must be in exactly one layer, and every
import of the package's own modules (at the top of a file or inside a function) must go
to the importer's layer or one below it. The wing (``demo/``, ``eval/``,
``model_builders.py``) sits beside the LangChain layer: it may use any layer, and no
layer of the engine below the LangChain layer imports it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "langchain_llava_cot"
WING = "the wing"
TOP = "LangChain"


def _layer_table() -> list[tuple[str, list[str]]]:
    """The README's Architecture rows: each layer's name and module paths, top layer first."""
    text = (ROOT / "README.md").read_text()
    table = text.split("**Architecture.**", 1)[1].split("\n\n", 2)[1]
    rows = []
    for line in table.splitlines()[2:]:
        name, modules, _ = (cell.strip() for cell in line.strip().strip("|").split("|", 2))
        rows.append((name, re.findall(r"`([^`]+)`", _outside_parentheses(modules))))
    return rows


def _outside_parentheses(text: str) -> str:
    depth, kept = 0, []
    for char in text:
        depth += char == "("
        if depth == 0:
            kept.append(char)
        depth -= char == ")" and depth > 0
    return "".join(kept)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    files = [*PACKAGE.rglob("*.py"), ROOT / "graphs" / "llava_cot.py"]
    return {_module_name(path): path for path in files}


def _layers() -> dict[str, str]:
    """Each module's layer, from the README's table."""
    layers: dict[str, str] = {}
    for name, paths in _layer_table():
        for path in paths:
            found = PACKAGE / path if (PACKAGE / path).exists() else ROOT / path
            assert found.exists(), f"The README's layer table names {path!r}, which does not exist."
            files = sorted(found.rglob("*.py")) if found.is_dir() else [found]
            for file in files:
                layers.setdefault(_module_name(file), name)
    return layers


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The package's own modules that ``path`` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(_known(alias.name, modules) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.update(_known(f"{node.module}.{alias.name}", modules) for alias in node.names)
    return {name for name in found if name is not None}


def _known(name: str, modules: set[str]) -> str | None:
    """The module ``name`` is, or is in (a name imported from it); None outside the package."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _crossings() -> tuple[set[tuple[str, str]], dict[str, str]]:
    """Every (importer, imported) pair whose import runs up the table, and each module's layer."""
    layers, modules = _layers(), _modules()
    order = [name for name, _ in _layer_table()]
    rank = {name: 0 if name == WING else order.index(name) for name in order}  # the wing: beside the top
    crossings = {
        (module, imported)
        for module, path in modules.items()
        for imported in _imports(path, set(modules))
        if rank[layers[imported]] < rank[layers[module]]
    }
    return crossings, layers


def test_every_module_is_in_one_layer_of_the_readme_table():
    missing = sorted(set(_modules()) - set(_layers()))
    assert not missing, f"Add these modules to the README's Architecture table: {missing}"
    names = [name for name, _ in _layer_table()]
    assert names[0] == TOP and WING in names


def test_no_import_runs_up_the_layers():
    crossings, _ = _crossings()
    unknown = sorted(crossings)
    assert not unknown, f"Imports that run up the README's layers (importer, imported): {unknown}"


def test_the_engine_never_imports_the_wing():
    crossings, layers = _crossings()
    into_wing = sorted((a, b) for a, b in crossings if layers[b] == WING)
    assert not into_wing, f"The engine imports the wing (demo/, eval/, model_builders.py): {into_wing}"
    engine = {module for module, layer in layers.items() if layer not in (TOP, WING)}
    assert "langchain_llava_cot.graph" in engine and "langchain_llava_cot.backends.base" in engine
