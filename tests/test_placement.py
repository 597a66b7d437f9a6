"""Resource decisions as pure functions: infeasible shares named, the baseline's share, CPUs lent by
idle actors, parallel slots, devices and threads."""

import statistics
import subprocess
import sys

import pytest

from ensemble.scheduling.placement import (
    Share,
    baseline_share,
    heads_in_actors,
    infeasible_reason,
    lent_threads,
    parallel_slots,
)
from workers.actor import choose_device, torch_threads

TWO_CPU = [{"CPU": 2.0}]
GPU_NODE = [{"CPU": 8.0, "GPU": 2.0}]


def test_infeasible_resources_are_named():
    assert infeasible_reason(TWO_CPU, Share(1, 0), "each member") is None
    reason = infeasible_reason(TWO_CPU, Share(4, 0), "each member")
    assert "4 CPU" in reason and "largest node" in reason
    assert "GPU" in infeasible_reason(TWO_CPU, Share(1, 0.5), "each member")
    assert infeasible_reason(GPU_NODE, Share(1, 0.5), "each member") is None
    assert "no alive nodes" in infeasible_reason([], Share(1, 0), "x")


def test_baseline_gets_the_ensembles_total_capped_by_one_node():
    assert baseline_share(5, Share(1, 0), TWO_CPU) == Share(2, 0)
    assert baseline_share(5, Share(1, 0.2), GPU_NODE) == Share(5, 1.0)
    assert baseline_share(2, Share(1, 0.25), GPU_NODE) == Share(2, 0.5)


def test_idle_actors_lend_their_cpus_to_the_members_still_training():
    one = Share(1.0, 0.0)
    assert lent_threads(one, running=1, idle=1) == 2  # the last member of 2 slots gets both cores
    assert lent_threads(one, running=2, idle=1) == 1  # 1.5 CPU each: threads are whole, never below the share
    assert lent_threads(one, running=2, idle=2) == 2 and lent_threads(one, running=0, idle=3) == 1
    assert lent_threads(Share(2.0, 0.0), running=1, idle=3) == 8
    assert lent_threads(Share(1.0, 0.5), running=1, idle=1) == 1  # GPU members keep theirs


def test_parallel_slots_follow_cpu_and_gpu_shares():
    assert parallel_slots(TWO_CPU, Share(1, 0)) == 2
    assert parallel_slots(GPU_NODE, Share(1, 0.5)) == 4
    assert parallel_slots(GPU_NODE + TWO_CPU, Share(1, 0)) == 10


def test_device_and_thread_decisions():
    assert choose_device(["3"], cuda_available=True) == "cuda:0"
    assert choose_device(["3"], cuda_available=False) == "cpu"
    assert choose_device([], cuda_available=True) == "cpu"
    assert torch_threads(0.4) == 1 and torch_threads(2) == 2 and torch_threads(2.5) == 2


FAULTS_PER_STEP = """
import resource, sys, torch
from workers.actor import keep_freed_memory
from workers.models import CAEFactory
torch.set_num_threads(1)
if sys.argv[1] == "keep":
    assert keep_freed_memory()
model, x = CAEFactory((1, 28, 28), (6, 16), 5, "relu", "max")(), torch.rand(100, 1, 28, 28)
model(x).sum().backward()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    model(x).pow(2).sum().backward()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's mallopt")
def test_a_fresh_process_keeping_freed_memory_stops_page_faulting_on_every_batch():
    """What MemberActor does at start: without it a fresh process faults ~2,500 pages per step. The median
    of 3 processes each way: now and then a process without it hardly faults (33 faults in 20 steps once in
    CI, against 14,000-72,000 in 30 runs here; why was not found), and the count with it ranges 33-2,500."""
    faults = {mode: statistics.median(int(subprocess.run([sys.executable, "-c", FAULTS_PER_STEP, mode],
                                                         capture_output=True, text=True, check=True).stdout)
                                      for _ in range(3)) for mode in ("keep", "default")}
    assert faults["keep"] * 10 < faults["default"]


def test_members_fit_their_own_heads_in_their_actors_only_when_each_actor_trains_several():
    assert not heads_in_actors(members=5, slots=2)   # the default run: the driver fits 5 heads beside its own
    assert heads_in_actors(members=40, slots=2)      # the wide bench: 20 members an actor
    assert heads_in_actors(members=24, slots=6)      # the 3-node test: 4 members an actor
    assert not heads_in_actors(members=100, slots=64)
    assert heads_in_actors(members=8, slots=0)       # scale from zero: no slot yet counts as one
