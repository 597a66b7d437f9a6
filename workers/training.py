"""One member's epoch loop: pure PyTorch, no Ray.

The whole training split stays in (device) memory and batches are drawn with `randperm`
from a seeded generator, so a resumed run replays the same batches: model, optimizer and
generator state are all in the checkpoint.

`train_member` is the one way to train a member: a generator that yields `Began` (fresh or
resumed, and which corrupt checkpoints it passed over), one `Trained` per epoch, and finally
the `Outcome`. The actor and the tests iterate it the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence, Union

import torch
from torch import nn

from workers import optimizers
from workers.checkpoints import Checkpoint, load_latest_valid, save_checkpoint, sweep_temporaries
from workers.history import EpochRecord, write_history
from workers.layout import HISTORY
from workers.memory_format import as_layout_of, choose_memory_format, in_memory_format, probe_memory_formats
from workers.outcome import Outcome, read_outcome, write_outcome
from workers.settings import AUTO, TrainSettings
from workers.stopping import CONTINUE, Decision, StopRule


def autocast(device: torch.device, precision: str):
    """bf16 autocast where asked; fp32 is a no-op context."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def apply_fast_paths(model: nn.Module, images: Sequence[torch.Tensor], settings: TrainSettings):
    """The fast paths chosen in the settings, applied once before training. A memory format still
    "auto" (not resolved by `resolve_memory_format`, as the actor does) trains in PyTorch's default.
    The images are returned as they are: each batch is laid out as the weights are when it is drawn
    (`as_layout_of`), so no member copies the dataset (a 3-channel set would be copied whole)."""
    model = in_memory_format(model, settings.memory_format)
    images = list(images)
    if settings.compile:
        model.compile()  # in place: state_dict keys stay the same, so checkpoints do not change
    return model, images


