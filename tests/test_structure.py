"""The code's shape as DESIGN.md states it: imports point down the layers, no import cycle
between packages, every function fits on a screen, and test files do not import each other."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Each package may import only the packages listed after it (and itself).
MAY_IMPORT = {"workers": set(), "classifier": {"workers"}, "ensemble": {"workers", "classifier"},
              "benchmarks": {"ensemble", "workers", "classifier"}}
MAX_FUNCTION_LINES = 60


def modules(package: str):
    return sorted((ROOT / package).rglob("*.py"))


def imported_packages(path: Path) -> set[str]:
    """First-party packages a module imports, at any depth (lazy imports inside functions count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & set(MAY_IMPORT)


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_imports_point_down_the_layers(package):
    wrong = {str(path.relative_to(ROOT)): sorted(imported_packages(path) - MAY_IMPORT[package] - {package})
             for path in modules(package)}
    assert {path: names for path, names in wrong.items() if names} == {}


def test_every_function_fits_on_a_screen():
    long = []
    for package in MAY_IMPORT:
        for path in modules(package):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > MAX_FUNCTION_LINES:
                        long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []


def test_test_files_share_helpers_through_helper_modules_not_each_other():
    """A test file that imports another runs that file's fixtures and couples the two; shared helpers
    live in conftest.py or a helper module (tiny.py, boards.py, ...)."""
    crossing = {}
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tests.test_"):
                crossing[path.name] = node.module
    assert crossing == {}
