"""Failures during a run, as they really happen: SIGTERM, Ray's raylet killed, a full disk (a real
tmpfs where the machine allows mounting one, and ENOSPC injected at the checkpoint writer), and a
custom autoencoder raising in epoch 2. Each ends with its exit code and one paragraph naming the
problem and the next command; nothing saved is lost."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Optional

import psutil
import pytest
import torch

import ensemble
from ensemble.config import build_config
from ensemble.errors import MemberFailed
from ensemble.job.failures import describe
from tests.session_ray import joining_env
from tests.tiny import TINY, TinyAE
from workers.checkpoints import list_checkpoints, load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
# members train long enough to be caught mid-run: 4 epochs, every epoch kept
LONGER = TINY + ["train.epochs=4", "eager.rule=none", "baseline.max_epochs=3", "data.train_size=600",
                 "data.val_size=200", "data.test_size=200"]

pytestmark = pytest.mark.slow


def start_cli(*args, output: Path, joining: Optional[dict] = None) -> subprocess.Popen:
    """`python -m ensemble run ...` as a user starts it (the command line's supervised driver), on a Ray of
    its own, or joined to the session's (`joining`: tests/session_ray.py) where its Ray start is not the point."""
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    env.update(joining or {})
    return subprocess.Popen([sys.executable, "-m", "ensemble", "run", *args], cwd=output, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def run_args(name: str, overrides: list[str], output: Path) -> list[str]:
    return ["--output", str(output), "--name", name, *sets(overrides)]


def wait_for_line(process: subprocess.Popen, text: str) -> None:
    for line in process.stdout:
        if text in line:
            return
    pytest.fail(f"the run ended before printing {text!r}: {process.stderr.read()[-2000:]}")


def sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def one_paragraph(stderr: str) -> str:
    text = " ".join(line for line in stderr.splitlines() if not line.startswith(("20", "[")) and "(raylet)" not in line)
    assert "Traceback" not in stderr and "\x1b[" not in text
    return " ".join(text.split())


def test_sigterm_stops_the_run_keeps_every_checkpoint_and_resume_finishes_it(ray_instance, tmp_path):
    driver = start_cli(*run_args("stopped", LONGER, tmp_path), output=tmp_path)
    wait_for_line(driver, "member_00 epoch   1/")
    ours = psutil.Process(driver.pid).children(recursive=True)  # the driver and every Ray process it started
    assert any("raylet" in p.name() for p in ours)
    driver.send_signal(signal.SIGTERM)
    _, stderr = driver.communicate(timeout=120)
    assert driver.returncode == 143
    text = one_paragraph(stderr)
    assert "stopped by SIGTERM" in text and f"ensemble run --resume {tmp_path / 'stopped'}" in text
    _, alive = psutil.wait_procs(ours, timeout=15)
    assert [p.pid for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []

    resumed = start_cli("--resume", str(tmp_path / "stopped"), output=tmp_path, joining=joining_env(ray_instance))
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr[-2000:]
    report = json.loads((tmp_path / "stopped" / "report.json").read_text())
    for side in report["members"] + [report["baseline"]]:  # every epoch trained once, none twice
        assert [h["epoch"] for h in side["history"]] == list(range(1, len(side["history"]) + 1))
    assert [len(m["history"]) for m in report["members"]] == [4, 4]


def test_killing_rays_raylet_ends_with_the_resume_command(tmp_path):
    driver = start_cli(*run_args("raylet", LONGER, tmp_path), output=tmp_path)
    wait_for_line(driver, "member_00 epoch   1/")
    raylets = [p for p in psutil.Process(driver.pid).children(recursive=True) if p.name() == "raylet"]
    assert len(raylets) == 1  # this run's own raylet, nobody else's
    raylets[0].send_signal(signal.SIGKILL)
    _, stderr = driver.communicate(timeout=180)
    assert driver.returncode == 1
    text = " ".join(stderr.split())
    assert "Ray's own processes on this node (the raylet or the GCS) died" in text
    assert f"ensemble run --resume {tmp_path / 'raylet'}" in text
    assert (tmp_path / "raylet" / "member_00" / "checkpoint_000001" / "manifest.json").is_file()


def checkpoints_intact(run_dir: Path) -> list[int]:
    """Every checkpoint under `run_dir` loads, and nothing but a checkpoint temporary (a member stopped
    mid-write; swept on resume) is left over. Returns how many checkpoints each member has."""
    assert [p for p in run_dir.rglob(".*") if not p.name.startswith(".tmp-checkpoint-")] == []
    counts = []
    for member in sorted(run_dir.glob("member_*")):
        found = list_checkpoints(member)
        for _, path in found:
            load_checkpoint(path)
        counts.append(len(found))
    return counts


def test_a_full_tmpfs_names_the_path_and_the_room_left(tmp_path):
    mount = tmp_path / "small-disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root here; test_full_disk_injected... covers the same path")
    try:
        driver = start_cli(*run_args("full", TINY + ["train.epochs=40", "eager.rule=none"], mount), output=mount)
        _, stderr = driver.communicate(timeout=180)
        assert driver.returncode == 1
        text = one_paragraph(stderr)
        assert "the disk is full" in text and str(mount / "full") in text and "MiB free there" in text
        assert f"ensemble run --resume {mount / 'full'}" in text
        assert min(checkpoints_intact(mount / "full")) >= 1
    finally:
        subprocess.run(["umount", str(mount)], check=False)


FULL_DISK = textwrap.dedent("""
    import sys, ray
    from ensemble import cli
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"worker_process_setup_hook": "tests.fault_hooks.full_disk_at_the_second_epoch"})
    sys.exit(cli.main(["run", *sys.argv[1:]]))
""")


def test_full_disk_injected_at_the_checkpoint_writer_fails_cleanly(tmp_path):
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, "-c", FULL_DISK, "--output", str(tmp_path), "--name", "full",
                           *sets(LONGER)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 1, done.stderr[-2000:]
    text = one_paragraph(done.stderr)
    assert "the disk is full" in text and f"{tmp_path / 'full'}/member_0" in text and "MiB free there" in text
    assert f"ensemble run --resume {tmp_path / 'full'}" in text
    assert checkpoints_intact(tmp_path / "full")[0] == 2  # member_00 failed writing epoch 2: epochs 0 and 1, whole
    resumed = start_cli("--resume", str(tmp_path / "full"), output=tmp_path)  # room again: it finishes
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr[-2000:]
    assert checkpoints_intact(tmp_path / "full") == [5, 5] and not list((tmp_path / "full").rglob(".*"))


class FailsInEpochTwo(TinyAE):
    """member_00 (torch seed 1) raises on its 4th forward pass: epoch 1 is 2 training batches + 1 validation."""

    def __init__(self):
        super().__init__()
        self.calls, self.member_00 = 0, torch.initial_seed() == 1

    def forward(self, x):
        self.calls += 1
        if self.member_00 and self.calls > 3:
            raise ValueError("this layer expected 64 features")
        return super().forward(x)


def test_user_code_failing_in_epoch_2_names_member_epoch_and_exception(ray_instance, tmp_path):
    cfg = build_config({}, TINY + ["train.epochs=3", "eager.rule=none", "baseline.enabled=false", f"output={tmp_path}",
                                   "name=user"])
    started = time.perf_counter()
    with pytest.raises(MemberFailed) as caught:
        ensemble.run(cfg, autoencoder=FailsInEpochTwo, on_event=lambda e: None)
    assert time.perf_counter() - started < 120
    error = caught.value
    assert (error.name, error.epoch, type(error.cause)) == ("member_00", 2, ValueError)
    code, text = describe(error)
    assert code == 1 and text.startswith("member_00 failed in epoch 2: ValueError: this layer expected 64 features")
    assert "in forward" in error.remote_traceback and "\x1b[" not in error.remote_traceback
    assert (tmp_path / "user" / "member_00" / "checkpoint_000001" / "manifest.json").is_file()
