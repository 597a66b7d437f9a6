"""ensemble.load: a run remembers its autoencoder; a directory or URI that is not a finished run
is an InputError, never a traceback, and nothing is written."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

import ensemble
from tests.session_ray import joining_env
from tests.tiny import TinyAE
from workers.errors import InputError

ROOT = Path(__file__).resolve().parent.parent


def staging_dirs() -> set[str]:
    return {name for name in os.listdir(tempfile.gettempdir()) if name.startswith("ensemble-staging-")}


# --- bad input, without Ray ---

def test_a_missing_partial_or_foreign_directory_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        ensemble.load(tmp_path / "nothing")
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "config.json").write_text("{}")
    with pytest.raises(InputError, match="not a finished run .no report.json.*--resume"):
        ensemble.load(tmp_path / "partial")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "report.json").write_text(json.dumps({"accuracy": 0.9}))
    with pytest.raises(InputError, match="cannot be read as a run report"):
        ensemble.load(tmp_path / "foreign")
    (tmp_path / "foreign" / "report.json").write_text("{not json")
    with pytest.raises(InputError, match="cannot be read as a run report"):
        ensemble.load(tmp_path / "foreign")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["config.json", "foreign", "partial", "report.json"]


def test_a_uri_without_a_run_is_an_input_error_that_leaves_no_copy(tmp_path):
    before = staging_dirs()
    with pytest.raises(InputError, match="there is no run at"):
        ensemble.load((tmp_path / "store" / "run").as_uri())
    with pytest.raises(InputError, match="cannot open the output URI"):
        ensemble.load("nosuchfs://bucket/runs/run")
    assert staging_dirs() == before


def test_a_uri_without_pyarrow_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow.fs", None)  # what an install without the cloud extra sees
    with pytest.raises(InputError, match=r"needs pyarrow.*pip install 'eager-ensembles\[cloud\]'"):
        ensemble.load("s3://bucket/runs/run")


# --- finished runs, on Ray ---

@pytest.mark.slow
def test_a_damaged_run_is_an_input_error(tiny_run, tmp_path):
    result, _ = tiny_run
    copy = Path(shutil.copytree(result.run_dir, tmp_path / "tiny"))
    shutil.rmtree(copy / "member_01" / "checkpoint_000001")
    with pytest.raises(InputError, match="checkpoint_000001 cannot be read"):
        ensemble.load(copy)
    with pytest.raises(InputError, match="do not fit TinyAE"):
        ensemble.load(result.run_dir, autoencoder=TinyAE)  # the run's members are built-in CAEs
    other = Path(shutil.copytree(result.run_dir, tmp_path / "other"))
    (other / "normalization.json").unlink()
    with pytest.raises(InputError, match="normalization.json' is missing or unreadable"):
        ensemble.load(other)


OWN_DATA_SCRIPT = '''
    """A newcomer's script: 400 images of their own, their own autoencoder, no sizes set."""
    import json, sys
    import numpy as np, torch
    from sklearn.datasets import load_digits
    from torch import nn
    import ensemble

    class MyAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
            self.dec = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(4, 1, 3, padding=1))
        def encode(self, x):
            return self.enc(x)
        def forward(self, x):
            return self.dec(self.enc(x))

    digits = load_digits()
    images, labels = torch.tensor(digits.images[:400], dtype=torch.float32), torch.tensor(digits.target[:400])
    cfg = ensemble.EnsembleConfig(members=2, output=sys.argv[1], name="own").with_overrides(
        ["train.epochs=1", "baseline.enabled=false"])
    result = ensemble.run(cfg, autoencoder=MyAE, dataset=(images, labels), on_event=lambda e: None)
    again = ensemble.load(result.run_dir)  # no autoencoder=: rebuilt from __main__:MyAE
    print(json.dumps({"same": bool(np.array_equal(again.predict(images), result.predict(images))),
                      "sizes": [result.report.dataset.train, result.report.dataset.val, result.report.dataset.test]}))
'''


@pytest.mark.slow
def test_a_script_with_its_own_data_and_autoencoder_runs_without_sizes_and_loads_back(ray_instance, tmp_path):
    script = tmp_path / "own_data.py"
    script.write_text(textwrap.dedent(OWN_DATA_SCRIPT))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # the script joins the session's Ray (ensemble.run reads RAY_ADDRESS): its own Ray start is not the point
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "runs")], capture_output=True, text=True,
                          env={**env, **joining_env(ray_instance)}, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "400 images are too few for the default split sizes" in done.stderr  # a warning of the ensemble logger
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"same": True, "sizes": [240, 80, 80]}
    config = json.loads((tmp_path / "runs" / "own" / "config.json").read_text())
    assert config["model"]["autoencoder"] == "__main__:MyAE" and config["data"]["train_size"] == 0.6

    # another process, where __main__ has no MyAE: an InputError naming the class, nothing written
    before = sorted(str(p) for p in (tmp_path / "runs").rglob("*"))
    loader = ("import ensemble, sys\ntry:\n    ensemble.load(sys.argv[1])\nexcept ensemble.InputError as err:\n"
              "    print(err)\n    sys.exit(2)\n")
    again = subprocess.run([sys.executable, "-c", loader, str(tmp_path / "runs" / "own")], capture_output=True,
                           text=True, env=env, timeout=120)
    assert again.returncode == 2 and "Traceback" not in again.stderr, again.stderr
    assert "__main__:MyAE cannot be imported here" in again.stdout and "autoencoder=MyAE" in again.stdout
    assert sorted(str(p) for p in (tmp_path / "runs").rglob("*")) == before


@pytest.mark.slow
def test_an_importable_custom_autoencoder_is_rebuilt_without_being_passed(ray_instance, tmp_path):
    from sklearn.datasets import load_digits

    from ensemble.config import build_config
    from tests.tiny import TINY
    digits = load_digits()
    images, labels = digits.images[:300], digits.target[:300]
    cfg = build_config({}, TINY + ["baseline.enabled=false", "data.train_size=0.5", "data.val_size=0.2",
                                   "data.test_size=null", f"output={tmp_path}", "name=custom"])
    result = ensemble.run(cfg, autoencoder=TinyAE, dataset=(images, labels), on_event=lambda e: None)
    assert result.report.config["model"]["autoencoder"] == "tests.tiny:TinyAE"
    assert (result.report.dataset.train, result.report.dataset.val, result.report.dataset.test) == (150, 60, 90)
    again = ensemble.load(result.run_dir)
    assert isinstance(again.autoencoders[0], TinyAE)
    assert np.array_equal(again.predict(images), result.predict(images))


def test_model_autoencoder_in_a_config_builds_that_class():
    """What `--set model.autoencoder=...` on the command line, select, curves and --resume rely on."""
    from ensemble.builders import member_factory
    from ensemble.config import build_config
    assert member_factory(build_config({}, ["model.autoencoder=tests.tiny:TinyAE"]), (1, 8, 8)) is TinyAE
    with pytest.raises(InputError, match="cannot be imported here"):
        member_factory(build_config({}, ["model.autoencoder=__main__:GoneAE"]), (1, 8, 8))
