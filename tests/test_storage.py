"""Storage across nodes: members on other nodes train on their node's disk; only the driver writes the run directory."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import torch

from ensemble.scheduling.pool import handoff
from workers.checkpoints import CheckpointError, checkpoint_files, list_checkpoints, load_checkpoint, save_checkpoint
from workers.layout import HISTORY, OUTCOME
from workers.scratch import SCRATCH_ENV, Workdir, machine, receive

ROOT = Path(__file__).resolve().parent.parent


def save(member_dir, epoch):
    return save_checkpoint(member_dir, epoch, {"w": torch.full((3,), float(epoch))},
                           {"generator": torch.zeros(4, dtype=torch.uint8)}, {"history": []})


def test_remote_member_is_seeded_from_the_run_directory_and_sends_back_only_news(tmp_path, monkeypatch):
    run_member = tmp_path / "runs" / "r" / "member_00"
    for epoch in (0, 1, 2):
        save(run_member, epoch)
    (run_member / "checkpoint_000001" / "state.pt").write_bytes(b"damaged")
    monkeypatch.setenv(SCRATCH_ENV, str(tmp_path / "node-disk"))
    given = handoff(run_member, driver=machine("driver-node"))
    # the newest valid checkpoint to train on, and the earlier valid ones its rule may select and the
    # untrained reference needs when the member finishes and encodes them; the damaged one stays behind
    assert sorted(given.files) == [f"checkpoint_00000{e}/{name}" for e in (0, 2)
                                   for name in ("manifest.json", "model.safetensors", "state.pt")]

    work = Workdir(run_member, given, here=machine("other-node"))
    assert work.remote and work.path.is_relative_to(tmp_path / "node-disk") and work.path.name == "member_00"
    assert [e for e, _ in list_checkpoints(work.path)] == [0, 2]
    assert work.news() == {}  # what the driver seeded is not sent back
    save(work.path, 3)
    (work.path / HISTORY).write_text("{}\n")
    news = work.news()
    assert sorted(news) == ["checkpoint_000003/manifest.json", "checkpoint_000003/model.safetensors",
                            "checkpoint_000003/state.pt", HISTORY]
    receive(run_member, news)
    assert load_checkpoint(run_member / "checkpoint_000003").weights["w"].tolist() == [3.0] * 3
    assert (run_member / HISTORY).read_text() == "{}\n" and list(work.news()) == [HISTORY]
    work.close()
    assert not work.path.exists() and not work.path.parent.exists()


def test_a_restarted_member_forgets_its_dead_actors_scratch(tmp_path, monkeypatch):
    run_member = tmp_path / "r" / "member_00"
    save(run_member, 0)
    monkeypatch.setenv(SCRATCH_ENV, str(tmp_path / "disk"))
    given = handoff(run_member, machine("driver"))
    stale = Workdir(run_member, given, machine("node")).path
    save(stale, 1)  # trained, but the actor died before the driver got epoch 1
    again = Workdir(run_member, given, machine("node"))
    assert [e for e, _ in list_checkpoints(again.path)] == [0]


def test_finished_member_gets_only_its_outcome(tmp_path):
    run_member = tmp_path / "r" / "member_00"
    save(run_member, 0)
    (run_member / OUTCOME).write_text('{"done": true}')
    assert handoff(run_member, machine("d")).files == {OUTCOME: b'{"done": true}'}


def test_driver_machine_trains_in_the_run_directory_and_sends_nothing(tmp_path):
    run_member = tmp_path / "r" / "member_00"
    work = Workdir(run_member, handoff(run_member, machine("n")), machine("n"))
    assert not work.remote and work.path == run_member
    save(run_member, 0)
    assert work.news() == {}


def test_receive_refuses_damaged_checkpoints_and_foreign_names(tmp_path):
    files = {f"checkpoint_000001/{k}": v for k, v in checkpoint_files(save(tmp_path / "a", 1)).items()}
    damaged = {**files, "checkpoint_000001/state.pt": files["checkpoint_000001/state.pt"][:-1]}
    with pytest.raises(CheckpointError, match="does not match its manifest"):
        receive(tmp_path / "b", damaged)
    with pytest.raises(CheckpointError):  # a checkpoint sent under another epoch's name
        receive(tmp_path / "b", {k.replace("000001", "000002"): v for k, v in files.items()})
    for name in ("../escape", "/etc/x", "checkpoint_000001/../../x", "notes.txt"):
        with pytest.raises(ValueError, match="refusing"):
            receive(tmp_path / "b", {name: b"x"})
    assert not list_checkpoints(tmp_path / "b") and not (tmp_path / "escape").exists()


# Two Ray nodes on this machine, like a cluster whose nodes each have their own disk: a head with
# no CPUs (as deploy/cluster.yaml and kuberay/rayjob.yaml set it, so members never land there)
# that runs the driver, and a worker node whose "local disk" is node-a/. member_00 stalls in its
# second epoch on node a; once the driver has its first epoch, node a is removed (lost, with its
# disk) and node-b/ joins: the members restart there, seeded from the run directory. Events go
# through the object store (not inlined), as real checkpoints of >100 KB do.
TWO_NODES = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    import ray, torch
    from ray.cluster_utils import Cluster
    from torch import nn
    import ensemble, ensemble.scheduling.pool
    from ensemble.config import build_config
    from tests.tiny import TINY
    from workers.events import Done, EpochEnded, Restarted, Started
    from workers.models import CAEFactory

    class StallsOnNodeA(nn.Module):
        \"\"\"TINY's CAE; member_00 (torch seed 1) hangs in epoch 2 on node a (epoch 1: 3 forward calls).\"\"\"
        def __init__(self):
            super().__init__()
            self.cae, self.calls = CAEFactory((1, 8, 8), (4, 8))(), 0
            self.stall = torch.initial_seed() == 1 and os.environ.get("ENSEMBLE_SCRATCH", "").endswith("node-a")
        def encode(self, x):
            return self.cae.encode(x)
        def forward(self, x):
            self.calls += 1
            if self.stall and self.calls > 3:
                time.sleep(300)
            return self.cae(x)

    root = Path(sys.argv[1])
    disk = lambda name: {"ENSEMBLE_SCRATCH": str(root / name)}
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False, "env_vars": disk("head"),
        "_system_config": {"max_direct_call_object_size": 1024}})
    node_a = cluster.add_node(num_cpus=2, env_vars=disk("node-a"))
    ray.init(address=cluster.address, log_to_driver=False)
    nodes = {"head": cluster.head_node.node_id, "a": node_a.node_id}

    written = {}  # every file the driver wrote into the run directory -> its inode
    def receive(member_dir, files, real=ensemble.scheduling.pool.receive):
        real(member_dir, files)
        written.update({str(Path(member_dir) / name): (Path(member_dir) / name).stat().st_ino for name in files})
    ensemble.scheduling.pool.receive = receive

    events = []
    def on_event(event):
        entry = {"event": type(event).__name__, "name": event.name}
        if isinstance(event, Started):
            entry["placement"] = event.placement
        if isinstance(event, Done):
            entry["resumed_from"] = event.outcome.resumed_from
        if isinstance(event, Restarted):  # why, should a test see more restarts than the one node lost
            entry["cause"], entry["at"] = event.cause, event.at
        events.append(entry)
        if isinstance(event, EpochEnded) and event.name == "member_00" and "b" not in nodes:
            cluster.remove_node(node_a)
            nodes["b"] = cluster.add_node(num_cpus=2, env_vars=disk("node-b")).node_id

    sets = TINY + ["train.epochs=3", "eager.epoch=3", "baseline.enabled=false", f"output={root / 'runs'}", "name=two"]
    result = ensemble.run(build_config({}, sets), autoencoder=StallsOnNodeA, on_event=on_event)
    run_dir = result.run_dir
    shipped = [p for p in run_dir.glob("member_*/**/*")  # progress.csv and TensorBoard: the driver's own logs
               if p.is_file() and p.name != "progress.csv" and not p.name.startswith("events.out.tfevents")]
    on_disk = {str(p): p.stat().st_ino for p in shipped}
    print(json.dumps({"nodes": nodes, "driver": ray.get_runtime_context().get_node_id(), "events": events,
                      "files": len(on_disk), "not_from_driver": sorted(p for p, ino in on_disk.items()
                                                                       if written.get(p) != ino),
                      "members": [m.model_dump(include={"history", "restarts", "selected_epoch"})
                                  for m in result.report.members],
                      "accuracy": result.report.ensemble.test_accuracy,
                      "untrained_accuracy": result.report.ensemble.untrained_test_accuracy,
                      "left_on_node_disks": sorted(str(p.relative_to(root)) for d in ("head", "node-a", "node-b")
                                                   if (root / d).exists() for p in (root / d).rglob("*"))}))
    ray.shutdown()
    cluster.shutdown()
""")


