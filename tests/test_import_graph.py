"""The packages' imports only go downward: no circles, tdmpc2_data never imports
tdmpc2_model, no tdmpc2_model layer imports a higher one, and no submodule imports its
package root (issue #22). Read from the source with ``ast``, every ``import`` counted:
module level, inside functions, and under ``TYPE_CHECKING``."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("tdmpc2_data", "tdmpc2_model")
#: tdmpc2_model's layers, bottom to top: a module may import its own layer or lower ones
LAYERS = ("core", "outputs", "formats", "hub", "agent", "evaluation", "training", "apps")


def module_files(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Dotted module name -> file, for every .py of ``packages`` under ``root``."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported_names(module: str, path: Path) -> set[str]:
    """Every dotted name ``module`` imports (``from a import b``: ``a.b``, which resolves to
    ``a`` when ``b`` is not a submodule)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph(root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    """Module -> the modules of ``packages`` it imports (a name resolves to the longest
    module it starts with)."""
    files = module_files(root, packages)
    graph = {}
    for module, path in files.items():
        edges = set()
        for name in imported_names(module, path):
            parts = name.split(".")
            for end in range(len(parts), 0, -1):
                target = ".".join(parts[:end])
                if target in files:
                    if target != module:
                        edges.add(target)
                    break
        graph[module] = edges
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def layer_of(module: str, top: str, layers: tuple[str, ...]) -> int | None:
    parts = module.split(".")
    if parts[0] != top or len(parts) < 2 or parts[1] not in layers:
        return None
    return layers.index(parts[1])


def violations(graph: dict[str, set[str]], top: str, layers: tuple[str, ...]) -> list[str]:
    """Upward imports between ``top``'s layers, and submodules importing the package root
    ``top`` (its ``__init__`` may import them back)."""
    found = []
    for module, edges in sorted(graph.items()):
        for target in sorted(edges):
            here, there = layer_of(module, top, layers), layer_of(target, top, layers)
            if here is not None and there is not None and there > here:
                found.append(f"{module} imports the higher layer {target}")
            if target == top and module.startswith(top + "."):
                found.append(f"{module} imports its package root {target}")
    return found


def test_no_circles():
    assert circles(import_graph(ROOT, PACKAGES)) == []


def test_data_never_imports_model():
    graph = import_graph(ROOT, PACKAGES)
    wrong = [f"{m} -> {t}" for m, e in graph.items() if m.startswith("tdmpc2_data")
             for t in e if t.startswith("tdmpc2_model")]  # fmt: skip
    assert wrong == []


def test_imports_go_downward():
    graph = import_graph(ROOT, PACKAGES)
    found = [v for top in PACKAGES for v in violations(graph, top, LAYERS)]
    assert found == []


def test_every_layer_exists():
    model = ROOT / "tdmpc2_model"
    assert [
        n for n in LAYERS if not (model / n).is_dir() and not (model / f"{n}.py").is_file()
    ] == []


def test_checker_finds_planted_faults(tmp_path):
    files = {
        "pkg/__init__.py": "",
        "pkg/core/__init__.py": "",
        "pkg/core/a.py": "from pkg.core import b\n",
        "pkg/core/b.py": "def f():\n    from . import a\n",
        "pkg/core/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..agent import X\n",
        "pkg/core/d.py": "import pkg\n",
        "pkg/agent.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = import_graph(tmp_path, ("pkg",))
    assert circles(graph) == [["pkg.core.a", "pkg.core.b"]]
    assert violations(graph, "pkg", ("core", "agent")) == [
        "pkg.core.c imports the higher layer pkg.agent",
        "pkg.core.d imports its package root pkg",
    ]
