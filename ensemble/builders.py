"""What the config builds, each in one place: the members' and the baseline's autoencoder
factories, the train settings, and each member's seed."""

from __future__ import annotations

import dataclasses
from typing import Sequence

from ensemble.config import EnsembleConfig
from workers.models import AutoencoderFactory, CAEFactory, baseline_width, import_autoencoder
from workers.training import TrainSettings


def member_factory(config: EnsembleConfig, image_shape: Sequence[int]) -> AutoencoderFactory:
    """The members' autoencoder: the class `model.autoencoder` names (imported), else the built-in
    CAE of `model.*` for images of `image_shape` (C, H, W)."""
    if config.model.autoencoder is not None:
        return import_autoencoder(config.model.autoencoder)
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


_TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainSettings)} - {"seed"}


def train_settings(config: EnsembleConfig, seed: int) -> TrainSettings:
    """`train.*` as the member's epoch loop takes it, with the member's own seed."""
    return TrainSettings(seed=seed, **config.train.model_dump(include=_TRAIN_FIELDS))
