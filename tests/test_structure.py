"""The code's shape as docs/architecture.md states it: imports point down the layers (between the
three import packages, and between the floors inside `ensemble`), no import cycle between the parts
of `ensemble`, every function fits on a screen, and test files do not import each other."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Each package may import only the packages listed after it (and itself).
MAY_IMPORT = {"workers": set(), "classifier": {"workers"}, "ensemble": {"workers", "classifier"},
              "benchmarks": {"ensemble", "workers", "classifier"}}
MAX_FUNCTION_LINES = 60
# The floors inside `ensemble`, lowest first: a module may import its own floor's parts and those
# below, never a higher floor. A part is a subpackage or a top-level module of `ensemble`;
# `__init__` is the public API (`import ensemble`), so nothing inside the package imports it.
FLOORS = [
    {"config", "storage", "errors", "shadowing", "environment"},  # settings, output URIs, how a run ends early,
    # shadowed packages, environment variables set for a `with`
    {"data", "builders", "report", "observers"},  # the data, config -> worker-side objects, report.json, observers
    {"runs"},                                # a run directory opened, read back and scored
    {"scheduling"},                          # the only Ray scheduling code: actors, session, placement
    {"result", "serving"},                   # RunResult / load(), `ensemble serve`
    {"job"},                                 # the main job: its five steps, the driver that orders them, failures
    {"analysis", "estimator", "sweeps"},     # select, curves, repeats; the scikit-learn estimator; sweeps
    {"cli", "__main__", "__init__", "bench", "console"},  # the command line (and what it prints), the API, bench
]
FLOOR = {part: level for level, parts in enumerate(FLOORS) for part in parts}


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


def ensemble_part(module: str) -> str:
    """The part of `ensemble` that a dotted module name (or a name imported from `ensemble`) belongs to."""
    names = module.split(".")
    if len(names) == 1:
        return "__init__"
    first = names[1]
    is_part = (ROOT / "ensemble" / first).is_dir() or (ROOT / "ensemble" / f"{first}.py").is_file()
    return first if is_part else "__init__"


def ensemble_imports(path: Path) -> set[str]:
    """The parts of `ensemble` a module imports, at any depth (lazy and type-checking imports count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {ensemble_part(a.name) for a in node.names if a.name.split(".")[0] == "ensemble"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "ensemble":
            if node.module == "ensemble":  # `from ensemble import errors` names a part; `import RunReport`, the API
                found |= {ensemble_part(f"ensemble.{a.name}") for a in node.names}
            else:
                found.add(ensemble_part(node.module))
    return found


def ensemble_graph() -> dict[str, set[str]]:
    """Part -> the other parts its modules import."""
    graph: dict[str, set[str]] = {}
    for path in modules("ensemble"):
        part = ensemble_part(".".join(path.relative_to(ROOT).with_suffix("").parts))
        graph.setdefault(part, set()).update(ensemble_imports(path) - {part})
    return graph


def test_every_part_of_ensemble_has_a_floor():
    assert set(ensemble_graph()) - set(FLOOR) == set()


def test_no_import_inside_ensemble_runs_up_a_floor():
    up = {f"{part} -> {other}" for part, others in ensemble_graph().items() for other in others
          if FLOOR[other] > FLOOR[part]}
    assert up == set()


def test_the_parts_of_ensemble_import_each_other_in_no_cycle():
    graph, done, cycles = ensemble_graph(), set(), []

    def visit(part: str, path: list[str]) -> None:
        if part in path:
            cycles.append(path[path.index(part):] + [part])
            return
        if part not in done:
            for other in sorted(graph.get(part, ())):
                visit(other, path + [part])
            done.add(part)

    for part in sorted(graph):
        visit(part, [])
    assert cycles == []


def test_the_floor_test_sees_an_import_up():
    """The check above would catch today's old arrow: result.py reading a run through job/."""
    assert ensemble_part("ensemble.job.rundir") == "job" and FLOOR["job"] > FLOOR["result"]
    assert ensemble_part("ensemble.errors") == "errors" and ensemble_part("ensemble.RunReport") == "__init__"


def docstring_lines(node: ast.AST) -> int:
    """A public function's numpydoc docstring (parameters, returns, an example) is reading, not code."""
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        return first.end_lineno - first.lineno + 1
    return 0


def test_every_function_fits_on_a_screen():
    """At most 60 lines of code (its docstring not counted)."""
    long = []
    for package in MAY_IMPORT:
        for path in modules(package):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines = node.end_lineno - node.lineno + 1 - docstring_lines(node)
                    if lines > MAX_FUNCTION_LINES:
                        long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []


def test_test_files_share_helpers_through_helper_modules_not_each_other():
    """A test file that imports another runs that file's fixtures and couples the two; shared helpers
    live in conftest.py or a helper module (tiny.py, boards.py, ...)."""
    crossing = {}
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[-1].startswith("test_"):
                crossing[path.name] = node.module
    assert crossing == {}


def test_every_test_file_says_what_it_tests():
    bare = [str(path.relative_to(ROOT)) for path in sorted((ROOT / "tests").rglob("*.py"))
            if ast.get_docstring(ast.parse(path.read_text())) is None]
    assert bare == []
