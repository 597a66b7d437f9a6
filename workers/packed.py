"""Packed members: k members of one architecture trained as one batched computation (pure PyTorch).

Each member keeps what it has when it trains alone (`workers.training.MemberRun`): its own model,
seed, batch order, stop rule, checkpoints, history.jsonl and outcome.json. For one epoch the
members still training are stacked: each parameter becomes one tensor with the members along a
new first dimension, `torch.func.vmap` runs every member's forward pass (its own batch) as one
call, and one optimizer steps on the summed losses. The sum's gradient for a member's slice is
that member's own gradient, and Adam and SGD with momentum are elementwise, so the pack trains
each member as it would train alone (up to the order of float additions). After the epoch the
slices go back into the members' own models and single-model optimizers, which is what each
checkpoint holds, so a packed checkpoint resumes unpacked and the other way round. Restacking
every epoch is how a stopped member leaves the pack.

Why torch.func and not hand-written grouped convolutions: vmap turns a batched convolution into
a grouped one anyway, and benchmarks/packed_members.py measured both (its header has the figures).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import torch
from torch import nn
from torch.func import functional_call, vmap

from workers.errors import InputError
from workers.memory_format import CHANNELS_LAST
from workers.stopping import StopRule
from workers.training import (
    MemberRun,
    Step,
    TrainSettings,
    autocast,
    optimizer_for,
    reconstruction_loss,
    replay_finished,
)

# `resources.members_per_actor: auto` per device kind, from benchmarks/packed_members.py.
# cpu: packed members were slower per epoch than the same members one after another (grouped
# convolutions with few channels per group are slow CPU kernels; docs/performance.md, "Packed
# members on a CPU"), so members stay unpacked.
# cuda: 1 until that benchmark has run on a GPU; its figures decide this number.
PACK_SIZE_BY_DEVICE = {"cpu": 1, "cuda": 1}


def auto_members_per_actor(device_kind: str) -> int:
    """How many members an actor packs when `resources.members_per_actor` is "auto", for a device
    kind ("cpu", "cuda" or a device string such as "cuda:0"); unmeasured kinds do not pack."""
    return PACK_SIZE_BY_DEVICE.get(device_kind.partition(":")[0], 1)


@dataclass(frozen=True)
class PackMember:
    """One member of a pack, as the actor would train it alone."""
    model: nn.Module         # built by the factory under the member's own torch seed, on the images' device
    train_x: torch.Tensor    # its training images (its own bootstrap sample, if any)
    settings: TrainSettings  # the pack's shared settings with the member's own seed
    should_stop: StopRule
    directory: Path


class MemberStep(NamedTuple):
    """A step of `train_member` (Began, Trained or Outcome) and the member it belongs to."""
    member: int  # the member's index in the sequence given to `train_pack`
    step: Step


class StackedModel:
    """The members' parameters stacked along a new first dimension, and the batched forward pass."""

    def __init__(self, models: Sequence[nn.Module]):
        self.template = models[0]  # functional_call runs its modules with the stacked tensors swapped in
        self.names = [name for name, _ in models[0].named_parameters()]
        self.parameters = [torch.stack([p.detach() for p in same]).requires_grad_()
                           for same in zip(*(model.parameters() for model in models), strict=True)]

    def losses(self, batches: torch.Tensor, shared_batch: bool = False) -> torch.Tensor:
        """Each member's reconstruction loss on its batch (`batches[i]`), or all on one (`shared_batch`)."""
        def member_loss(parameters, batch):
            reconstruction = functional_call(self.template, dict(zip(self.names, parameters, strict=True)), (batch,))
            return reconstruction_loss(reconstruction.float(), batch)
        return vmap(member_loss, in_dims=(0, None if shared_batch else 0))(self.parameters, batches)

    @torch.no_grad()
    def clip_grad_norms_(self, max_norm: float) -> None:
        """`nn.utils.clip_grad_norm_` for each member: its gradients scaled by its own total norm."""
        grads = [p.grad for p in self.parameters if p.grad is not None]
        norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads]).norm(dim=0)  # one per member
        scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        for grad in grads:
            grad.mul_(scale.view(-1, *[1] * (grad.dim() - 1)))


def _parameter_shapes(model: nn.Module) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    return [(name, tuple(p.shape), p.dtype) for name, p in model.named_parameters()]


