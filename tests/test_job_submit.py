"""The main job, unchanged, under `ray job submit` to a local head with token authentication."""

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.ports import free_ports
from tests.tiny import TINY

REPO = Path(__file__).resolve().parent.parent
DASHBOARD_PORT = "8365"  # not the default, so a user's own head on 8265 is never touched


@pytest.fixture()
def local_head():
    """`ray start --head --block` on loopback with a fresh token; killing it stops the whole head."""
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's unix sockets live under it
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(32), "PATH": bin_dir + os.pathsep + os.environ["PATH"]}
    env.pop("RAY_ADDRESS", None)
    # every port of our own: the session's Ray instance (tests/conftest.py) holds the defaults
    agent, grpc, metrics, runtime_env = free_ports(4)
    head = subprocess.Popen([shutil.which("ray", path=env["PATH"]), "start", "--head", "--block",
                             "--node-ip-address=127.0.0.1", "--num-cpus=2", "--port=6390",
                             f"--dashboard-port={DASHBOARD_PORT}", "--dashboard-host=127.0.0.1",
                             f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={grpc}",
                             f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}",
                             f"--temp-dir={temp_dir}"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        yield env
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=3)  # `ray start --block` can take longer to stop itself: then the group goes
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)


def submit(env, *args, timeout=300):
    """`ray job submit`, retried while the head's job agent is still starting."""
    for _ in range(20):
        done = subprocess.run([shutil.which("ray", path=env["PATH"]), "job", "submit",
                               "--address", f"http://127.0.0.1:{DASHBOARD_PORT}", *args],
                              env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)
        if "No available agent" not in done.stdout + done.stderr:
            return done
        time.sleep(3)
    return done


def wait_for_head(env, deadline=90):
    start = time.time()
    while time.time() - start < deadline:
        done = subprocess.run([shutil.which("ray", path=env["PATH"]), "job", "list",
                               "--address", f"http://127.0.0.1:{DASHBOARD_PORT}"],
                              env=env, capture_output=True, text=True, timeout=60)
        if done.returncode == 0:
            return
        time.sleep(2)
    pytest.fail("the local Ray head did not come up")


@pytest.mark.slow
def test_main_job_runs_under_ray_job_submit(local_head, tmp_path):
    wait_for_head(local_head)
    output = tmp_path / "out"
    sets = [a for o in TINY for a in ("--set", o)]
    done = submit(local_head, "--working-dir", ".", "--runtime-env-json",
                  json.dumps({"excludes": [".git", ".venv", "/runs"]}), "--",
                  "python", "-m", "ensemble", "run", "--output", str(output), "--name", "job", *sets)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in done.stdout + done.stderr
    report = json.loads((output / "job" / "report.json").read_text())
    assert len(report["members"]) == 2 and report["baseline"]["epochs_trained"] == 2

    # authentication stays on: a wrong token is refused
    refused = submit({**local_head, "RAY_AUTH_TOKEN": "wrong"}, "--", "python", "-c", "print(1)", timeout=120)
    assert refused.returncode != 0 and "invalid" in (refused.stdout + refused.stderr).lower()
