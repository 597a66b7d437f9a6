"""A wide run on three nodes with their own disks: every member's features and its own head's
predictions reach the driver from its actor, a node lost mid-run costs no epoch, and the figures are
the single-node run's."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from workers.checkpoints import list_checkpoints

ROOT = Path(__file__).resolve().parent.parent
MEMBERS = 24

# The same 24 tiny members (digits 8x8, 2 epochs, no baseline) first on one node, then on a cluster
# of three 2-CPU worker nodes whose "local disks" are node-a/, node-b/, node-c/, behind a head with no
# CPUs that runs the driver. Node a is removed once 4 members are done and one of its members has
# just ended an epoch. Idle CPUs are not lent (a member's thread count would then depend on timing,
# and with it the last bits of its losses), so both runs compute the same numbers.
WIDE = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import ray
    from ray.cluster_utils import Cluster
    import ensemble, ensemble.scheduling.pool as pool
    from ensemble.config import build_config
    from tests.tiny import TINY
    from workers.events import Done, EpochEnded, Started

    root = Path(sys.argv[1])
    SETS = TINY + [f"members={MEMBERS}", "train.epochs=2", "eager.rule=none", "baseline.enabled=false",
                   "resources.lend_idle_cpus=false", "resources.max_restarts=3", f"output={root / 'runs'}"]

    sent = {}  # member -> the epochs and splits its Done brought features for, with their shapes
    kept = {}  # member -> whether the run kept its shipment in the object store for the fits (not a copy)
    def on_shipment(self, work, shipment, ref=None, real=pool.MemberPool.on_shipment):
        if shipment.features:
            sent[shipment.event.name] = {str(epoch): {split: list(array.shape) for split, array in splits.items()}
                                         for epoch, splits in shipment.features.items()}
        real(self, work, shipment, ref)
        if shipment.features:
            kept[shipment.event.name] = ref is not None and self._runs[shipment.event.name].shipment is ref
    pool.MemberPool.on_shipment = on_shipment

    def figures(report):
        return {"members": [{"name": m.name, "selected_epoch": m.selected_epoch, "restarts": m.restarts,
                             "epochs": [h.epoch for h in m.history], "val_losses": [h.val_loss for h in m.history]}
                            for m in report.members],
                "accuracy": report.ensemble.test_accuracy, "untrained": report.ensemble.untrained_test_accuracy,
                "member_accuracies": [m.test_accuracy for m in report.members]}

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    single = figures(ensemble.run(build_config({}, SETS + ["name=single"]), on_event=lambda e: None).report)
    ray.shutdown()
    single_sent, single_kept = dict(sent), dict(kept)
    sent.clear(), kept.clear()

    disk = lambda name: {"ENSEMBLE_SCRATCH": str(root / name)}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False,
                                                            "env_vars": disk("head")})
    workers = {name: cluster.add_node(num_cpus=2, env_vars=disk("node-" + name)) for name in "abc"}
    ray.init(address=cluster.address, log_to_driver=False)
    nodes = {name: node.node_id for name, node in workers.items()}
    where, started_on, done, removed = {}, set(), [], []  # member -> its node now; every node a member started on
    def on_event(event):
        if isinstance(event, Started):
            where[event.name] = event.placement["node_id"]
            started_on.add(event.placement["node_id"])
        if isinstance(event, Done):
            done.append(event.name)
        if (isinstance(event, EpochEnded) and not removed and len(done) >= 4
                and where.get(event.name) == nodes["a"]):
            removed.append(event.name)
            cluster.remove_node(workers["a"])
    result = ensemble.run(build_config({}, SETS + ["name=wide"]), on_event=on_event)
    print(json.dumps({"single": single, "wide": figures(result.report), "sent": sent, "single_sent": single_sent,
                      "kept": kept, "single_kept": single_kept,
                      "removed_during": removed, "nodes": nodes, "run_dir": str(result.run_dir),
                      "ran_on": sorted(started_on)}))
    ray.shutdown()
    cluster.shutdown()
""").replace("{MEMBERS}", str(MEMBERS))


@pytest.mark.slow
@pytest.mark.fault
def test_24_members_on_three_nodes_send_their_features_and_lose_no_epoch_when_a_node_goes(tmp_path):
    ray_tmp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short socket paths, no other Ray's files touched
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_TMPDIR": str(ray_tmp)}
    env.pop("RAY_ADDRESS", None)
    try:
        done = subprocess.run([sys.executable, "-c", WIDE, str(tmp_path)], env=env, capture_output=True,
                              text=True, timeout=420, cwd=ROOT)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    names = [f"member_{i:02d}" for i in range(MEMBERS)]
    single, wide = out["single"], out["wide"]

    # every member's actor sent its selected epoch's and epoch 0's train and test features and its own head's
    # predictions, which the run kept in the object store for the fits (`scheduling.beside`), on one node or on
    # three; with every split there, the fits encode nothing and fit no member's head themselves
    # (tests/test_encoding.py)
    for sent in (out["sent"], out["single_sent"]):
        assert sorted(sent) == names
        for member in wide["members"]:
            epochs = sent[member["name"]]
            assert sorted(epochs) == sorted({"0", str(member["selected_epoch"])})
            assert all(splits["train"][0] == 150 and splits["test"][0] == 150 for splits in epochs.values())
            assert epochs[str(member["selected_epoch"])]["own_head"] == [150]  # its own head's test predictions
    assert out["kept"] == out["single_kept"] == {name: True for name in names}

    # node a went mid-run with members on it: they restarted elsewhere and no epoch is missing
    assert out["removed_during"] and out["ran_on"] == sorted(out["nodes"].values())
    assert sum(m["restarts"] for m in wide["members"]) >= 1
    run_dir = Path(out["run_dir"])
    for member in wide["members"]:
        assert member["epochs"] == [1, 2]
        assert [e for e, _ in list_checkpoints(run_dir / member["name"])] == [0, 1, 2]

    # the same figures as on one node: losses, selected epochs, both accuracies
    for one, many in zip(single["members"], wide["members"], strict=True):
        assert (one["name"], one["selected_epoch"]) == (many["name"], many["selected_epoch"])
        assert many["val_losses"] == pytest.approx(one["val_losses"], rel=1e-6)
    assert wide["accuracy"] == single["accuracy"] and wide["untrained"] == single["untrained"]
    assert wide["member_accuracies"] == single["member_accuracies"]
    assert wide["accuracy"] > 0.5  # 10 classes: chance is 0.1
