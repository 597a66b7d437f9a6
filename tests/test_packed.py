"""Packed members (workers.packed) train each member as `train_member` trains it alone: the same
losses, weights, checkpoints and stops, to float tolerance (CPU, fp32)."""

import shutil
from dataclasses import replace

import pytest
import torch
from torch import nn

from ensemble.data.sources import mnist_5k_arrays
from workers.checkpoints import list_checkpoints, load_checkpoint
from workers.errors import InputError
from workers.layout import OUTCOME, checkpoint_dir
from workers.models import CAEFactory
from workers.outcome import Outcome, read_outcome
from workers.packed import PackMember, auto_members_per_actor, train_pack
from workers.sampling import bootstrap_indices
from workers.stopping import EagerStop
from workers.training import Began, Trained, TrainSettings, make_optimizer, train_member

SEEDS = (3, 4, 5)
TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}  # fp32 sums in another order (grouped convolutions), nothing more
# Optimizer moments hold raw gradients, whose rounding shows where sums cancel (measured: up to 4e-4 of a
# tensor's largest entry after 3 epochs); Adam divides it out, so the weights still agree to TOLERANCE.
MOMENT_TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def digits():
    x, _ = mnist_5k_arrays()
    images = torch.tensor(x[:300] / 255.0, dtype=torch.float32).reshape(-1, 1, 28, 28)
    return images[:200], images[200:]


def fixed_rule(epochs):
    return EagerStop(rule="fixed", epoch=epochs, max_epochs=10)


def fresh_model(seed):
    torch.manual_seed(seed)  # as the actor builds a member: its own torch seed, then the factory
    return CAEFactory((1, 28, 28), channels=(4, 8))()


def own_images(train_x, seed):
    """Each member its own bootstrap sample, as bagging gives it."""
    return train_x[bootstrap_indices(len(train_x), seed)]


BATCHES_OF_50 = TrainSettings(batch_size=50)


def pack_members(digits, directory, rules, settings=BATCHES_OF_50, images=None):
    train_x, _ = digits
    return [PackMember(fresh_model(seed), own_images(train_x, seed) if images is None else images[i],
                       replace(settings, seed=seed), rule, directory / f"member_{i}")
            for i, (seed, rule) in enumerate(zip(SEEDS, rules, strict=True))]


def run_pack(members, val_x):
    """All steps of train_pack, per member in the order they came."""
    steps = {index: [] for index in range(len(members))}
    for index, step in train_pack(members, val_x):
        steps[index].append(step)
    return steps


def run_alone(member, val_x, directory=None):
    *_, outcome = train_member(member.model, member.train_x, val_x, member.settings, member.should_stop,
                               directory or member.directory)
    return outcome


def outcome_of(directory) -> float:
    """The first epoch's training loss saved in a member's directory."""
    return read_outcome(directory).history[0].train_loss


def losses(outcome: Outcome) -> list[tuple[float, float]]:
    return [(r.train_loss, r.val_loss) for r in outcome.history]


def assert_same_optimizer_state(packed: dict, alone: dict) -> None:
    """The same steps taken, and moments within MOMENT_TOLERANCE of each tensor's largest entry."""
    if not alone:  # epoch 0: no step taken yet
        assert packed == {}
        return
    assert packed["param_groups"] == alone["param_groups"] and packed["state"].keys() == alone["state"].keys()
    for index, state in alone["state"].items():
        assert packed["state"][index].keys() == state.keys()
        for key, expected in state.items():
            if expected.dim() == 0:  # Adam's step count
                assert torch.equal(packed["state"][index][key], expected)
            else:
                torch.testing.assert_close(packed["state"][index][key], expected, rtol=0,
                                           atol=MOMENT_TOLERANCE * expected.abs().max().item())


