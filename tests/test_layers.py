"""Imports point one way: down the layers of docs/architecture.md, with no circle.

The graph is read from the source by AST, imports at module level and inside functions
alike, so an import placed in a function to get past a cycle at import time is still an
edge here. A module imports its own layer or the ones below it, never one above; and the
graph has no cycle at all (two modules of one layer that import each other are a circle
too)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "gankit"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"

# Bottom to top; the one place the layers are declared (docs/architecture.md shows this table,
# and test_the_docs_show_the_layers_declared_here holds the two together).
LAYERS: dict[str, tuple[str, ...]] = {
    "base": ("errors", "checks", "files", "runlock", "seeds", "paths", "version"),
    "plain parts": ("config", "checkpoint", "data", "data.idx", "data.idx_files", "data.folder_cache", "models",
                    "models.dcgan", "models.resnet", "models.spectral", "models.vae", "models.unet", "training",
                    "training.losses", "training.augment", "training.task", "training.signals", "metrics",
                    "metrics.quality", "metrics.evaluator", "metrics.reference", "metrics.request", "distributed",
                    "sampling"),
    "entries": ("data.mnist", "data.mnist_download", "data.stacked", "data.folder", "training.gan",
                "training.vae", "training.flow", "metrics.inception"),
    "tables": ("registry",),
    "services": ("resolve", "runs", "metrics.judge_evaluator", "metrics.judge_inception", "metrics.judge", "board",
                 "report", "export", "serve", "training.nll"),
    "training": ("training.runner", "training.loop"),
    "front": ("api", "cli", "__init__", "__main__"),
}
LEVEL = {module: level for level, modules in enumerate(LAYERS.values()) for module in modules}


def module_name(path: Path) -> str:
    """src/gankit/data/__init__.py -> "data"; src/gankit/__init__.py -> "__init__"."""
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def known(dotted: str) -> str | None:
    """The gankit module that `gankit.a.b` names (the package itself: "__init__"), else None."""
    if dotted == "gankit":
        return "__init__"
    if not dotted.startswith("gankit."):
        return None
    name = dotted[len("gankit."):]
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or "__init__"


def imports_of(name: str, path: Path) -> dict[str, int]:
    """{imported gankit module: line} of one module, every import statement in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # a relative import, from the module's package
                up = package.split(".")[:len(package.split(".")) - node.level + 1] if package else []
                base = ".".join(["gankit", *[p for p in up if p], *([node.module] if node.module else [])])
            # `from gankit import sampling` imports the module gankit.sampling, not the package's API.
            targets = [submodule if submodule.removeprefix("gankit.") in MODULES else base
                       for submodule in (f"{base}.{a.name}" for a in node.names)]
        for target in targets:
            module = known(target)
            if module is not None and module != name:
                found.setdefault(module, node.lineno)
    return found


GRAPH = {name: imports_of(name, path) for name, path in MODULES.items()}


def upward_imports(graph: dict[str, dict[str, int]]) -> list[str]:
    return [f"{a} ({list(LAYERS)[LEVEL[a]]}) imports {b} ({list(LAYERS)[LEVEL[b]]}) at line {line}"
            for a, targets in graph.items() for b, line in targets.items() if LEVEL[b] > LEVEL[a]]


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_layer():
    assert sorted(set(MODULES) - set(LEVEL)) == []
    assert sorted(set(LEVEL) - set(MODULES)) == []  # no layer names a module that is gone


def test_no_import_points_up_a_layer():
    assert upward_imports(GRAPH) == []


def test_the_imports_have_no_cycle():
    assert cycles(GRAPH) == []


def test_the_checks_can_see_a_cycle_and_an_upward_import():
    # The two checks above would pass on a reader that finds no import; these would not.
    assert GRAPH["registry"].keys() >= {"training.gan", "data.folder", "config"}
    assert GRAPH["cli"].keys() >= {"training.loop", "version"}  # a function-level import counts too
    made_up = {"config": {"registry": 1}, "registry": {"config": 2}}
    assert cycles(made_up) == [["config", "registry"]]
    assert upward_imports(made_up) == ["config (plain parts) imports registry (tables) at line 1"]


def test_functions_import_nothing_of_gankit():
    """An import inside a function hides an edge from a reader of the module's top; the
    package's own modules are imported at the top (third-party imports kept lazy for
    start-up time, such as matplotlib and onnx, may stay inside)."""
    hidden = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith("gankit") or \
                            isinstance(inner, ast.Import) and any(a.name.startswith("gankit") for a in inner.names):
                        hidden.append(f"{name}:{inner.lineno}")
    assert hidden == []


def test_the_docs_show_the_layers_declared_here():
    text = DOCS.read_text()
    for layer, modules in LAYERS.items():
        row = re.search(rf"^\| {re.escape(layer)} \|(.*)\|$", text, flags=re.M)
        assert row, f"docs/architecture.md has no row for the layer '{layer}'"
        assert set(re.findall(r"`([\w.]+)`", row.group(1))) == set(modules), layer