def check_stackable(models: Sequence[nn.Module], sample: torch.Tensor) -> None:
    """An InputError unless these models can train as one pack: one class with the same parameters,
    no buffers (a BatchNorm's running statistics cannot be shared) and a forward pass `torch.func.vmap`
    can batch (no randomness such as dropout, no Python branches on tensor values). `sample`: a few
    images, run forward and backward once."""
    first = models[0]
    name = type(first).__name__
    advice = "set resources.members_per_actor=1 to train each member on its own"
    if any(type(model) is not type(first) or _parameter_shapes(model) != _parameter_shapes(first)
           for model in models):
        raise InputError(f"packed members must share one architecture, but the models built for the pack "
                         f"({', '.join(sorted({type(m).__name__ for m in models}))}) differ in their parameters; "
                         f"{advice}.")
    buffers = [buffer_name for buffer_name, _ in first.named_buffers()]
    if buffers:
        raise InputError(f"the autoencoder {name} has buffers ({', '.join(buffers[:3])}), such as a BatchNorm's "
                         f"running statistics, which packed members cannot keep apart; {advice}.")
    first.train()  # as it will train: dropout, say, only draws its masks in training mode
    try:
        StackedModel(models).losses(sample, shared_batch=True).sum().backward()
    except Exception as err:  # user code under vmap: report what it raised
        reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise InputError(f"the autoencoder {name} cannot be packed: torch.func.vmap could not batch its forward "
                         f"pass ({type(err).__name__}: {reason}). Randomness such as dropout and Python branches "
                         f"on tensor values prevent it; {advice}.") from None


def _stack_state(states: Sequence[dict]) -> dict:
    """One optimizer state for a stacked parameter from the members' states for theirs: tensors
    stacked, a scalar step shared (members that train together have taken the same steps)."""
    if not states[0]:
        if any(states):
            raise ValueError("packed members must have taken the same optimizer steps; some have taken none.")
        return {}
    stacked = {}
    for key, first in states[0].items():
        values = [state[key] for state in states]
        if not isinstance(first, torch.Tensor):  # SGD's momentum buffer before its first step: None
            stacked[key] = first
        elif first.dim() == 0:
            if any(not torch.equal(value, first) for value in values):
                raise ValueError(f"packed members must have taken the same optimizer steps; {key} differs.")
            stacked[key] = first.clone()
        else:
            stacked[key] = torch.stack(values)
    return stacked


def _member_state(stacked: dict, member: int) -> dict:
    """A member's own slice of a stacked parameter's optimizer state (the inverse of `_stack_state`)."""
    return {key: value.clone() if isinstance(value, torch.Tensor) and value.dim() == 0
            else value[member].clone() if isinstance(value, torch.Tensor) else value
            for key, value in stacked.items()}


class Pack:
    """The members training this epoch, stacked, with one optimizer over the stacked parameters that
    continues from the members' own optimizer states; `write_back` hands the slices back."""

    def __init__(self, runs: Sequence[MemberRun]):
        self.runs = runs
        self.settings = runs[0].settings
        self.model = StackedModel([run.model for run in runs])
        self.optimizer = optimizer_for(self.model.parameters, self.settings)
        for stacked, own in zip(self.model.parameters, zip(*(run.model.parameters() for run in runs), strict=True),
                                strict=True):
            state = _stack_state([run.optimizer.state.get(p, {}) for run, p in zip(runs, own, strict=True)])
            if state:  # none before a member's first step
                self.optimizer.state[stacked] = state

    def train_epoch(self) -> list[float]:
        """One epoch: each member over its own images in its own batch order, one optimizer step on the
        summed losses per batch. Returns each member's mean training loss, as `train_one_epoch` does."""
        images = torch.stack([run.train_x for run in self.runs])
        size, batch_size = images.shape[1], self.settings.batch_size
        orders = torch.stack([torch.randperm(size, generator=run.generator, device=run.generator.device)
                              for run in self.runs])
        rows = torch.arange(len(self.runs), device=images.device)[:, None]  # member i's batch from its own images
        totals = [0.0] * len(self.runs)
        self.model.template.train()
        for start in range(0, size, batch_size):
            batches = images[rows, orders[:, start:start + batch_size]]
            with autocast(images.device, self.settings.precision):
                losses = self.model.losses(batches)
            self.optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()  # d(sum)/d(member i's slice) is member i's own gradient
            if self.settings.grad_clip is not None:
                self.model.clip_grad_norms_(self.settings.grad_clip)
            self.optimizer.step()
            totals = [total + loss * batches.shape[1] for total, loss in zip(totals, losses.tolist(), strict=True)]
        return [total / size for total in totals]

    @torch.no_grad()
    def validation_losses(self, images: torch.Tensor) -> list[float]:
        """Each member's mean reconstruction loss on the shared validation images, as `validation_loss` does for one."""
        totals = [0.0] * len(self.runs)
        self.model.template.eval()
        for start in range(0, len(images), self.settings.batch_size):
            batch = images[start:start + self.settings.batch_size]
            with autocast(images.device, self.settings.precision):
                losses = self.model.losses(batch, shared_batch=True)
            totals = [total + loss * len(batch) for total, loss in zip(totals, losses.tolist(), strict=True)]
        return [total / len(images) for total in totals]

    @torch.no_grad()
    def write_back(self) -> None:
        """Each member's slices into its own model and single-model optimizer: what its checkpoint saves."""
        for member, run in enumerate(self.runs):
            for stacked, own in zip(self.model.parameters, run.model.parameters(), strict=True):
                own.copy_(stacked[member])
                if stacked in self.optimizer.state:
                    run.optimizer.state[own] = _member_state(self.optimizer.state[stacked], member)


