"""Checkpoints: a safe, pickle-free format with a manifest, written atomically; a truncated, deleted,
tampered or half-written checkpoint is reported and the previous one loads (a SIGKILL test)."""

import json
import pickle

import pytest
import torch

from workers.checkpoints import (
    CheckpointError,
    CheckpointMismatch,
    list_checkpoints,
    load_checkpoint,
    load_latest_valid,
    save_checkpoint,
    sweep_temporaries,
    verify_identity,
)
from workers.layout import checkpoint_dir


def save(tmp_path, epoch, value=1.0):
    return save_checkpoint(tmp_path, epoch, {"w": torch.full((3,), value)}, {"step": torch.tensor(epoch)},
                           {"note": f"epoch {epoch}"})


def test_round_trip(tmp_path):
    save(tmp_path, 1, 2.5)
    ckpt = load_checkpoint(checkpoint_dir(tmp_path, 1))
    assert ckpt.epoch == 1 and torch.equal(ckpt.weights["w"], torch.full((3,), 2.5))
    assert ckpt.state["step"].item() == 1 and ckpt.meta == {"note": "epoch 1"}
    assert [e for e, _ in list_checkpoints(tmp_path)] == [1]


@pytest.mark.fault
def test_truncated_checkpoint_is_reported_and_skipped(tmp_path):
    for epoch in (0, 1, 2):
        save(tmp_path, epoch, float(epoch))
    weights = checkpoint_dir(tmp_path, 2) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:20])
    with pytest.raises(CheckpointError, match="checkpoint_000002"):
        load_checkpoint(checkpoint_dir(tmp_path, 2))
    latest, skipped = load_latest_valid(tmp_path)
    assert latest.epoch == 1 and len(skipped) == 1 and "corrupted" in str(skipped[0])


@pytest.mark.fault
def test_deleted_file_falls_back(tmp_path):
    save(tmp_path, 1)
    save(tmp_path, 2)
    (checkpoint_dir(tmp_path, 2) / "state.pt").unlink()
    assert load_latest_valid(tmp_path)[0].epoch == 1


class Exploit:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.fault
def test_malicious_pickle_is_refused_even_with_matching_checksum(tmp_path):
    """A crafted state.pt whose manifest checksum was updated too: weights_only refuses it."""
    import hashlib
    import json
    path = save(tmp_path, 1)
    (path / "state.pt").write_bytes(pickle.dumps({"x": Exploit()}, protocol=2))
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"]["state.pt"] = hashlib.sha256((path / "state.pt").read_bytes()).hexdigest()
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="cannot be read") as raised:
        load_checkpoint(path)
    said = str(raised.value)  # issue 31: PyTorch's text advised weights_only=False; nothing may advise unpickling
    assert "asks for" in said and "print" in said and "state.pt" in said and "refused, not unpickled" in said, said
    assert not any(advice in said.lower() for advice in ("weights_only", "trust", "safe_globals", "unsafe")), said


# --- identity (issue 31): a checkpoint is the one its place names ---

def test_a_manifest_records_member_run_and_architecture(tmp_path):
    path = save_checkpoint(tmp_path / "member_03", 2, {"w": torch.zeros(3, 4)}, {}, {}, run_id="abc")
    manifest = json.loads((path / "manifest.json").read_text())
    assert (manifest["member"], manifest["epoch"], manifest["run_id"]) == ("member_03", 2, "abc")
    assert manifest["architecture"] == {"w": [3, 4]}
    assert load_checkpoint(path, run_id="abc").epoch == 2


def test_checkpoints_swapped_between_epochs_or_members_or_runs_are_refused(tmp_path):
    for member in ("member_00", "member_01"):
        for epoch in (0, 1):
            save_checkpoint(tmp_path / member, epoch, {"w": torch.full((2,), float(epoch))}, {}, {}, run_id="run-a")
    zero, one = checkpoint_dir(tmp_path / "member_00", 0), checkpoint_dir(tmp_path / "member_00", 1)
    zero.rename(tmp_path / "held")
    one.rename(zero)
    (tmp_path / "held").rename(one)  # epochs 0 and 1 swapped
    with pytest.raises(CheckpointMismatch, match="records epoch 1, but it is read as epoch 0"):
        load_checkpoint(zero)
    (tmp_path / "member_01").rename(tmp_path / "member_02")
    (tmp_path / "member_00").rename(tmp_path / "member_01")
    with pytest.raises(CheckpointMismatch, match="member 'member_00', but it is read as .*member 'member_01'"):
        verify_identity(checkpoint_dir(tmp_path / "member_01", 0))
    other = save_checkpoint(tmp_path / "member_05", 1, {"w": torch.zeros(2)}, {}, {}, run_id="run-a")
    with pytest.raises(CheckpointMismatch, match="records run id 'run-a', but it is read as run id 'run-b'"):
        load_checkpoint(other, run_id="run-b")
    assert load_latest_valid(tmp_path / "member_05", run_id="run-b")[0] is None  # another run's: never resumed
    assert load_latest_valid(tmp_path / "member_05", run_id="run-a")[0].epoch == 1


