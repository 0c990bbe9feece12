"""The package's shape: no import cycle, imports only downstream, every public module's __all__."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _checker():
    path = ROOT / "scripts" / "check_imports.py"
    spec = importlib.util.spec_from_file_location("check_imports", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_imports"] = module
    spec.loader.exec_module(module)
    return module


def test_no_import_cycle_and_no_import_against_the_flow():
    checker = _checker()
    graph = checker.import_graph()
    assert "crsrisk.scoring.core" in graph and "crsrisk.cli.common" in graph
    assert checker.cycles(graph) == []
    assert checker.upstream_imports(graph) == []


def test_the_checker_finds_cycles_even_inside_functions(tmp_path):
    checker = _checker()
    tree = ast.parse("def f():\n    from crsrisk.b import x\n")
    modules = {"crsrisk.a", "crsrisk.b"}
    assert checker._imports(tree, modules) == {"crsrisk.b"}
    graph = {"crsrisk.a": {"crsrisk.b"}, "crsrisk.b": {"crsrisk.a"}}
    assert checker.cycles(graph) == [["crsrisk.a", "crsrisk.b"]]
    hidden = ast.parse("if TYPE_CHECKING:\n    import crsrisk.b\n")
    assert checker._imports(hidden, modules) == set()


def test_the_checker_finds_an_import_against_the_flow():
    checker = _checker()
    graph = {"crsrisk.contract.validate": {"crsrisk.scoring.core"}, "crsrisk.scoring.core": set()}
    assert checker.upstream_imports(graph) == [
        "crsrisk.contract.validate imports crsrisk.scoring.core (a later stage)"
    ]


@pytest.mark.parametrize(
    "path",
    sorted(p for p in (ROOT / "src" / "crsrisk").rglob("*.py")
           if not p.name.startswith("_") and p.name != "__main__.py"),
    ids=lambda p: str(p.relative_to(ROOT / "src")),
)
def test_public_module_declares_all(path):
    tree = ast.parse(path.read_text())
    names = {t.id for node in tree.body if isinstance(node, ast.Assign)
             for t in node.targets if isinstance(t, ast.Name)}
    assert "__all__" in names, f"{path.name} has no __all__"


def test_no_module_over_700_lines():
    sizes = {p.relative_to(ROOT).as_posix(): len(p.read_text().splitlines())
             for p in (ROOT / "src").rglob("*.py")}
    assert {k: v for k, v in sizes.items() if v > 700} == {}
