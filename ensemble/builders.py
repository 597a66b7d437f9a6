"""What the config builds for the worker side, each in one place: the members' and the baseline's
autoencoder factories, the train settings, each member's seed and the stop rules; and the choice
of the checkpoint to freeze. Pure functions, tested without Ray.

A member's actor asks its rule (`workers.stopping`) after every epoch; the driver builds that
rule here from the config, and later asks `select_epoch` which saved checkpoint to freeze. The
baseline uses conventional early stopping and the same selection of the best epoch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Sequence

from pydantic import BaseModel

from ensemble.config import BaselineConfig, EagerConfig, EnsembleConfig
from workers.history import EpochRecord
from workers.models import AutoencoderFactory, CAEFactory, baseline_width, import_autoencoder
from workers.stopping import EagerStop, EarlyStopping
from workers.training import TrainSettings


def member_factory(config: EnsembleConfig, image_shape: Sequence[int], trust_code: bool = False) -> AutoencoderFactory:
    """The members' autoencoder: the class `model.autoencoder` names (imported if `trust_code`, or
    if this process imported its module already: see `workers.models.trusts`), else the built-in
    CAE of `model.*` for images of `image_shape` (C, H, W)."""
    if config.model.autoencoder is not None:
        return import_autoencoder(config.model.autoencoder, trust_code)
    return cae_factory(config, image_shape)


def cae_factory(config: EnsembleConfig, image_shape: Sequence[int]) -> CAEFactory:
    """The built-in CAE of `model.*`."""
    m = config.model
    return CAEFactory(tuple(image_shape), m.channels, m.kernel_size, m.activation, m.pooling)


def baseline_factory(config: EnsembleConfig, image_shape: Sequence[int]) -> CAEFactory:
    """The monolithic baseline: the built-in CAE, `baseline.width` times as wide (also when the
    members are a custom autoencoder)."""
    width = baseline_width(config.members, config.baseline.width)
    return dataclasses.replace(cae_factory(config, image_shape), width=width)


def member_seed(seed: int, index: int) -> int:
    """Distinct, reproducible seeds per member; the baseline (index -1) gets its own too."""
    return seed * 1000 + index + 1


# What the builders below give a worker-side class themselves; its other fields come from a config section.
BUILT_HERE = {TrainSettings: {"seed"}, EagerStop: {"max_epochs"}, EarlyStopping: set()}


def from_section(cls: type, section: BaseModel, **built_here):
    """`cls` (a worker-side dataclass) with every field it shares with the config `section` taken from
    there, so the worker's own defaults never decide a run (tests/test_config.py holds the names and
    defaults equal), and the rest, `built_here`, from the caller."""
    shared = {f.name for f in dataclasses.fields(cls)} - BUILT_HERE[cls]
    return cls(**section.model_dump(include=shared), **built_here)


def train_settings(config: EnsembleConfig, seed: int) -> TrainSettings:
    """`train.*` as the member's epoch loop takes it, with the member's own seed."""
    return from_section(TrainSettings, config.train, seed=seed)


def member_rule(cfg: EagerConfig, max_epochs: int) -> EagerStop:
    """A member's eager rule: `eager.*`, within `train.epochs` (`max_epochs`)."""
    return from_section(EagerStop, cfg, max_epochs=max_epochs)


def baseline_rule(cfg: BaselineConfig) -> EarlyStopping:
    """The baseline's conventional early stopping: `baseline.patience`, `min_delta`, `max_epochs`."""
    return from_section(EarlyStopping, cfg)


@dataclass(frozen=True)
class Selection:
    epoch: Optional[int]  # None: no usable checkpoint (diverged in its first epoch)
    reason: str


def select_epoch(history: Sequence[EpochRecord], fixed_epoch: Optional[int] = None) -> Selection:
    """The checkpoint to freeze: a fixed epoch when asked, else the lowest finite validation loss."""
    finite = [r for r in history if r.finite]
    if fixed_epoch is not None:
        if any(r.epoch == fixed_epoch for r in finite):
            return Selection(fixed_epoch, f"fixed epoch {fixed_epoch}")
        return Selection(None, f"epoch {fixed_epoch} was not trained (or diverged)")
    if not finite:
        return Selection(None, "no finite epoch: diverged in its first epoch")
    best = min(finite, key=lambda r: (r.val_loss, r.epoch))
    return Selection(best.epoch, f"lowest validation loss {best.val_loss:.4g} at epoch {best.epoch}")


def member_fixed_epoch(cfg: EagerConfig) -> Optional[int]:
    return cfg.epoch if cfg.rule == "fixed" else None
