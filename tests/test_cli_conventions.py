"""The conventions users bring from Ray's and scikit-learn's tools: `--address`, `run --dry-run`
(no Ray started), `ensemble config`, "did you mean" for mistyped keys, each error listing its
allowed values once, logging through the `ensemble` logger, and `progress=` views (no Ray here)."""

import io
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ensemble.cli import main
from ensemble.config import build_config, config_reference, did_you_mean
from ensemble.console import command_line_logging
from ensemble.job.dry_run import plan_lines
from ensemble.observers.progress import Watch, choose_view, progress_watch
from workers.errors import InputError

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ensemble", *argv], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


# --- did you mean, allowed values once ---

@pytest.mark.parametrize("override, suggestion", [
    ("train.epoch=3", "train.epochs"), ("trian.epochs=3", "train.epochs"), ("epochs=3", "train.epochs"),
    ("eager.treshold=0.1", "eager.threshold"), ("memebers=3", "members"), ("trian=3", "train"),
    ("resources.cpu_per_member=2", "resources.cpus_per_member"),
])
def test_a_mistyped_key_names_the_nearest_known_key(override, suggestion):
    with pytest.raises(InputError, match=rf"unknown config key .*\(did you mean '{suggestion}'\?\)"):
        build_config({}, [override])


def test_a_key_near_nothing_gets_no_guess_and_config_files_get_the_same_help(tmp_path):
    with pytest.raises(InputError) as err:
        build_config({}, ["bogus=1"])
    assert "did you mean" not in str(err.value)
    assert did_you_mean("resources.cpus") == ""  # a section name is no answer for a key inside it
    (tmp_path / "c.yaml").write_text("train:\n  epoch: 2\n")
    from ensemble.config import EnsembleConfig
    with pytest.raises(InputError, match=r"'train.epoch' \(did you mean 'train.epochs'\?\)"):
        EnsembleConfig.from_file(tmp_path / "c.yaml")


def test_the_estimators_settings_get_did_you_mean_too():
    from ensemble import EagerEnsembleClassifier
    with pytest.raises(InputError, match=r"unknown settings key 'train.lrr' \(did you mean 'train.lr'\?\)"):
        EagerEnsembleClassifier(settings={"train.lrr": 0.1})._config()


@pytest.mark.parametrize("override, allowed", [
    ("eager.rule=sometimes", "'plateau', 'fixed', 'budget' or 'none'"),
    ("combiner.kind=stacking", "'concat', 'soft-vote' or 'hard-vote'"),
    ("data.name=imagenet", "'mnist-5k', 'digits', 'mnist', 'cifar10', 'folder', 'npz' or 'arrays'"),
])
def test_each_error_lists_its_allowed_values_once(override, allowed):
    with pytest.raises(InputError) as err:
        build_config({}, [override])
    assert str(err.value).count(allowed) == 1


# --- ensemble config ---

def test_ensemble_config_lists_every_key_with_its_default_and_meaning_without_warnings():
    done = run_cli("config", env={"PYTHONWARNINGS": "error"})
    assert done.returncode == 0 and done.stderr == ""
    for key, default, description in config_reference():
        line = next(line for line in done.stdout.splitlines() if line.startswith(f"{key} = "))
        assert line.startswith(f"{key} = {default}") and description.split()[0] in line
    markdown = run_cli("config", "--markdown").stdout
    assert markdown.splitlines()[0] == "| key | default | meaning |" and "| `train.epochs` | `20` |" in markdown


# --- run --dry-run ---

DRY_RUN = """
    import sys
    from ensemble.cli import main
    code = main(sys.argv[1:])
    print("RAY IMPORTED" if "ray" in sys.modules else "NO RAY", code)
"""


def test_dry_run_prints_config_and_plan_and_never_starts_ray(tmp_path):
    argv = ["run", "--dry-run", "--set", "members=3", "--set", "train.epochs=4", "--output", str(tmp_path),
            "--name", "plan"]
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(DRY_RUN), *argv], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.splitlines()[-1] == "NO RAY 0"  # Ray was not even imported, so no Ray process can have started
    assert "# Resolved config" in out and "members: 3" in out and "epochs: 4" in out
    assert "Members: 3, 1 CPU each" in out and "1. members: up to 4 epochs" in out and "2. baseline:" in out
    assert not (tmp_path / "plan").exists()  # nothing written either


def test_dry_run_on_the_command_line_refuses_bad_input_with_exit_2():
    done = run_cli("run", "--dry-run", "--set", "train.epoch=2")
    assert done.returncode == 2 and "did you mean 'train.epochs'" in done.stderr and "Traceback" not in done.stderr


def test_the_plan_says_how_many_members_queue_and_the_baseline_share():
    config = build_config({}, ["members=5", "resources.cpus_per_member=2", "name=x"])
    lines = plan_lines(config, [{"CPU": 4.0, "GPU": 0.0}], None)
    assert "Members: 5, 2 CPU each, 1 per actor; 2 train at once, 3 queue." in lines
    assert any(line.startswith("  2. baseline: one model 2.24x as wide, 4 CPU") for line in lines)
    far = plan_lines(config, [{"CPU": 1.0}], "ray://head:10001")
    assert far[0].startswith("Would run on the Ray cluster at ray://head:10001")
    assert any(line.startswith("Note: each member asks for 2 CPU") for line in far)


