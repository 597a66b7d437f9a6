"""One member's epoch loop (pure PyTorch, no Ray): checkpoints, resume, divergence, fast paths."""

import json

import pytest
import torch

from ensemble.data.sources import mnist_5k_arrays
from workers.checkpoints import list_checkpoints, load_checkpoint
from workers.layout import checkpoint_dir
from workers.models import CAEFactory
from workers.outcome import read_outcome
from workers.stopping import EagerStop
from workers.training import Began, Trained, TrainSettings, train_member


@pytest.fixture(scope="module")
def digits():
    x, _ = mnist_5k_arrays()
    images = torch.tensor(x[:300] / 255.0, dtype=torch.float32).reshape(-1, 1, 28, 28)
    return images[:200], images[200:]


def fixed_rule(k, max_epochs=10):
    return EagerStop(rule="fixed", epoch=k, max_epochs=max_epochs)


def train(*args):
    """Drive the loop to its end as the actor does; returns the Outcome (the last step)."""
    *_, outcome = train_member(*args)
    return outcome


def fresh_model(seed=0):
    torch.manual_seed(seed)
    return CAEFactory((1, 28, 28), channels=(4, 8))()


def test_three_epochs_leave_checkpoints_0_to_3_that_load_safely(digits, tmp_path):
    train_x, val = digits
    *steps, outcome = train_member(fresh_model(), train_x, val, TrainSettings(batch_size=50), fixed_rule(3), tmp_path)
    assert steps[0] == Began(None) and [s.record.epoch for s in steps[1:]] == [1, 2, 3]
    assert all(isinstance(s, Trained) for s in steps[1:]) and [s.decision.stop for s in steps[1:]] == [0, 0, 1]
    assert outcome.epochs_trained == 3 and not outcome.diverged
    assert [e for e, _ in list_checkpoints(tmp_path)] == [0, 1, 2, 3]
    for epoch in range(4):
        model = fresh_model(seed=99)
        model.load_state_dict(load_checkpoint(checkpoint_dir(tmp_path, epoch)).weights)
    losses = [r.val_loss for r in outcome.history]
    assert losses[-1] < losses[0]
    lines = (tmp_path / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


def test_resume_equals_uninterrupted_run(digits, tmp_path):
    train_x, val = digits
    settings = TrainSettings(batch_size=32, seed=5)
    whole = train(fresh_model(), train_x, val, settings, fixed_rule(4), tmp_path / "whole")

    # interrupted after 2 epochs (the rule stops it), then resumed by a new process with the full rule
    part_dir = tmp_path / "part"
    train(fresh_model(), train_x, val, settings, fixed_rule(2), part_dir)
    (part_dir / "outcome.json").unlink()  # as if the process died before finishing
    resumed = train(fresh_model(seed=123), train_x, val, settings, fixed_rule(4), part_dir)

    assert resumed.resumed_from == 2
    assert [(r.epoch, r.train_loss, r.val_loss) for r in resumed.history] == \
           [(r.epoch, r.train_loss, r.val_loss) for r in whole.history]
    a = load_checkpoint(checkpoint_dir(tmp_path / "whole", 4)).weights
    b = load_checkpoint(checkpoint_dir(part_dir, 4)).weights
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_finished_member_is_not_retrained(digits, tmp_path):
    train_x, val = digits
    first = train(fresh_model(), train_x, val, TrainSettings(batch_size=50), fixed_rule(1), tmp_path)
    steps = list(train_member(fresh_model(), train_x, val, TrainSettings(batch_size=50), fixed_rule(5), tmp_path))
    assert steps[0] == Began(1) and len(steps) == 2  # began at its last epoch, then its saved outcome
    assert steps[1].history == first.history and read_outcome(tmp_path) == first


@pytest.mark.fault
def test_non_finite_loss_stops_member_and_keeps_last_finite_checkpoint(digits, tmp_path):
    train_x, val = digits
    outcome = train(fresh_model(), train_x, val, TrainSettings(batch_size=50, lr=1e6, optimizer="sgd"),
                    EagerStop(rule="none", max_epochs=10), tmp_path)
    assert outcome.diverged and "diverged" in outcome.stop_reason
    last = outcome.history[-1]
    assert not last.finite
    saved = [e for e, _ in list_checkpoints(tmp_path)]
    assert last.epoch not in saved and saved == list(range(last.epoch))
    for epoch in saved:
        weights = load_checkpoint(checkpoint_dir(tmp_path, epoch)).weights
        assert all(torch.isfinite(w).all() for w in weights.values())


@pytest.mark.fault
def test_truncated_latest_checkpoint_is_skipped_on_resume(digits, tmp_path):
    train_x, val = digits
    train(fresh_model(), train_x, val, TrainSettings(batch_size=50), fixed_rule(2), tmp_path)
    (tmp_path / "outcome.json").unlink()
    weights = checkpoint_dir(tmp_path, 2) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    began, *_, resumed = train_member(fresh_model(), train_x, val, TrainSettings(batch_size=50), fixed_rule(3),
                                      tmp_path)
    assert began.resumed_from == 1 and "checkpoint_000002" in began.skipped_checkpoints[0]
    assert resumed.resumed_from == 1 and resumed.skipped_checkpoints == list(began.skipped_checkpoints)
    assert [r.epoch for r in resumed.history] == [1, 2, 3]


def test_fast_paths_bf16_and_channels_last_train_and_checkpoint_plain_weights(digits, tmp_path):
    train_x, val = digits
    settings = TrainSettings(batch_size=50, precision="bf16", memory_format="channels_last")
    outcome = train(fresh_model(), train_x, val, settings, fixed_rule(1), tmp_path)
    assert not outcome.diverged and outcome.history[0].finite
    plain = fresh_model(seed=7)  # a checkpoint from the fast path loads into an ordinary model
    plain.load_state_dict(load_checkpoint(checkpoint_dir(tmp_path, 1)).weights)
