"""A Ray cluster with a real autoscaler on this machine: Ray's fake multi-node provider launches
worker "nodes" (raylets with the resources their node type declares, a GPU included) as the
autoscaler decides. Everything binds 127.0.0.1 and uses token authentication; only the
processes of this cluster's own session are stopped afterwards (never `ray stop`, which would
stop every Ray on the machine)."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

HEAD = "ray.head.default"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def autoscaling_config(port: int, head_cpus: int, worker_types: dict) -> dict:
    """A cluster-launcher config for the fake multi-node provider."""
    types = {HEAD: {"resources": {"CPU": head_cpus}, "node_config": {}, "max_workers": 0}, **worker_types}
    return {"cluster_name": "fake", "max_workers": sum(t.get("max_workers", 0) for t in worker_types.values()),
            "upscaling_speed": 1.0, "idle_timeout_minutes": 5,
            "provider": {"type": "fake_multinode", "gcs_address": f"127.0.0.1:{port}", "disable_node_updaters": True,
                         "disable_launch_config_check": True},  # as on KubeRay: nodes start ready
            "auth": {"ssh_user": "ray"},
            "available_node_types": types, "head_node_type": HEAD,
            "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
            "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
            "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": []}


@contextmanager
def fake_cluster(tmp_path: Path, worker_types: dict, head_cpus: int = 1) -> Iterator[dict]:
    """Start the head (`ray start --head --block`, with the autoscaler) and yield the environment a
    driver needs to join it (RAY_ADDRESS and the cluster's token)."""
    port = free_port()
    config = tmp_path / "autoscaling.json"
    config.write_text(json.dumps(autoscaling_config(port, head_cpus, worker_types)))
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), RAY_FAKE_CLUSTER="1",
               AUTOSCALER_UPDATE_INTERVAL_S="1", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0",
               PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    head = subprocess.Popen([str(bin_dir / "ray"), "start", "--head", "--block", f"--port={port}",
                             f"--num-cpus={head_cpus}", "--include-dashboard=false", "--disable-usage-stats",
                             f"--autoscaling-config={config}"],
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, head)
        yield {**env, "RAY_ADDRESS": f"127.0.0.1:{port}"}
    finally:
        session = session_of(port)
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=10)
        except subprocess.TimeoutExpired:
            head.kill()
        stop_session_processes(session)


def wait_for_port(port: int, head: subprocess.Popen, seconds: float = 90) -> None:
    deadline = time.time() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if head.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"the fake cluster's head did not start (exit {head.poll()})") from None
            time.sleep(0.5)


def session_of(port: int):
    """The session name of the cluster whose GCS listens on `port`, read off its own processes
    (they name the GCS address and their session directory)."""
    import psutil
    for process in psutil.process_iter(["cmdline"]):
        args = process.info.get("cmdline") or []
        if f"--gcs-address=127.0.0.1:{port}" in args:
            found = re.search(r"session_\d{4}-\d\d-\d\d_[\d_-]+", " ".join(args))
            if found:
                return found.group(0)
    return None


def stop_session_processes(session) -> None:
    """The worker nodes the fake provider started outlive the head: stop this session's processes."""
    import psutil
    if not session:
        return
    time.sleep(1)
    mine = [p for p in psutil.process_iter(["cmdline"]) if any(session in arg for arg in p.info.get("cmdline") or [])]
    for process in mine:
        try:
            process.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(mine, timeout=3)  # then killed: only this session's processes
    for process in alive:
        process.kill()
