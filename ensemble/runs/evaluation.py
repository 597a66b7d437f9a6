"""Frozen encoders from saved checkpoints -> fitted combiner -> test accuracy, timed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Mapping, Sequence, Union

import numpy as np
import torch
from torch import nn

from classifier.combiner import fit_combiner
from classifier.features import member_features
from ensemble.config import CombinerConfig
from ensemble.data import Splits
from ensemble.report.entries import CombinerScore
from workers.checkpoints import load_weights
from workers.layout import checkpoint_dir
from workers.models import AutoencoderFactory, load_matching

Chosen = Sequence[tuple[str, int]]  # (member directory name, epoch) pairs
Factories = Union[AutoencoderFactory, Mapping[str, AutoencoderFactory]]  # one for all, or by directory name


def factory_for(factories: Factories, name: str) -> AutoencoderFactory:
    """The autoencoder factory of one member directory (members may differ)."""
    return factories[name] if isinstance(factories, Mapping) else factories


def load_autoencoder(factory: AutoencoderFactory, member_dir: Path, epoch: int) -> nn.Module:
    """A frozen autoencoder with the weights of one saved epoch."""
    path = checkpoint_dir(member_dir, epoch)
    model = load_matching(factory(), load_weights(path), str(path))
    model.eval().requires_grad_(False)
    return model


def fit_and_score(autoencoders: Sequence[nn.Module], train_x: torch.Tensor, train_y: torch.Tensor,
                  test_x: torch.Tensor, test_y: torch.Tensor, kind: str, head: str, seed: int) -> CombinerScore:
    started = time.perf_counter()
    train_features = member_features(autoencoders, train_x)
    test_features = member_features(autoencoders, test_x) if len(test_y) else None
    feature_seconds = time.perf_counter() - started
    combiner, fit_seconds = fit_combiner(kind, head, train_features, train_y.numpy(), random_state=seed)
    if test_features is None:
        return CombinerScore(combiner, None, np.empty(0, dtype=np.int64), feature_seconds, fit_seconds,
                             train_features)
    predictions = combiner.predict_members(test_features)
    accuracy = float(np.mean(predictions == test_y.numpy()))
    return CombinerScore(combiner, accuracy, predictions, feature_seconds, fit_seconds, train_features,
                         test_features)


def score_checkpoints(factories: Factories, run_dir: Path, chosen: Chosen, splits: Splits,
                      combiner: CombinerConfig, seed: int) -> CombinerScore:
    """Freeze the chosen checkpoints, fit `combiner` on the labelled training images' features (all, or
    data.labels_per_class of each class), score on test."""
    autoencoders = [load_autoencoder(factory_for(factories, name), Path(run_dir) / name, epoch)
                    for name, epoch in chosen]
    return fit_and_score(autoencoders, splits.labelled_x, splits.labelled_y, splits.test_x, splits.test_y,
                         combiner.kind, combiner.head, seed)


def member_predictions(score: CombinerScore, train_y: torch.Tensor, combiner: CombinerConfig,
                       seed: int) -> list[np.ndarray]:
    """Each member alone: the same head kind fitted on that member's training features only, its
    predictions on the test images (for `members[i].test_accuracy` and the diversity figures)."""
    if score.test_features is None:
        return []
    predictions = []
    for train, test in zip(score.train_features, score.test_features, strict=True):
        alone, _ = fit_combiner(combiner.kind, combiner.head, [train], train_y.numpy(), random_state=seed)
        predictions.append(alone.predict_members([test]))
    return predictions
