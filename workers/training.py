"""One member's epoch loop: pure PyTorch, no Ray.

The whole training split stays in (device) memory and batches are drawn with `randperm`
from a seeded generator, so a resumed run replays the same batches: model, optimizer and
generator state are all in the checkpoint.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Generator, Optional, Sequence

import torch
from torch import nn

from ensemble.eager import Decision
from workers.checkpoints import load_latest_valid, save_checkpoint, sweep_temporaries
from workers.history import EpochRecord, write_history

StopRule = Callable[[Sequence[EpochRecord]], Decision]
EpochCallback = Callable[[EpochRecord, Decision], None]
OUTCOME = "outcome.json"
HISTORY = "history.jsonl"


@dataclass(frozen=True)
class TrainSettings:
    batch_size: int = 100
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    grad_clip: Optional[float] = None
    seed: int = 0
    precision: str = "fp32"        # "bf16": autocast forward passes to bfloat16
    channels_last: bool = False
    compile: bool = False


def autocast(device: torch.device, precision: str):
    """bf16 autocast where asked; fp32 is a no-op context."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def prepare(model: nn.Module, images: Sequence[torch.Tensor], settings: TrainSettings):
    """The fast paths chosen in the settings, applied once before training."""
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = [x.contiguous(memory_format=torch.channels_last) for x in images]
    if settings.compile:
        model.compile()  # in place: state_dict keys stay the same, so checkpoints do not change
    return model, images


@dataclass
class Outcome:
    history: list[EpochRecord]
    stop_reason: str
    diverged: bool
    train_seconds: float
    resumed_from: Optional[int] = None
    skipped_checkpoints: list[str] = field(default_factory=list)

    @property
    def epochs_trained(self) -> int:
        return len(self.history)


def reconstruction_loss(reconstruction: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Squared error summed over pixels, averaged over examples."""
    return (reconstruction - images).pow(2).flatten(1).sum(1).mean()


def make_optimizer(model: nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    if settings.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum)
    return torch.optim.Adam(model.parameters(), lr=settings.lr)


def train_one_epoch(model, optimizer, images, settings: TrainSettings, generator) -> float:
    model.train()
    order = torch.randperm(len(images), generator=generator, device=generator.device)
    total = 0.0
    for start in range(0, len(images), settings.batch_size):
        batch = images[order[start:start + settings.batch_size]]
        with autocast(images.device, settings.precision):
            loss = reconstruction_loss(model(batch).float(), batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if settings.grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        optimizer.step()
        total += loss.item() * len(batch)
    return total / len(images)


@torch.no_grad()
def evaluate(model, images, batch_size: int, precision: str = "fp32") -> float:
    model.eval()
    total = 0.0
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        with autocast(images.device, precision):
            total += reconstruction_loss(model(batch).float(), batch).item() * len(batch)
    return total / len(images)


def read_outcome(member_dir: Path) -> Optional[Outcome]:
    path = Path(member_dir) / OUTCOME
    if not path.exists():
        return None
    raw = json.loads(path.read_text())
    raw["history"] = [EpochRecord.from_json(r) for r in raw["history"]]
    return Outcome(**raw)


def _write_outcome(member_dir: Path, outcome: Outcome) -> None:
    raw = asdict(outcome)
    raw["history"] = [r.to_json() for r in outcome.history]
    tmp = member_dir / f".{OUTCOME}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(raw, indent=1))
    os.replace(tmp, member_dir / OUTCOME)


def train_member(model: nn.Module, train_x: torch.Tensor, val_x: torch.Tensor, settings: TrainSettings,
                 should_stop: StopRule, member_dir: Path, on_epoch: Optional[EpochCallback] = None) -> Outcome:
    """Train to the end, calling `on_epoch(record, decision)` after every epoch."""
    epochs = member_epochs(model, train_x, val_x, settings, should_stop, member_dir)
    while True:
        try:
            record, decision = next(epochs)
        except StopIteration as finished:
            return finished.value
        if on_epoch is not None:
            on_epoch(record, decision)


def member_epochs(model: nn.Module, train_x: torch.Tensor, val_x: torch.Tensor, settings: TrainSettings,
                  should_stop: StopRule, member_dir: Path
                  ) -> Generator[tuple[EpochRecord, Decision], None, Outcome]:
    """Train until `should_stop` says so, yielding after every epoch; checkpoint every epoch;
    resume if checkpoints exist. Returns the Outcome.

    `model` must already sit on the device that holds `train_x` and `val_x`."""
    member_dir = Path(member_dir)
    finished = read_outcome(member_dir)
    if finished is not None:  # a restarted run: this member is done, do not retrain it
        return finished
    device = train_x.device
    model, (train_x, val_x) = prepare(model, (train_x, val_x), settings)
    optimizer = make_optimizer(model, settings)
    generator = torch.Generator(device=device)
    generator.manual_seed(settings.seed)

    # --- resume from the newest valid checkpoint, or save the untrained weights as epoch 0 ---
    sweep_temporaries(member_dir)
    latest, skipped = load_latest_valid(member_dir, map_location=device)
    if latest is not None:
        model.load_state_dict(latest.weights)
        if latest.epoch > 0:
            optimizer.load_state_dict(latest.state["optimizer"])
        generator.set_state(latest.state["generator"].to("cpu"))
        history = [EpochRecord.from_json(r) for r in latest.meta.get("history", [])]
        seconds_before = latest.meta.get("train_seconds", 0.0)
    else:
        history, seconds_before = [], 0.0
        save_checkpoint(member_dir, 0, model.state_dict(),
                        {"optimizer": {}, "generator": generator.get_state()}, {"train_seconds": 0.0})
    resumed_from = latest.epoch if latest is not None else None
    decision = should_stop(history) if history else Decision(False, "running")
    started = time.perf_counter()

    # --- the epoch loop: train, validate, ask the eager rule, checkpoint ---
    while not decision.stop:
        epoch_start = time.perf_counter()
        train_loss = train_one_epoch(model, optimizer, train_x, settings, generator)
        val_loss = evaluate(model, val_x, settings.batch_size, settings.precision)
        record = EpochRecord(len(history) + 1, train_loss, val_loss, time.perf_counter() - epoch_start)
        history.append(record)
        decision = should_stop(history)
        if record.finite:  # never checkpoint NaN weights: the last finite checkpoint stays the newest
            save_checkpoint(member_dir, record.epoch, model.state_dict(),
                            {"optimizer": optimizer.state_dict(), "generator": generator.get_state()},
                            {"train_seconds": seconds_before + time.perf_counter() - started,
                             "history": [r.to_json() for r in history]})
        write_history(member_dir / HISTORY, history)
        yield record, decision

    outcome = Outcome(history, decision.reason, decision.diverged,
                      seconds_before + time.perf_counter() - started, resumed_from, [str(e) for e in skipped])
    _write_outcome(member_dir, outcome)
    return outcome