def assert_same_training(packed_dir, alone_dir, epoch):
    """Same losses so far and the same weights, optimizer state and batch order in checkpoint `epoch`."""
    packed, alone = (load_checkpoint(checkpoint_dir(d, epoch)) for d in (packed_dir, alone_dir))
    torch.testing.assert_close(packed.weights, alone.weights, **TOLERANCE)
    assert_same_optimizer_state(packed.state["optimizer"], alone.state["optimizer"])
    assert torch.equal(packed.state["generator"], alone.state["generator"])  # the same batch order to come
    saved_losses = [[(r["train_loss"], r["val_loss"]) for r in c.meta.get("history", [])] for c in (packed, alone)]
    torch.testing.assert_close(*saved_losses, **TOLERANCE)


@pytest.fixture(scope="module")
def alone(digits, tmp_path_factory):
    """The reference: each member trained on its own by train_member, 3 epochs."""
    directory = tmp_path_factory.mktemp("alone")
    members = pack_members(digits, directory, [fixed_rule(3)] * 3)
    return directory, [run_alone(member, digits[1]) for member in members]


@pytest.fixture(scope="module")
def packed(digits, tmp_path_factory):
    """The same three members trained as one pack, 2 epochs."""
    directory = tmp_path_factory.mktemp("packed")
    return directory, run_pack(pack_members(digits, directory, [fixed_rule(2)] * 3), digits[1])


def test_pack_trains_each_member_as_it_trains_alone(packed, alone):
    packed_dir, steps = packed
    alone_dir, outcomes = alone
    for index, member_steps in steps.items():
        began, *trained, outcome = member_steps
        assert began == Began(None) and [s.record.epoch for s in trained] == [1, 2]
        assert all(isinstance(s, Trained) for s in trained) and isinstance(outcome, Outcome)
        torch.testing.assert_close(losses(outcome), losses(outcomes[index])[:2], **TOLERANCE)
        assert read_outcome(packed_dir / f"member_{index}") == outcome
        assert [e for e, _ in list_checkpoints(packed_dir / f"member_{index}")] == [0, 1, 2]
        for epoch in (0, 1, 2):
            assert_same_training(packed_dir / f"member_{index}", alone_dir / f"member_{index}", epoch)
    # a packed checkpoint is a plain single-model one: it loads into the member's own model and optimizer
    saved = load_checkpoint(checkpoint_dir(packed_dir / "member_0", 2))
    model = fresh_model(99)
    model.load_state_dict(saved.weights)
    make_optimizer(model, TrainSettings()).load_state_dict(saved.state["optimizer"])


def test_a_member_that_stops_leaves_the_pack_and_the_others_go_on(digits, alone, tmp_path):
    alone_dir, outcomes = alone
    members = pack_members(digits, tmp_path, [fixed_rule(2), fixed_rule(1), fixed_rule(2)])
    order = [(index, type(step).__name__, step.record.epoch if isinstance(step, Trained) else None)
             for index, step in train_pack(members, digits[1])]
    assert [kind for index, kind, _ in order if index == 1] == ["Began", "Trained", "Outcome"]
    assert order.index((1, "Outcome", None)) < order.index((0, "Trained", 2))  # done before the others go on
    assert [e for e, _ in list_checkpoints(tmp_path / "member_1")] == [0, 1]
    for index, epochs in ((0, 2), (1, 1), (2, 2)):
        outcome = read_outcome(tmp_path / f"member_{index}")
        torch.testing.assert_close(losses(outcome), losses(outcomes[index])[:epochs], **TOLERANCE)
        assert_same_training(tmp_path / f"member_{index}", alone_dir / f"member_{index}", epochs)