# --- --address ---

def test_address_means_what_ray_address_means(monkeypatch, capsys):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert main(["run", "--dry-run", "--address", "ray://head:10001", "--name", "a"]) == 0
    assert os.environ["RAY_ADDRESS"] == "ray://head:10001"  # what ray.init() and a driver child read
    assert "Ray cluster at ray://head:10001" in capsys.readouterr().out
    assert main(["run", "--dry-run", "--address", "local", "--name", "a"]) == 0
    assert "RAY_ADDRESS" not in os.environ
    from ensemble.cli import build_parser
    assert build_parser().parse_args(["serve", "r", "--address", "auto"]).address == "auto"


# --- logging and progress ---

def test_library_messages_go_through_the_ensemble_logger(tmp_path, caplog):
    from ensemble.storage import Mirror
    mirror = Mirror.__new__(Mirror)  # only its failure report is exercised: no store is needed
    mirror.uri, mirror.local, mirror.failure, mirror._pending, mirror._sent = "s3://b/r", tmp_path, None, set(), {}
    mirror._upload = lambda relative: (_ for _ in ()).throw(OSError("no route"))
    (tmp_path / "a.txt").write_text("x")
    with caplog.at_level(logging.WARNING, logger="ensemble"):
        mirror.push(["a.txt"])
    assert [r.name for r in caplog.records] == ["ensemble.storage"] and "no route" in caplog.records[0].message


def test_the_command_line_shows_the_library_log_once(capsys):
    logger = logging.getLogger("ensemble")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    try:
        command_line_logging()
        command_line_logging()  # a second call adds no second handler
        logging.getLogger("ensemble.job.driver").warning("sizes fell back")
        logging.getLogger("ensemble.job.driver").info("a note")
        assert capsys.readouterr().err == "warning: sizes fell back\na note\n"
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved


def test_progress_names_map_onto_the_views():
    assert progress_watch("table", False) == Watch(view="table")
    assert progress_watch("lines", False).view == "lines" and progress_watch(None, True).view == "quiet"
    assert progress_watch(None, False).view == "auto"
    with pytest.raises(InputError, match=r"progress='loud' is not a view; allowed: 'auto', 'table', 'lines', 'quiet'"):
        progress_watch("loud", False)
    assert choose_view("auto", is_terminal=True, is_jupyter=False) == "table"
    assert choose_view("auto", is_terminal=False, is_jupyter=False) == "lines"
    assert choose_view("auto", is_terminal=True, is_jupyter=True) == "lines"  # a notebook cell cannot redraw
    assert choose_view("table", is_terminal=True, is_jupyter=True) == "lines"
    assert choose_view("quiet", is_terminal=True, is_jupyter=False) == "quiet"


def test_progress_takes_a_watch_and_watch_is_its_deprecated_old_name():
    mine = Watch(view="lines", verbose=True, stream=io.StringIO())
    assert progress_watch(mine, quiet_by_default=True) is mine  # a Watch passes as given, on_event or not
    with pytest.warns(DeprecationWarning, match=r"run\(watch=\.\.\.\) is deprecated: pass the Watch as progress="):
        assert progress_watch("quiet", False, watch=mine) is mine  # the old keyword still wins


def test_the_table_view_keeps_its_old_name_live_and_refuses_unknown_views():
    assert Watch(view="live") == Watch(view="table") and Watch(view="live").view == "table"
    assert progress_watch("live", False).view == "table"
    with pytest.raises(InputError, match=r"Watch.view='tabel' is not a view; allowed: 'auto', 'table'"):
        Watch(view="tabel")


def test_a_notebook_gets_epoch_lines_not_a_table(monkeypatch):
    import rich.console

    from ensemble.observers.progress import LineView, open_display
    monkeypatch.setattr(rich.console, "_is_jupyter", lambda: True)
    display = open_display(Watch(view="auto", stream=io.StringIO()), [])
    try:
        assert isinstance(display, LineView)
    finally:
        display.close()


@pytest.mark.parametrize("kwargs, message", [({"progress": "loud"}, "progress='loud' is not a view"),
                                             ({"tracker": "wandb"}, "tracker='wandb' is not a tracker")])
def test_run_refuses_a_bad_progress_or_tracker_before_loading_anything(kwargs, message, tmp_path,
                                                                       ray_must_not_start):
    import ensemble
    config = ensemble.EnsembleConfig(output=str(tmp_path), data={"name": "npz", "root": str(tmp_path / "none.npz")})
    with pytest.raises(InputError, match=message):  # not the missing data file: these are checked first
        ensemble.run(config, **kwargs)


def test_run_with_watch_warns_at_the_callers_line_before_loading_anything(tmp_path, ray_must_not_start):
    import ensemble
    config = ensemble.EnsembleConfig(output=str(tmp_path), data={"name": "npz", "root": str(tmp_path / "none.npz")})
    with pytest.warns(DeprecationWarning, match="pass the Watch as progress=") as caught:
        with pytest.raises(InputError, match="tracker='wandb' is not a tracker"):
            ensemble.run(config, watch=Watch(view="quiet"), tracker="wandb")
    assert caught[0].filename == __file__  # the warning names the caller's line, not the library's