def check_packable_settings(settings: TrainSettings) -> None:
    """An InputError for the fast paths a pack cannot honour, so a config can be checked before any actor
    starts: both act on one member's module, which a pack only borrows as the template for vmap."""
    refused = [(key, fix) for key, fix, on in (
        ("train.compile", "train.compile=false", settings.compile),
        ("train.memory_format=channels_last", "train.memory_format=auto",
         settings.memory_format == CHANNELS_LAST)) if on]
    if refused:  # memory_format "auto" packs in the default format: vmap's grouped convolutions choose their own
        raise InputError(f"{' and '.join(key for key, _ in refused)} apply to one member's own model, not to packed "
                         f"members; set {' and '.join(fix for _, fix in refused)}, or resources.members_per_actor=1.")


def check_pack_settings(members: Sequence[PackMember]) -> None:
    """What packing requires of the members' settings and data, before anything is written."""
    first = members[0].settings
    check_packable_settings(first)
    differing = sorted({f.name for member in members for f in fields(TrainSettings)
                        if f.name != "seed" and getattr(member.settings, f.name) != getattr(first, f.name)})
    if differing:
        raise ValueError(f"packed members share one optimizer: their settings may differ only in the seed, "
                         f"but {', '.join(differing)} differ.")
    if len({len(member.train_x) for member in members}) > 1:
        raise ValueError("packed members take the same number of training images each (they step together).")


def train_pack(members: Sequence[PackMember], val_x: torch.Tensor) -> Iterator[MemberStep]:
    """Train the members as one pack until each one's stop rule stops it: the packed counterpart of
    `workers.training.train_member`, yielding each member's own steps (Began, a Trained per epoch,
    then its Outcome) tagged with its index in `members`. A member that stops leaves the pack and the
    others go on; a member that finished before yields its saved Outcome; a member resumed from an
    older checkpoint than the others trains alone (or with its peers) until it has caught up.

    The models must sit on the device that holds the images; `val_x` is shared by all members."""
    if not members:
        return
    check_pack_settings(members)
    pending: dict[int, PackMember] = {}
    for index, member in enumerate(members):
        replayed = replay_finished(member.directory)
        if replayed is None:
            pending[index] = member
        else:  # a restarted run: this member is done, do not retrain it
            yield from (MemberStep(index, step) for step in replayed)
    if pending:
        check_stackable([member.model for member in pending.values()], val_x[:2])
    runs: dict[int, MemberRun] = {}
    for index, member in pending.items():
        runs[index] = MemberRun.start(member.model, member.train_x, val_x, member.settings, member.should_stop,
                                      member.directory)
        yield MemberStep(index, runs[index].state.began)

    for index in [index for index, run in runs.items() if run.decision.stop]:  # its rule had stopped it already
        yield MemberStep(index, runs.pop(index).finish())

    # --- the epoch loop: the members furthest behind train one packed epoch; each checkpoints and asks its rule ---
    while runs:
        behind = min(len(run.history) for run in runs.values())
        training = {index: run for index, run in runs.items() if len(run.history) == behind}
        epoch_start = time.perf_counter()
        losses = packed_epoch(list(training.values()))
        seconds = time.perf_counter() - epoch_start  # each member's epoch took the pack's wall-clock time
        for (index, run), (train_loss, val_loss) in zip(training.items(), losses, strict=True):
            yield MemberStep(index, run.end_epoch(train_loss, val_loss, seconds))
            if run.decision.stop:  # it leaves the pack: the next epoch stacks the others only
                yield MemberStep(index, runs.pop(index).finish())


def packed_epoch(runs: Sequence[MemberRun]) -> list[tuple[float, float]]:
    """One epoch of these members as a pack: each one's (train loss, validation loss)."""
    pack = Pack(runs)
    train_losses = pack.train_epoch()
    val_losses = pack.validation_losses(runs[0].val_x)
    pack.write_back()
    return list(zip(train_losses, val_losses, strict=True))
