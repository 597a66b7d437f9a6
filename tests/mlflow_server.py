"""A real MLflow tracking server on 127.0.0.1 for tests: `mlflow server` from the full `mlflow` package
(the server, SQLAlchemy, the UI), which the `mlflow` extra does not install, so it lives in a virtual
environment of its own: .venv-mlflow-server/ in the checkout (git ignores it). `.ci/run` creates it
beside the tests and keeps it between runs; a test that finds none creates it the same way, and is
skipped, saying why, only when the package cannot be installed here."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from tests.ports import free_ports

ROOT = Path(__file__).resolve().parent.parent
SERVER_VENV = ROOT / ".venv-mlflow-server"


def mlflow_command() -> Path:
    """The `mlflow` command of the server's environment (ENSEMBLE_MLFLOW_SERVER names another), created
    now when it is missing."""
    given = os.environ.get("ENSEMBLE_MLFLOW_SERVER")
    if given:
        return Path(given)
    command = SERVER_VENV / "bin" / "mlflow"
    with open(f"{SERVER_VENV}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # `.ci/run` builds it in the background while holding this lock
        if not command.exists():
            _create(command)
    return command


def _create(command: Path) -> None:
    made = subprocess.run(f"{sys.executable} -m venv {SERVER_VENV} && {SERVER_VENV}/bin/pip install -q mlflow",
                          shell=True, capture_output=True, text=True, timeout=1200)
    if made.returncode != 0 or not command.exists():
        pytest.skip(f"the full mlflow package could not be installed into {SERVER_VENV} for the tracking server: "
                    f"{made.stderr.strip()[-500:]}")


@contextmanager
def mlflow_server(folder: Path) -> Iterator[str]:
    """`mlflow server` with a sqlite backend and artifacts in `folder`, on a free port of 127.0.0.1: its
    URI while the `with` lasts; stopped (its process group, which this started) afterwards."""
    command = mlflow_command()
    port = free_ports(1)[0]
    uri = f"http://127.0.0.1:{port}"
    log = (folder / "server.log").open("w")
    server = subprocess.Popen(
        [str(command), "server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
         "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_healthy(uri, server, folder / "server.log")
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def wait_until_healthy(uri: str, server: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    """Until GET /health answers (a loaded 2-core machine needs a minute for the database's migrations)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {server.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise RuntimeError(f"mlflow server did not answer within {timeout:.0f} s: {log.read_text()[-2000:]}")
