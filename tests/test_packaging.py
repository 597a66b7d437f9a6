"""What `pip install` builds: one version, typed packages, extras for single features, floors."""

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
    assert {"ensemble/py.typed", "workers/py.typed", "classifier/py.typed"} <= files
    assert meta["Version"] == ensemble.__version__ and meta["License-Expression"] == "Apache-2.0"
    assert {"cloud", "bench", "test"} <= set(meta.get_all("Provides-Extra"))