def test_resume_from_mixed_checkpoints_equals_the_uninterrupted_run(digits, alone, packed, tmp_path):
    """Member 0 comes back from an unpacked checkpoint at epoch 1, the others from packed ones at
    epoch 2: member 0 catches up alone, then all three train epoch 3 together."""
    alone_dir, outcomes = alone
    shutil.copytree(alone_dir / "member_0", tmp_path / "member_0")
    for epoch in (2, 3):
        shutil.rmtree(checkpoint_dir(tmp_path / "member_0", epoch))
    for index in (1, 2):
        shutil.copytree(packed[0] / f"member_{index}", tmp_path / f"member_{index}")
    for index in range(3):
        (tmp_path / f"member_{index}" / OUTCOME).unlink()  # as if the actor died before they finished

    steps = run_pack(pack_members(digits, tmp_path, [fixed_rule(3)] * 3), digits[1])
    assert [s.resumed_from for s, *_ in steps.values()] == [1, 2, 2]
    for index, (_, *trained, outcome) in steps.items():
        assert [s.record.epoch for s in trained] == ([2, 3] if index == 0 else [3])
        torch.testing.assert_close(losses(outcome), losses(outcomes[index]), **TOLERANCE)
        assert_same_training(tmp_path / f"member_{index}", alone_dir / f"member_{index}", 3)


def test_a_packed_checkpoint_resumes_unpacked(digits, alone, packed, tmp_path):
    alone_dir, outcomes = alone
    shutil.copytree(packed[0] / "member_1", tmp_path / "member_1")
    (tmp_path / "member_1" / OUTCOME).unlink()
    member = pack_members(digits, tmp_path, [fixed_rule(3)] * 3)[1]
    torch.testing.assert_close(losses(run_alone(member, digits[1])), losses(outcomes[1]), **TOLERANCE)
    assert_same_training(tmp_path / "member_1", alone_dir / "member_1", 3)


def test_finished_members_are_not_trained_again(digits, packed, tmp_path):
    shutil.copytree(packed[0], tmp_path, dirs_exist_ok=True)
    (tmp_path / "member_2" / OUTCOME).unlink()  # died after its last checkpoint, before writing its outcome
    again = run_pack(pack_members(digits, tmp_path, [fixed_rule(5), fixed_rule(5), fixed_rule(2)]), digits[1])
    for index, (began, outcome) in again.items():  # its rule says stop at once: nothing trains
        assert began == Began(2) and losses(outcome) == losses(packed[1][index][-1])
        assert [e for e, _ in list_checkpoints(tmp_path / f"member_{index}")] == [0, 1, 2]
    assert again[2][1].resumed_from == 2 and again[0][1] == packed[1][0][-1]


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_grad_clip_clips_each_member_by_its_own_norm(digits, tmp_path, optimizer):
    settings = TrainSettings(batch_size=50, grad_clip=5.0, optimizer=optimizer, lr=1e-4 if optimizer == "sgd" else 1e-3)
    run_pack(pack_members(digits, tmp_path / "packed", [fixed_rule(2)] * 3, settings), digits[1])
    for index, member in enumerate(pack_members(digits, tmp_path / "alone", [fixed_rule(2)] * 3, settings)):
        outcome = run_alone(member, digits[1])
        torch.testing.assert_close(losses(read_outcome(tmp_path / "packed" / f"member_{index}")), losses(outcome),
                                   **TOLERANCE)
        assert_same_training(tmp_path / "packed" / f"member_{index}", member.directory, 2)
    unclipped = pack_members(digits, tmp_path / "unclipped", [fixed_rule(1)] * 3, replace(settings, grad_clip=None))
    assert run_alone(unclipped[0], digits[1]).history[0].train_loss != outcome_of(tmp_path / "alone" / "member_0")


@pytest.mark.fault
def test_a_diverging_member_stops_alone_and_is_never_checkpointed(digits, alone, tmp_path):
    alone_dir, outcomes = alone
    train_x, _ = digits
    images = [own_images(train_x, seed) for seed in SEEDS]
    images[1] = images[1] * 1e30  # its squared error overflows: the loss is not finite
    run_pack(pack_members(digits, tmp_path, [fixed_rule(1)] * 3, images=images), digits[1])
    diverged = read_outcome(tmp_path / "member_1")
    assert diverged.diverged and not diverged.history[0].finite
    assert [e for e, _ in list_checkpoints(tmp_path / "member_1")] == [0]
    for index in (0, 2):
        torch.testing.assert_close(losses(read_outcome(tmp_path / f"member_{index}")), losses(outcomes[index])[:1],
                                   **TOLERANCE)
        assert_same_training(tmp_path / f"member_{index}", alone_dir / f"member_{index}", 1)


