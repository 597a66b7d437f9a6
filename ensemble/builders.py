"""What the config builds for the worker side, each in one place: the members' and the baseline's
autoencoder factories, the train settings, each member's seed and the stop rules; and the choice
of the checkpoint to freeze. Pure functions, tested without Ray.

A member's actor asks its rule (`workers.stopping`) after every epoch; the driver builds that
rule here from the config, and later asks `select_epoch` which saved checkpoint to freeze (a pure
function that lives in `workers.encoding`, so a finished member's actor picks the same epoch). The
baseline uses conventional early stopping and the same selection of the best epoch.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

from pydantic import BaseModel

from ensemble.config import BaselineConfig, EagerConfig, EnsembleConfig
from workers.encoding import EncodeRequest, Selection, select_epoch  # noqa: F401  (here for the driver's callers)
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


def member_fixed_epoch(cfg: EagerConfig) -> Optional[int]:
    return cfg.epoch if cfg.rule == "fixed" else None


def member_encoding(cfg: EagerConfig, reference: bool) -> EncodeRequest:
    """What each member's actor encodes when it finishes: the checkpoint `select_epoch` picks under
    this rule, and epoch 0 when the run scores the untrained reference (it has a test split)."""
    return EncodeRequest(fixed_epoch=member_fixed_epoch(cfg), reference=reference)
