"""Scale-from-zero GPU workers on a real Ray autoscaler (Ray's fake multi-node provider, on
127.0.0.1): a run waits for the autoscaler to add a node that can hold a member, and says so;
resources no node type can hold still exit 2 at once."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fake_cluster import fake_cluster
from tests.tiny import TINY

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
GPU_WORKERS = {"gpu": {"resources": {"CPU": 1, "GPU": 1}, "node_config": {}, "min_workers": 0, "max_workers": 1}}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A CPU head and a GPU worker type at min 0: no GPU node until the autoscaler adds one."""
    with fake_cluster(tmp_path_factory.mktemp("fake-cluster"), GPU_WORKERS) as env:
        yield env


def ensemble_run(env, output, *sets):
    command = [sys.executable, "-m", "ensemble", "run", "--output", str(output), "--name", "zero"]
    command += [arg for value in sets for arg in ("--set", value)]
    return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=400)


def test_a_gpu_member_waits_for_the_autoscaler_to_add_a_gpu_node(cluster, tmp_path):
    done = ensemble_run(cluster, tmp_path, *TINY, "members=1", "baseline.enabled=false",
                        "resources.gpus_per_member=1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert ("Waiting: no live node can hold each member (1 CPU, 1 GPU) yet; waiting for the autoscaler to add a "
            "'gpu' node (1 CPU, 1 GPU)") in done.stdout
    report = json.loads((tmp_path / "zero" / "report.json").read_text())
    assert [m["status"] for m in report["members"]] == ["done"]
    assert report["members"][0]["placement"]["gpu_ids"]  # it ran on the GPU node the autoscaler added


def test_resources_no_node_type_can_hold_exit_2_at_once(cluster, tmp_path):
    started = time.time()
    done = ensemble_run(cluster, tmp_path, *TINY, "resources.gpus_per_member=2")
    message = " ".join(done.stderr.split())
    assert done.returncode == 2, done.stderr[-3000:]
    assert "asks for 1 CPU, 2 GPU" in message and "its node types are gpu (1 CPU, 1 GPU)" in message
    assert time.time() - started < 90 and not (tmp_path / "zero").exists()