def reconstruction_loss(reconstruction: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Squared error summed over pixels, averaged over examples."""
    return (reconstruction - images).pow(2).flatten(1).sum(1).mean()


def optimizer_for(parameters: Iterable[torch.Tensor], settings: TrainSettings,
                  classes: optimizers.Classes = optimizers.UNGUARDED) -> torch.optim.Optimizer:
    """`settings.optimizer`, from `classes`: by default torch.optim's, without the compiler's import."""
    if settings.optimizer == "sgd":
        return classes["sgd"](parameters, lr=settings.lr, momentum=settings.momentum)
    return classes["adam"](parameters, lr=settings.lr)


def make_optimizer(model: nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    return optimizer_for(model.parameters(), settings)


def train_one_epoch(model, optimizer, images, settings: TrainSettings, generator) -> float:
    model.train()
    layout = as_layout_of(model)
    order = torch.randperm(len(images), generator=generator, device=generator.device)
    total = 0.0
    for start in range(0, len(images), settings.batch_size):
        batch = layout(images[order[start:start + settings.batch_size]])
        with autocast(images.device, settings.precision):
            loss = reconstruction_loss(model(batch).float(), batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if settings.grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        optimizer.step()
        total += loss.item() * len(batch)
    return total / len(images)


def resolve_memory_format(settings: TrainSettings, model: nn.Module, images: torch.Tensor) -> TrainSettings:
    """`settings` with "auto" replaced by the memory format that trains `model` faster on one batch of
    `images` here (`workers.memory_format`: a few interleaved steps each way on throw-away copies);
    settings that name a format come back unchanged. `model` sits on the images' device."""
    if settings.memory_format != AUTO:
        return settings
    optimizers: dict[int, torch.optim.Optimizer] = {}
    generator = torch.Generator(device=images.device).manual_seed(0)

    def step(probe_model: nn.Module, batch: torch.Tensor) -> None:
        if id(probe_model) not in optimizers:
            optimizers[id(probe_model)] = make_optimizer(probe_model, settings)
        train_one_epoch(probe_model, optimizers[id(probe_model)], batch, settings, generator)

    seconds = probe_memory_formats(model, images[:settings.batch_size], step)
    return replace(settings, memory_format=choose_memory_format(seconds))


@torch.no_grad()
def validation_loss(model, images, batch_size: int, precision: str = "fp32") -> float:
    model.eval()
    layout = as_layout_of(model)
    total = 0.0
    for start in range(0, len(images), batch_size):
        batch = layout(images[start:start + batch_size])
        with autocast(images.device, precision):
            total += reconstruction_loss(model(batch).float(), batch).item() * len(batch)
    return total / len(images)


@dataclass(frozen=True)
class Began:
    """Training (re)started: from scratch (`resumed_from` None), or from a saved epoch."""
    resumed_from: Optional[int]
    skipped_checkpoints: tuple[str, ...] = ()  # newer checkpoints that were corrupt, passed over


@dataclass(frozen=True)
class Trained:
    """One finished epoch and the stop rule's decision after it."""
    record: EpochRecord
    decision: Decision


Step = Union[Began, Trained, Outcome]


@dataclass
class _State:
    """What a resumed member continues from: its history so far and its seconds spent."""
    history: list[EpochRecord]
    seconds_before: float
    began: Began


def _resume_or_start(model, optimizer, generator, member_dir: Path, run_id: Optional[str]) -> _State:
    """Load the newest valid checkpoint of this member and run into model, optimizer and generator, or
    save the untrained weights as epoch 0."""
    sweep_temporaries(member_dir)  # a crash mid-write left these
    latest, skipped = load_latest_valid(member_dir, map_location=generator.device, run_id=run_id)
    skipped_names = tuple(str(err) for err in skipped)
    if latest is None:
        save_checkpoint(member_dir, 0, model.state_dict(),
                        {"optimizer": {}, "generator": generator.get_state()}, {"train_seconds": 0.0}, run_id)
        return _State([], 0.0, Began(None, skipped_names))
    _restore(latest, model, optimizer, generator)
    history = [EpochRecord.from_json(r) for r in latest.meta.get("history", [])]
    return _State(history, latest.meta.get("train_seconds", 0.0), Began(latest.epoch, skipped_names))


def _restore(checkpoint: Checkpoint, model, optimizer, generator) -> None:
    model.load_state_dict(checkpoint.weights)
    if checkpoint.epoch > 0:  # epoch 0 is the untrained model: no optimizer state yet
        optimizer.load_state_dict(checkpoint.state["optimizer"])
    generator.set_state(checkpoint.state["generator"].to("cpu"))


def replay_finished(member_dir: Path) -> Optional[tuple[Began, Outcome]]:
    """A member that finished before (its outcome.json exists) is not trained again: the steps to
    yield instead are `Began` at its last epoch and its saved Outcome. None for an unfinished member."""
    finished = read_outcome(Path(member_dir))
    return None if finished is None else (Began(finished.epochs_trained), finished)


@dataclass
class MemberRun:
    """One member between epochs: its model, optimizer, batch-order generator and history, and what
    ends each epoch (stop rule, checkpoint, history.jsonl) and the training (outcome.json).
    `train_member` drives one; `workers.packed.train_pack` drives several as one computation."""
    model: nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    train_x: torch.Tensor
    val_x: torch.Tensor
    settings: TrainSettings
    should_stop: StopRule
    directory: Path
    state: _State
    decision: Decision
    started: float = field(default_factory=time.perf_counter)  # after resuming: loading is not training

    @classmethod
    def start(cls, model: nn.Module, train_x: torch.Tensor, val_x: torch.Tensor, settings: TrainSettings,
              should_stop: StopRule, member_dir: Path) -> "MemberRun":
        """Apply the fast paths, then resume from the newest valid checkpoint or save the untrained epoch 0."""
        model, (train_x, val_x) = apply_fast_paths(model, (train_x, val_x), settings)
        optimizer = make_optimizer(model, settings)
        generator = torch.Generator(device=train_x.device)
        generator.manual_seed(settings.seed)
        state = _resume_or_start(model, optimizer, generator, Path(member_dir), settings.run_id)
        decision = should_stop(state.history) if state.history else CONTINUE
        return cls(model, optimizer, generator, train_x, val_x, settings, should_stop, Path(member_dir), state,
                   decision)

    @property
    def history(self) -> list[EpochRecord]:
        return self.state.history

    def train_seconds(self) -> float:
        return self.state.seconds_before + time.perf_counter() - self.started

    def end_epoch(self, train_loss: float, val_loss: float, seconds: float) -> Trained:
        """Record the epoch, ask the stop rule, checkpoint (finite weights only) and rewrite history.jsonl."""
        record = EpochRecord(len(self.history) + 1, train_loss, val_loss, seconds)
        self.history.append(record)
        self.decision = self.should_stop(self.history)
        if record.finite:  # never checkpoint NaN weights: the last finite checkpoint stays the newest
            save_checkpoint(self.directory, record.epoch, self.model.state_dict(),
                            {"optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state()},
                            {"train_seconds": self.train_seconds(), "history": [r.to_json() for r in self.history]},
                            self.settings.run_id)
        write_history(self.directory / HISTORY, self.history)
        return Trained(record, self.decision)

    def finish(self) -> Outcome:
        """The Outcome, written as outcome.json so a restarted run does not train this member again."""
        began = self.state.began
        outcome = Outcome(self.history, self.decision.reason, self.decision.diverged, self.train_seconds(),
                          began.resumed_from, list(began.skipped_checkpoints))
        write_outcome(self.directory, outcome)
        return outcome


def train_member(model: nn.Module, train_x: torch.Tensor, val_x: torch.Tensor, settings: TrainSettings,
                 should_stop: StopRule, member_dir: Path) -> Iterator[Step]:
    """Train until `should_stop` says so, checkpointing every epoch and resuming from the newest
    valid checkpoint if there is one. Yields `Began`, a `Trained` per epoch, then the `Outcome`
    (a member that finished before yields `Began` at its last epoch and its saved Outcome).

    `model` must already sit on the device that holds `train_x` and `val_x`."""
    replayed = replay_finished(member_dir)
    if replayed is not None:  # a restarted run: this member is done, do not retrain it
        yield from replayed
        return
    run = MemberRun.start(model, train_x, val_x, settings, should_stop, member_dir)
    yield run.state.began

    # --- the epoch loop: train, validate, then the run checkpoints and asks the stop rule ---
    while not run.decision.stop:
        epoch_start = time.perf_counter()
        train_loss = train_one_epoch(run.model, run.optimizer, run.train_x, settings, run.generator)
        val_loss = validation_loss(run.model, run.val_x, settings.batch_size, settings.precision)
        yield run.end_epoch(train_loss, val_loss, time.perf_counter() - epoch_start)
    yield run.finish()
