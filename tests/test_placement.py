from ensemble.placement import Share, baseline_share, infeasible_reason, parallel_slots
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


def test_parallel_slots_follow_cpu_and_gpu_shares():
    assert parallel_slots(TWO_CPU, Share(1, 0)) == 2
    assert parallel_slots(GPU_NODE, Share(1, 0.5)) == 4
    assert parallel_slots(GPU_NODE + TWO_CPU, Share(1, 0)) == 10


def test_device_and_thread_decisions():
    assert choose_device(["3"], cuda_available=True) == "cuda:0"
    assert choose_device(["3"], cuda_available=False) == "cpu"
    assert choose_device([], cuda_available=True) == "cpu"
    assert torch_threads(0.4) == 1 and torch_threads(2) == 2 and torch_threads(2.5) == 2