def test_bf16_packs_train_close_to_bf16_alone(digits, tmp_path):
    settings = TrainSettings(batch_size=50, precision="bf16")
    run_pack(pack_members(digits, tmp_path / "packed", [fixed_rule(1)] * 3, settings), digits[1])
    for index, member in enumerate(pack_members(digits, tmp_path / "alone", [fixed_rule(1)] * 3, settings)):
        packed = read_outcome(tmp_path / "packed" / f"member_{index}")
        assert packed.history[0].finite
        torch.testing.assert_close(losses(packed), losses(run_alone(member, digits[1])), rtol=2e-2, atol=0)


class DropoutAE(nn.Module):
    """Dropout draws random masks: vmap cannot batch it by default, and a pack could not repeat it."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.Dropout(0.5))
        self.dec = nn.Sequential(nn.Linear(16, 784), nn.Unflatten(1, (1, 28, 28)))

    def encode(self, x):
        return self.enc(x)

    def forward(self, x):
        return self.dec(self.enc(x))


class BatchNormAE(DropoutAE):
    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.BatchNorm1d(16))


@pytest.mark.parametrize("autoencoder, words", [(DropoutAE, "cannot be packed: torch.func.vmap"),
                                                (BatchNormAE, "has buffers"),
                                                (None, "share one architecture")])
def test_an_autoencoder_that_cannot_be_stacked_is_refused_before_training(digits, tmp_path, autoencoder, words):
    members = pack_members(digits, tmp_path, [fixed_rule(1)] * 3)
    models = ([autoencoder() for _ in members] if autoencoder else  # None: members of two architectures
              [CAEFactory((1, 28, 28), channels=channels)() for channels in ((4, 8), (4, 8), (6, 16))])
    members = [replace(member, model=model) for model, member in zip(models, members, strict=True)]
    with pytest.raises(InputError, match=words) as refused:
        list(train_pack(members, digits[1]))
    assert "members_per_actor=1" in str(refused.value)
    assert not any(m.directory.exists() for m in members)  # nothing written


@pytest.mark.parametrize("change, error, words", [
    ({"compile": True}, InputError, "train.compile"),
    ({"memory_format": "channels_last"}, InputError, "train.memory_format=channels_last"),
    ({"lr": 0.5}, ValueError, "lr differ"),
])
def test_settings_a_pack_cannot_honour_are_refused(digits, tmp_path, change, error, words):
    members = pack_members(digits, tmp_path, [fixed_rule(1)] * 3)
    changed = range(2, 3) if "lr" in change else range(3)  # lr: only the last member differs
    members = [replace(m, settings=replace(m.settings, **change)) if i in changed else m for i, m in enumerate(members)]
    with pytest.raises(error, match=words):
        list(train_pack(members, digits[1]))


def test_auto_pack_size_is_one_until_a_device_measures_better():
    assert [auto_members_per_actor(kind) for kind in ("cpu", "cuda", "cuda:0", "mps")] == [1, 1, 1, 1]


def test_the_benchmarks_grouped_forward_pass_computes_the_packs_losses():
    from benchmarks.packed_members import grouped_losses
    from workers.packed import StackedModel
    stack = StackedModel([fresh_model(seed) for seed in SEEDS])
    batches = torch.rand(len(SEEDS), 10, 1, 28, 28)
    torch.testing.assert_close(grouped_losses(stack, batches), stack.losses(batches), **TOLERANCE)
    torch.testing.assert_close(grouped_losses(stack, batches[0], shared_batch=True),
                               stack.losses(batches[0], shared_batch=True), **TOLERANCE)