@pytest.mark.slow
@pytest.mark.fault
def test_two_nodes_with_local_disks_driver_gets_every_file_and_lost_node_resumes(tmp_path):
    ray_tmp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # its own Ray temp dir: short socket paths,
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_TMPDIR": str(ray_tmp)}                         # and no other Ray's address file is touched
    env.pop("RAY_ADDRESS", None)
    try:
        done = subprocess.run([sys.executable, "-c", TWO_NODES, str(tmp_path)], env=env, capture_output=True,
                              text=True, timeout=240, cwd=ROOT)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    nodes, events = out["nodes"], out["events"]
    assert out["driver"] == nodes["head"]

    # every actor trained on its worker node's own disk, never in the run directory
    starts = [e for e in events if e["event"] == "Started"]
    for start in starts:
        node = {nodes["a"]: "node-a", nodes["b"]: "node-b"}[start["placement"]["node_id"]]
        assert Path(start["placement"]["directory"]).is_relative_to(tmp_path / node)

    # node a was lost in member_00's second epoch: it restarted on node b and resumed from epoch 1
    member_00 = out["members"][0]
    assert member_00["restarts"] == 1, [e for e in events if e["name"] == "member_00" and e["event"] != "EpochEnded"]
    assert [s["placement"]["node_id"] for s in starts if s["name"] == "member_00"] == [nodes["a"], nodes["b"]]
    assert [e["resumed_from"] for e in events if e["event"] == "Done" and e["name"] == "member_00"] == [1]
    for member in out["members"]:
        assert [h["epoch"] for h in member["history"]] == [1, 2, 3] and member["selected_epoch"] == 3

    # the run directory has everything selection, the report and a resume need, all written by the driver
    run_dir = tmp_path / "runs" / "two"
    for name in ("member_00", "member_01"):
        assert [e for e, _ in list_checkpoints(run_dir / name)] == [0, 1, 2, 3]
        assert (run_dir / name / OUTCOME).is_file() and (run_dir / name / HISTORY).read_text().count("\n") == 3
        assert (run_dir / name / "progress.csv").read_text().count("\n") == 1 + 3  # written from the events
    assert out["files"] == 2 * (4 * 3 + 2) and out["not_from_driver"] == []
    assert out["accuracy"] > 0.5 and out["untrained_accuracy"] > 0.5  # 10 classes: chance is 0.1

    # finished members freed their scratch; only what node a held when it was lost remains there
    assert all(p.startswith("node-a") for p in out["left_on_node_disks"]), out["left_on_node_disks"]
