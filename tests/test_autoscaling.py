"""Start, wait for the autoscaler, or exit 2: the decision on recorded cluster states (no Ray)."""

from ensemble.scheduling.autoscaling import Autoscaler, NodeType, can_launch, capacity
from ensemble.scheduling.placement import Share

GPU_MEMBER = Share(2.0, 1.0)
# the cluster of deploy/cluster.yaml just after `ray up`: a CPU-0 head and no GPU worker yet
HEAD_ONLY = [{"CPU": 0.0, "memory": 8e9, "node:__internal_head__": 1.0}]
GPU_TYPE = NodeType("gpu", {"CPU": 4, "GPU": 1}, max_workers=5)
CPU_TYPE = NodeType("cpu", {"CPU": 8}, max_workers=10)


def test_a_live_node_that_holds_a_member_means_go():
    assert capacity([{"CPU": 4.0, "GPU": 1.0}], None, GPU_MEMBER, "each member").action == "go"
    assert capacity(HEAD_ONLY + [{"CPU": 4.0, "GPU": 1.0}], Autoscaler((GPU_TYPE,)), GPU_MEMBER, "m").action == "go"


def test_no_autoscaler_and_no_node_that_fits_exits_at_once():
    room = capacity(HEAD_ONLY, None, GPU_MEMBER, "each member")
    assert room.action == "fail"
    assert "2 CPU, 1 GPU" in room.message and "no autoscaler" in room.message


def test_an_autoscaler_with_a_node_type_that_fits_means_wait_and_say_why():
    room = capacity(HEAD_ONLY, Autoscaler((CPU_TYPE, GPU_TYPE), {"gpu": 2}), GPU_MEMBER, "each member")
    assert room.action == "wait"
    assert "'gpu' node (4 CPU, 1 GPU)" in room.message and "launching now: 2 x gpu" in room.message


def test_an_autoscaler_without_a_node_type_that_fits_exits_at_once():
    room = capacity(HEAD_ONLY, Autoscaler((CPU_TYPE, NodeType("small-gpu", {"CPU": 1, "GPU": 1}))), GPU_MEMBER, "m")
    assert room.action == "fail" and "cpu (8 CPU), small-gpu (1 CPU, 1 GPU)" in room.message
    disabled = NodeType("gpu", {"CPU": 4, "GPU": 1}, max_workers=0)  # a type it may never launch
    assert capacity(HEAD_ONLY, Autoscaler((disabled,)), GPU_MEMBER, "m").action == "fail"
    assert capacity(HEAD_ONLY, Autoscaler(()), GPU_MEMBER, "m").action == "fail"


def test_an_autoscaler_that_does_not_publish_its_node_types_is_given_the_chance():
    room = capacity(HEAD_ONLY, Autoscaler(None), GPU_MEMBER, "each member")
    assert room.action == "wait" and "does not say which node types" in room.message


# `autoscaler_report`s as Ray 2.60's monitor wrote them (trimmed): a local `ray.init`, whose monitor
# runs a read-only provider, and a cluster started with an autoscaling config (a fake multi-node one)
LOCAL = {"active_nodes": {"node_202920ade37cea07374f6ad67daafd92ec1b13ac7e2d148a2796fecf": 1}, "idle_nodes": None,
         "pending_nodes": [], "pending_launches": {}, "failed_nodes": [], "legacy": True,
         "node_type_mapping": {"127.0.0.1": "node_202920ade37cea07374f6ad67daafd92ec1b13ac7e2d148a2796fecf"}}
AUTOSCALING = {"active_nodes": {}, "idle_nodes": None, "pending_nodes": [], "pending_launches": {"gpu": 1},
               "failed_nodes": [], "pending_resources": {"CPU": 1, "GPU": 1}, "legacy": True,
               "node_type_mapping": {"fffffffffffffffffffffffffffffffffffffffffffffffffff00000": "ray.head.default"}}


def test_the_read_only_monitor_of_every_cluster_is_no_autoscaler():
    assert not can_launch(LOCAL)
    assert can_launch(AUTOSCALING)
    assert not can_launch({})  # nothing reported yet: no autoscaler seen
