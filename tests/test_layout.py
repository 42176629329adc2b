"""The package's layering, read from the source: imports run down, never up, and never in a circle.

Layers, lowest first: what a module may import is what sits in its own layer or below it (within a layer, the
import graph must still be free of cycles). `experiments/` is never imported.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "avasr"

LAYERS = [
    ("avasr.errors", "avasr.text", "avasr.plots"),
    ("avasr.config", "avasr.cli"),
    ("avasr.data", "avasr.corpus", "avasr.model", "avasr.decode", "avasr.metrics", "avasr.device", "avasr.features"),
    ("avasr.objective", "avasr.checkpoint", "avasr.augment", "avasr.visualize"),
    ("avasr.evaluation",),
    ("avasr.train", "avasr.robustness"),
    ("avasr.ship",),
    ("avasr.sweep",),
]


def layer_of(module: str) -> int:
    for rank, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in {Path(__file__).name}")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """avasr modules imported anywhere in the file (lazy imports inside functions count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("avasr")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("avasr"):
            package = node.module
            for alias in node.names:  # `from avasr.sweep import tracking` imports the module avasr.sweep.tracking
                sub = f"{package}.{alias.name}"
                found.add(sub if (PACKAGE.parent / (sub.replace(".", "/") + ".py")).is_file() else package)
    return found


GRAPH = {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_run_down(module):
    upward = sorted(m for m in GRAPH[module] if layer_of(m) > layer_of(module))
    assert not upward, f"{module} (layer {layer_of(module)}) imports from a higher layer: {upward}"


def test_no_import_cycles():
    done, path = set(), []

    def visit(module):
        if module in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(module) :] + [module]))
        if module in done:
            return
        path.append(module)
        for dependency in GRAPH.get(module, ()):
            if dependency != module and not module.startswith(dependency + "."):  # a package's own __init__
                visit(dependency)
        path.pop()
        done.add(module)

    for module in GRAPH:
        visit(module)


def test_nothing_imports_experiments():
    for path in [*PACKAGE.rglob("*.py"), *(ROOT / "benchmarks").glob("*.py"), *(ROOT / "tests").glob("*.py")]:
        assert "experiments" not in {n.split(".")[0] for n in _imported_roots(path)}, path


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module)
    return roots
