"""The main job, unchanged, under `ray job submit` to a local head with token authentication."""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from ensemble.scheduling.shipping import check_code_ships, local_modules
from tests.ports import free_ports
from tests.tiny import TINY
from tests.user_folder import ensemble_command, user_folder
from workers.errors import InputError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def local_head():
    """`ray start --head --block` on loopback with a fresh token, shared by this file's jobs (each job is
    its own driver, as on a team's head); killing it stops the whole head. Every port is a free one, not
    the defaults: the session's Ray instance (tests/conftest.py), a parallel test worker's head or a
    user's own head may hold those."""
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's unix sockets live under it
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(32), "PATH": bin_dir + os.pathsep + os.environ["PATH"]}
    env.pop("RAY_ADDRESS", None)
    # every port of our own: the session's Ray instance (tests/conftest.py) holds the defaults
    gcs, dashboard, agent, grpc, metrics, runtime_env = free_ports(6)
    head = subprocess.Popen([shutil.which("ray", path=env["PATH"]), "start", "--head", "--block",
                             "--node-ip-address=127.0.0.1", "--num-cpus=2", f"--port={gcs}",
                             f"--dashboard-port={dashboard}", "--dashboard-host=127.0.0.1",
                             f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={grpc}",
                             f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}",
                             f"--temp-dir={temp_dir}"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        yield {**env, "DASHBOARD": f"http://127.0.0.1:{dashboard}"}
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=3)  # `ray start --block` can take longer to stop itself: then the group goes
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)


def submit(env, *args, timeout=300, cwd=REPO):
    """`ray job submit` from `cwd`, retried while the head's job agent is still starting."""
    for _ in range(20):
        done = subprocess.run([shutil.which("ray", path=env["PATH"]), "job", "submit",
                               "--address", env["DASHBOARD"], *args],
                              env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd)
        if "No available agent" not in done.stdout + done.stderr:
            return done
        time.sleep(3)
    return done


def wait_for_head(env, deadline=90):
    start = time.time()
    while time.time() - start < deadline:
        done = subprocess.run([shutil.which("ray", path=env["PATH"]), "job", "list",
                               "--address", env["DASHBOARD"]],
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


def test_local_modules_are_the_ones_outside_installed_packages(tmp_path):
    import tests.tiny  # noqa: F401  (a module of this checkout: local)
    assert local_modules(["tests.tiny:TinyAE", "workers.models:ConvAutoencoder", "torch.nn:Linear",
                          "__main__:AE"]) == [("tests.tiny", tests.tiny.__file__)]
    assert local_modules(["tests.tiny:TinyAE"], installed=[REPO]) == []  # as if installed on the image
    check_code_ships("ray://head:10001", True, ["tests.tiny:TinyAE"])  # the user's own ray.init: theirs
    check_code_ships("127.0.0.1:6379", False, ["tests.tiny:TinyAE"])  # a job's driver: its working_dir ships
    with pytest.raises(InputError, match=r"ray job submit --address http://head:8265 --working-dir \. -- ensemble "
                                         r"run --set model.autoencoder=tests.tiny:TinyAE"):
        check_code_ships("ray://head:10001", False, ["workers.models:ConvAutoencoder", "tests.tiny:TinyAE"])


def answering_like_grpc() -> tuple[int, threading.Thread]:
    """A port where something answers an HTTP/2 preface with a SETTINGS frame, as a Ray Client server
    does: enough for the address check (ensemble/scheduling/address.py); Ray itself never connects."""
    server = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        with server:
            server.settimeout(120)
            try:
                while True:
                    connection, _ = server.accept()
                    with connection:
                        connection.recv(64)
                        connection.sendall(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")  # an empty SETTINGS frame
            except OSError:
                return
    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    return server.getsockname()[1], thread


def test_a_ray_client_address_with_a_local_class_is_refused_before_ray_with_both_ways(tmp_path):
    folder = user_folder(tmp_path)
    port, _ = answering_like_grpc()  # the address check passes; the refusal comes before ray.init
    done = ensemble_command(folder, "run", "--address", f"ray://127.0.0.1:{port}", "--set",
                            "model.autoencoder=mymods:AE", "--set", "data.name=digits", "--set", "members=2")
    message = " ".join(done.stderr.split())
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert f"--address ray://127.0.0.1:{port} connects through Ray Client" in message
    assert f"mymods ({folder / 'mymods.py'})" in message
    assert "ray job submit --address http://127.0.0.1:8265 --working-dir . -- ensemble run --set " \
           "model.autoencoder=mymods:AE" in message
    assert f'ray.init("ray://127.0.0.1:{port}", runtime_env={{"py_modules": [mymods]}})' in message


@pytest.mark.slow
def test_a_custom_class_travels_with_ray_job_submit_working_dir(local_head, tmp_path):
    """The cluster page's first way: the folder holding mymods.py shipped as the job's working_dir; the
    members' actors import the class there (nothing else puts that folder on their path)."""
    folder = user_folder(tmp_path)
    wait_for_head(local_head)
    output = tmp_path / "out"
    sets = [a for o in ["model.autoencoder=mymods:AE", "members=2", "train.epochs=1", "data.name=digits",
                        "data.train_size=150", "data.val_size=60", "data.test_size=150", "eager.rule=none",
                        "baseline.max_epochs=1"] for a in ("--set", o)]
    done = submit(local_head, "--working-dir", ".", "--", "python", "-m", "ensemble", "run", "--quiet",
                  "--output", str(output), "--name", "custom", *sets, cwd=folder)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((output / "custom" / "report.json").read_text())
    assert [m["architecture"]["class"] for m in report["members"]] == ["mymods:AE"] * 2
    assert report["baseline"]["architecture"]["class"] == "mymods:AE"
