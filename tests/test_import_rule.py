"""One import rule for every command: a `module:QualName` in the folder a command runs in is found the
same way by `run`, `select`, `curves`, `labels`, `serve` and `--resume` (the current directory first,
as `python -m` has it), and an import that fails says what to do from the command line and from Python.

Each test works in a fresh folder holding `mymods.py` (`tests/user_folder.py`), in fresh processes
started the way the `ensemble` console script starts them."""

import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.session_ray import joining_env
from tests.user_folder import ensemble_command, launched, user_folder
from workers.errors import InputError
from workers.imports import not_importable


@pytest.fixture
def folder(tmp_path):
    return user_folder(tmp_path)


def test_a_class_in_the_current_folder_is_found_without_pythonpath(folder):
    (folder.parent / "bin" / "probe.py").write_text(
        "import os, sys\nbefore = '' in sys.path or os.getcwd() in sys.path\n"
        "from workers.models import import_autoencoder\nfrom ensemble.serving.replica import resolve_autoencoder\n"
        "print(before, import_autoencoder('mymods:AE', trust_code=True).__name__, "
        "resolve_autoencoder('mymods:AE').__module__)\n")
    done = launched(folder, "probe.py")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "AE", "mymods"]  # the folder was not on the path to begin with


def test_a_class_that_cannot_be_imported_says_what_to_do_on_the_command_line(folder):
    done = ensemble_command(folder, "select", str(folder / "no-run"), "--autoencoder", "othermods:AE")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    message = " ".join(done.stderr.split())
    assert "the autoencoder othermods:AE cannot be imported here (ModuleNotFoundError: No module named" in message
    assert "run the command in the folder that holds othermods.py" in message
    assert "PYTHONPATH=/path/to/folder ensemble" in message and "--autoencoder MODULE:NAME" in message


def test_the_message_for_python_users_names_what_to_pass():
    error = not_importable("pkg.models:Outer.AE", ModuleNotFoundError("No module named 'pkg'"))
    assert isinstance(error, InputError)
    assert "the folder that holds pkg.py (or the pkg/ package)" in str(error)
    assert "From Python: pass the class itself (autoencoder=AE)" in str(error)
    script = str(not_importable("__main__:MyAE", AttributeError("no MyAE")))
    assert "save the class in a module file (mymodels.py) and name it mymodels:MyAE" in script


@pytest.mark.slow
def test_every_command_finds_the_class_run_accepted_in_the_same_folder(folder, ray_instance):
    joining = joining_env(ray_instance)  # `run` and `--resume` join the session's Ray: its start is not the point
    # a relative --output, as users give it: the session's actors work in another folder than this one
    run = ensemble_command(
        folder, "run", "--quiet", "--output", "runs", "--name", "custom",
        "--set", "model.autoencoder=mymods:AE",
        *[arg for key in ["members=2", "train.epochs=1", "data.name=digits", "data.train_size=150",
                          "data.val_size=60", "data.test_size=150", "eager.rule=none", "baseline.max_epochs=1",
                          "resources.cpus_per_member=1"] for arg in ("--set", key)], env=joining)
    assert run.returncode == 0, run.stderr
    run_dir = folder / "runs" / "custom"
    report = json.loads((run_dir / "report.json").read_text())
    # each command below works on its own copy of the run (each takes the run's lock), so all start at once
    copies = {name: shutil.copytree(run_dir, folder / "runs" / name) for name in ("select", "curves", "labels")}
    resumed_dir = folder / "resume" / "custom"
    shutil.copytree(run_dir, resumed_dir)
    for name in ("report.json", "report.md"):  # interrupted before its report: --resume imports the class again
        (resumed_dir / name).unlink()
    (folder.parent / "bin" / "serving.py").write_text(  # what each `ensemble serve` replica does with --autoencoder
        "import sys, json\nfrom ensemble.serving.replica import load_for_serving\n"
        "print(json.dumps(load_for_serving(sys.argv[1], 'mymods:AE').report.ensemble.test_accuracy))\n")
    commands = {
        "select": lambda: ensemble_command(folder, "select", str(copies["select"]), "--autoencoder", "mymods:AE",
                                           "--set", "combiner.kind=soft-vote"),
        "curves": lambda: ensemble_command(folder, "curves", str(copies["curves"]), "--trust-code"),
        "labels": lambda: ensemble_command(folder, "labels", str(copies["labels"]), "--trust-code", "--per-class", "2",
                                           "--draws", "1"),
        "served": lambda: launched(folder, "serving.py", str(run_dir)),
        "resumed": lambda: ensemble_command(folder, "run", "--resume", str(resumed_dir), "--quiet", "--trust-code",
                                            env=joining),
    }
    with ThreadPoolExecutor(len(commands)) as pool:
        done = dict(zip(commands, pool.map(lambda command: command(), commands.values()), strict=True))
    for name, finished in done.items():
        assert finished.returncode == 0, f"{name}: {finished.stderr}"
    assert (copies["curves"] / "accuracy_vs_time.csv").is_file() and (copies["labels"] / "labels.json").is_file()
    assert any((copies["select"] / "selections").iterdir())
    assert json.loads(done["served"].stdout.splitlines()[-1]) == report["ensemble"]["test_accuracy"]
    assert json.loads((resumed_dir / "report.json").read_text())["ensemble"]["test_accuracy"] == \
        report["ensemble"]["test_accuracy"]
