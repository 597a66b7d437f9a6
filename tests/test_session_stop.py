"""A local Ray instance that this process started is stopped whole, its autoscaler monitor first (Ray's own
order leaves it hanging for a second): at a run's end (`stop_local_ray`) and, for the session the
estimator shares, when the process exits. None of Ray's processes is left behind."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.session_ray import alive

STARTS_AND_STOPS = """
import json, ray
from ensemble.scheduling.session import ray_session
with ray_session(1):
    processes = {kind: [info.process.pid for info in infos]
                 for kind, infos in ray._private.worker._global_node.all_processes.items()}
print(json.dumps({"processes": processes, "ray_up": ray.is_initialized()}))
"""


SHARES_AND_EXITS = """
import atexit, json, ray
monitor = []
# registered before the session's own exit hook, so it runs after it and before Ray's (last in, first out)
atexit.register(lambda: print(json.dumps({"monitor_stopped_before_ray_exits": monitor[0].poll() is not None})))
from ensemble.scheduling.session import shared_session
shared_session()
node = ray._private.worker._global_node
monitor.append(node.all_processes["monitor"][0].process)
print(json.dumps({"processes": {kind: [info.process.pid for info in infos]
                                for kind, infos in node.all_processes.items()}}))
"""


def run_alone(script: str) -> list[dict]:
    """`script` in a fresh process that starts its own Ray; the JSON lines it printed."""
    root = Path(__file__).resolve().parent.parent
    environment = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**environment, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr
    assert "Error in atexit" not in done.stderr, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def assert_all_exit(processes: dict[str, list[int]]) -> None:
    pids = [pid for kind in processes.values() for pid in kind]
    deadline = time.time() + 30
    while any(alive(pid) for pid in pids) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(alive(pid) for pid in pids)


@pytest.mark.slow
def test_a_local_ray_a_session_started_is_stopped_with_every_process_it_ran():
    (seen,) = run_alone(STARTS_AND_STOPS)
    assert seen["ray_up"] is False
    assert "monitor" in seen["processes"]  # the process the shortcut kills is one Ray started here
    assert_all_exit(seen["processes"])


@pytest.mark.slow
def test_the_shared_session_stops_its_monitor_before_rays_exit_hook():
    seen, at_exit = run_alone(SHARES_AND_EXITS)
    assert at_exit == {"monitor_stopped_before_ray_exits": True}
    assert_all_exit(seen["processes"])
