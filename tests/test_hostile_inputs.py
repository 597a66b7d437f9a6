"""Hostile and unlucky inputs, as a new user or an attacker meets them (issue 23, points 2-8).

Each case goes through the command line, HTTP or the public Python API and checks what the user
sees: exit 2 (an InputError in Python) naming the file and what is wrong, no traceback, nothing run
that was not asked for. The writer's lock (point 1) has its own file, tests/test_run_lock.py.
Tests that train or serve are marked slow.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, cwd, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "ensemble", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=timeout)


def python(code: str, *args, cwd):
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)


def set_recorded(run_dir: Path, key: str, value, files=("config.json", "report.json")) -> None:
    """Edit `model.<key>` in the run's config (config.json, and the config inside report.json)."""
    for name in files:
        path = run_dir / name
        if not path.is_file():
            continue
        data = json.loads(path.read_text())
        (data["config"] if name == "report.json" else data)["model"][key] = value
        path.write_text(json.dumps(data))


# --- 2: a run directory cannot make load, select, curves, serve or resume run code ---

EVIL = "from pathlib import Path\nPath('pwned').write_text('ran')\n"


@pytest.mark.slow
def test_a_run_naming_a_module_does_not_import_it_unless_trusted(saved_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(saved_run, run)
    set_recorded(run, "autoencoder", "evil:Evil")
    (tmp_path / "evil.py").write_text(EVIL)  # in the current directory: importable by name
    loaded = python("import ensemble\ntry:\n    ensemble.load('run')\nexcept ensemble.InputError as err:\n"
                    "    print(err)\n", cwd=tmp_path)
    assert "'evil'" in loaded.stdout and "trust_code=True" in loaded.stdout, loaded.stdout + loaded.stderr
    for command in (["select", "run", "--set", "eager.epoch=1"], ["curves", "run"], ["serve", "run"]):
        done = cli(*command, cwd=tmp_path)
        assert done.returncode == 2 and "--trust-code" in done.stderr and "'evil'" in done.stderr, done.stderr
    interrupted = tmp_path / "interrupted"
    interrupted.mkdir()
    shutil.copy(run / "config.json", interrupted / "config.json")
    done = cli("run", "--resume", str(interrupted), cwd=tmp_path)
    assert done.returncode == 2 and "--trust-code" in done.stderr, done.stderr
    assert not (tmp_path / "pwned").exists()  # nothing ran
    trusted = cli("select", "run", "--set", "eager.epoch=1", "--trust-code", cwd=tmp_path)
    assert (tmp_path / "pwned").exists() and "evil:Evil" in trusted.stderr  # imported when asked (it has no Evil)
