"""Fail on any import cycle between crsrisk's modules, imports inside functions included.

    python scripts/check_imports.py [--show]

Reads every module under src/crsrisk with `ast`, collects each ``import crsrisk...`` and
``from crsrisk... import ...`` wherever it stands (module level, inside functions, inside
``try``), resolves ``from crsrisk.pkg import module`` to the module, and looks for strongly
connected components in the graph. Imports under ``if TYPE_CHECKING:`` are left out: they never
run. A package's ``__init__`` counts as its own node. It also fails on an import against the
pipeline's flow (LAYERS: a stage may import itself and earlier stages only). Exit 0 when clean, 1
with each cycle or backward import listed. ``--show`` prints each module's imports.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
# The flow of the pipeline, upstream first: a module may import its own stage and earlier ones.
LAYERS = (
    ("crsrisk.errors", "crsrisk.config", "crsrisk.io"),
    ("crsrisk.contract",),
    # Metrics are pure functions of outcomes and probabilities; training scores its folds with them.
    ("crsrisk.features", "crsrisk.simulate", "crsrisk.evaluation.metrics"),
    ("crsrisk.explain",),
    ("crsrisk.modeling",),
    ("crsrisk.evaluation",),
    ("crsrisk.mlops",),
    ("crsrisk.scoring", "crsrisk.stratify"),
    ("crsrisk.report",),
    ("crsrisk.cli", "crsrisk.__main__", "crsrisk"),
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, modules: set[str]) -> set[str]:
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "crsrisk":
                    found.add(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and (
            node.module.split(".")[0] == "crsrisk"
        ):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in modules else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in sorted(SRC.rglob("*.py"))}
    modules = set(files)
    graph = {}
    for name, path in files.items():
        targets = _imports(ast.parse(path.read_text(), filename=str(path)), modules)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def layer(module: str) -> int:
    """Position of the module's stage in LAYERS (the longest matching prefix)."""
    best, depth = len(LAYERS), -1
    for position, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > depth:
                best, depth = position, len(prefix)
    return best


def upstream_imports(graph: dict[str, set[str]]) -> list[str]:
    """Imports that run against the flow: a stage importing a later stage."""
    return [
        f"{name} imports {target} (a later stage)"
        for name in sorted(graph)
        for target in sorted(graph[name])
        if layer(target) > layer(name)
    ]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def connect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--show", action="store_true", help="print each module's imports")
    args = parser.parse_args()
    graph = import_graph()
    found = cycles(graph)
    if args.show:
        for name in sorted(graph):
            print(f"{name}: {', '.join(sorted(graph[name])) or '-'}")
    against_flow = upstream_imports(graph)
    for component in found:
        print("import cycle: " + " <-> ".join(component))
    for line in against_flow:
        print(f"against the flow: {line}")
    if found or against_flow:
        return 1
    print(f"no import cycles and no import against the flow among {len(graph)} modules")
    return 0


if __name__ == "__main__":
    sys.exit(main())