def test_an_old_manifest_without_identity_loads_with_the_epoch_check(tmp_path):
    path = save(tmp_path / "member_00", 1)
    manifest = json.loads((path / "manifest.json").read_text())
    for key in ("member", "run_id", "architecture"):
        del manifest[key]
    (path / "manifest.json").write_text(json.dumps(manifest))
    assert load_checkpoint(path).epoch == 1
    manifest["epoch"] = 2
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointMismatch, match="records epoch 2"):
        load_checkpoint(path)


@pytest.mark.fault
def test_temporaries_are_swept_and_never_listed(tmp_path):
    save(tmp_path, 1)
    leftover = tmp_path / ".tmp-checkpoint-000002-dead"
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"half")
    assert [e for e, _ in list_checkpoints(tmp_path)] == [1]
    assert sweep_temporaries(tmp_path) == [leftover] and not leftover.exists()


def test_rewriting_an_epoch_replaces_it(tmp_path):
    save(tmp_path, 1, 1.0)
    save(tmp_path, 1, 7.0)
    assert load_checkpoint(checkpoint_dir(tmp_path, 1)).weights["w"][0] == 7.0
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_000001"]


KILLED_MID_WRITE = """
import os, signal, sys, torch
import workers.checkpoints as checkpoints
member_dir = sys.argv[1]
checkpoints.save_checkpoint(member_dir, 1, {"w": torch.ones(1000)}, {"step": 1}, {})
original = checkpoints.write_synced

def dies_halfway(path, data):  # the process is killed with half of a file on disk
    with open(path, "wb") as handle:
        handle.write(data[: len(data) // 2])
        handle.flush()
        os.fsync(handle.fileno())
    os.kill(os.getpid(), signal.SIGKILL)

checkpoints.write_synced = dies_halfway
checkpoints.save_checkpoint(member_dir, 2, {"w": torch.full((1000,), 2.0)}, {"step": 2}, {})
"""


def test_a_process_killed_during_a_checkpoint_write_leaves_the_previous_one_loadable(tmp_path):
    import signal
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-c", KILLED_MID_WRITE, str(tmp_path)], capture_output=True)
    assert done.returncode == -signal.SIGKILL
    assert [epoch for epoch, _ in list_checkpoints(tmp_path)] == [1]  # the half-written one is not a checkpoint
    latest, skipped = load_latest_valid(tmp_path)
    assert latest.epoch == 1 and latest.state["step"] == 1 and not skipped
    assert len(sweep_temporaries(tmp_path)) == 1 and not list(tmp_path.glob(".tmp*"))


def test_a_resume_passes_over_an_unreadable_checkpoint_but_stops_at_another_runs(tmp_path):
    """A cut-off upload leaves a checkpoint without its manifest: the resume skips it, as before. One from
    another run stops the resume, naming both ids."""
    from ensemble.runs.identity import check_every_checkpoint
    for epoch in (0, 1):
        save_checkpoint(tmp_path / "member_00", epoch, {"w": torch.zeros(2)}, {}, {}, run_id="mine")
    (checkpoint_dir(tmp_path / "member_00", 1) / "manifest.json").unlink()
    check_every_checkpoint(tmp_path, ["member_00"], "mine")
    save_checkpoint(tmp_path / "member_00", 2, {"w": torch.zeros(2)}, {}, {}, run_id="theirs")
    with pytest.raises(CheckpointMismatch, match="run id 'theirs', but it is read as run id 'mine'"):
        check_every_checkpoint(tmp_path, ["member_00"], "mine")
