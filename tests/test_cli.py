"""`ensemble run` as a user types it: exit codes, messages, the printed summary."""

import os
import subprocess
import sys

import pytest

from tests.session_ray import joining_env
from tests.tiny import TINY


def ensemble_cli(*args, cwd, env=None):
    return subprocess.run([sys.executable, "-m", "ensemble", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


@pytest.mark.parametrize("args, message", [
    (["--set", "members=0"], "'members'"),
    (["--set", "train.lr=fast"], "'train.lr'"),
    (["--set", "data.name=imagenet"], "'data.name'"),
    (["--set", "data.name=mnist", "--set", "data.root=/nonexistent/mnist"], "/nonexistent/mnist"),
    (["--config", "/nonexistent/config.yaml"], "does not exist"),
    (["--set", "nokey"], "section.key=value"),
    (["--resume-if-exists"], "--resume-if-exists needs --name"),
    (["--output", "nosuchfs://bucket/runs"], "cannot open the output URI"),
    (["--output", "s3://bucket/runs", "--repeats", "2"], "needs a local or shared --output"),
])
def test_bad_input_exits_2_with_one_paragraph_and_no_traceback(tmp_path, args, message):
    done = ensemble_cli("run", "--output", str(tmp_path), *args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_unsatisfiable_resources_exit_2_instead_of_hanging(ray_instance, tmp_path):
    # it joins the session's Ray (no GPU, as a local one would have here): the check, not Ray's start, is the point
    done = ensemble_cli("run", "--output", str(tmp_path), "--set", "resources.gpus_per_member=1",
                        *[a for o in TINY for a in ("--set", o)], cwd=tmp_path, env=joining_env(ray_instance))
    assert done.returncode == 2 and "GPU" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_tiny_run_prints_the_summary(tmp_path):
    done = ensemble_cli("run", "--output", str(tmp_path), "--name", "cli", *[a for o in TINY for a in ("--set", o)],
                        cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Speed-up (baseline wall / ensemble wall)" in done.stdout
    assert " member_01 epoch   1/2 " in done.stdout and "| member_01 | 1 " in done.stdout  # epoch line, aligned table
    assert (tmp_path / "cli" / "report.json").exists()


def test_version_prints_the_package_version(tmp_path):
    import ensemble
    done = ensemble_cli("--version", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == f"ensemble {ensemble.__version__}"
