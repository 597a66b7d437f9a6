"""The members' optimizers: torch.optim's updates and state dicts, without importing the compiler."""

import copy
import subprocess
import sys
import textwrap

import pytest
import torch

from workers import optimizers
from workers.models import CAEFactory
from workers.settings import TrainSettings
from workers.training import optimizer_for


def steps(model, optimizer, count=4):
    generator = torch.Generator().manual_seed(1)
    for _ in range(count):
        images = torch.rand(8, 1, 28, 28, generator=generator)
        optimizer.zero_grad(set_to_none=True)
        (model(images) - images).pow(2).sum().backward()
        optimizer.step()


def twin_models():
    torch.manual_seed(0)
    first = CAEFactory((1, 28, 28), channels=(4, 8))()
    second = CAEFactory((1, 28, 28), channels=(4, 8))()
    second.load_state_dict(first.state_dict())
    return first, second


@pytest.mark.parametrize("ours, theirs, options", [
    (optimizers.Adam, torch.optim.Adam, {"lr": 1e-3}),
    (optimizers.SGD, torch.optim.SGD, {"lr": 1e-2, "momentum": 0.9}),
])
def test_updates_and_state_dicts_are_torch_optims_own(ours, theirs, options):
    model, reference = twin_models()
    optimizer, reference_optimizer = ours(model.parameters(), **options), theirs(reference.parameters(), **options)
    steps(model, optimizer)
    steps(reference, reference_optimizer)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), reference.parameters(), strict=True))
    # a checkpoint written by torch.optim's class resumes in ours, and the next steps stay equal
    resumed = ours(model.parameters(), **options)
    resumed.load_state_dict(copy.deepcopy(reference_optimizer.state_dict()))  # as from a file: no shared tensors
    steps(model, resumed)
    steps(reference, reference_optimizer)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), reference.parameters(), strict=True))
    ours_state, theirs_state = resumed.state_dict(), reference_optimizer.state_dict()
    assert ours_state["param_groups"] == theirs_state["param_groups"]
    for key, values in theirs_state["state"].items():
        assert all(torch.equal(values[name], ours_state["state"][key][name]) for name in values)


def test_a_step_records_no_autograd_history():
    model, _ = twin_models()
    optimizer = optimizers.Adam(model.parameters())
    steps(model, optimizer, count=1)
    assert all(p.grad_fn is None and p.is_leaf for p in model.parameters())
    assert isinstance(optimizer_for(model.parameters(), TrainSettings(optimizer="sgd")), torch.optim.SGD)


def test_training_a_member_never_imports_the_compiler(tmp_path):
    """A fresh process (as an actor is) trains and checkpoints a member: `torch._dynamo`,
    0.9-1.3 s of imports that torch.optim's own classes pay on their first call, stays unloaded."""
    script = textwrap.dedent(f"""
        import sys
        import torch
        from workers.models import CAEFactory
        from workers.stopping import EagerStop
        from workers.training import TrainSettings, make_optimizer, train_member
        images = torch.rand(120, 1, 28, 28, generator=torch.Generator().manual_seed(0))
        model, settings = CAEFactory((1, 28, 28), channels=(4, 8))(), TrainSettings(batch_size=20)
        *_, outcome = train_member(model, images[:100], images[100:], settings,
                                   EagerStop(rule="fixed", epoch=2, max_epochs=2), {str(tmp_path)!r})
        optimizer = make_optimizer(model, settings)
        optimizer.load_state_dict(optimizer.state_dict())
        print(outcome.epochs_trained, "torch._dynamo" in sys.modules)
    """)
    finished = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.split() == ["2", "False"]
