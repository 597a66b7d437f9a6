"""A user's own `workers.py` or `classifier.py` beside their script hides our package of the same name
(the script's directory comes first on sys.path): `import ensemble` must say which file to rename,
in one line, instead of "No module named 'workers.errors'; 'workers' is not a package"."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ensemble.shadowing import shadowing_message

ROOT = Path(__file__).resolve().parent.parent


def run_script_beside(tmp_path: Path, script: str) -> subprocess.CompletedProcess:
    """The user's script run as they would (`python script.py` in its own directory); PYTHONPATH as
    the suite has it, so a checkout without an install finds the project as the tests do."""
    (tmp_path / "script.py").write_text(script)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "script.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("name", ["workers", "classifier"])
def test_a_shadowing_module_beside_the_script_is_one_line_naming_the_file(tmp_path, name):
    (tmp_path / f"{name}.py").write_text("# the user's own module\n")
    done = run_script_beside(tmp_path, "import ensemble\n")
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: ") and str(tmp_path / f"{name}.py") in last and "rename" in last
    assert f"'{name}' package" in last and "is not a package" not in done.stderr


def test_a_shadowing_package_directory_is_named_too(tmp_path):
    (tmp_path / "workers").mkdir()
    (tmp_path / "workers" / "__init__.py").write_text("")
    done = run_script_beside(tmp_path, "import ensemble\n")
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 1 and f"{tmp_path / 'workers'} shadows" in last and "rename that directory" in last


def test_without_a_shadowing_file_the_script_imports_ensemble(tmp_path):
    (tmp_path / "my_workers.py").write_text("")  # a name that hides nothing
    done = run_script_beside(tmp_path, "import ensemble, workers\nprint(workers.__file__)\n")
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == ROOT / "workers" / "__init__.py"


def test_our_own_packages_pass_the_check(tmp_path):
    assert shadowing_message("workers", ROOT / "workers" / "__init__.py", ROOT) is None
    # shipped on its own (a Ray job's py_modules): another directory, but our package by its files
    shipped = shutil.copytree(ROOT / "classifier", tmp_path / "pkg_1" / "classifier")
    assert shadowing_message("classifier", shipped / "__init__.py", ROOT) is None
    (tmp_path / "mine" / "classifier").mkdir(parents=True)
    (tmp_path / "mine" / "classifier" / "__init__.py").write_text("")
    assert "rename that directory" in shadowing_message("classifier", tmp_path / "mine" / "classifier" / "__init__.py",
                                                        ROOT)
    assert "rename that file" in shadowing_message("classifier", ROOT / "elsewhere" / "classifier.py", ROOT)
