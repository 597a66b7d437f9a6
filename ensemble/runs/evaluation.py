"""Frozen encoders from saved checkpoints -> fitted combiner -> test accuracy, timed.

In a run the members' actors send their features as they finish (`workers.encoding`), so here the
driver mostly stacks and fits; whatever did not arrive (an older run, `select`, a member whose actor
could not encode) is encoded here with the same code.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from classifier.combiner import fit_combiner
from classifier.features import encoder_features, member_features
from ensemble.config import CombinerConfig
from ensemble.data import Splits
from ensemble.report.entries import CombinerScore
from workers.encoding import EncodedEpochs, SplitFeatures, frozen_autoencoder
from workers.models import AutoencoderFactory

Chosen = Sequence[tuple[str, int]]  # (member directory name, epoch) pairs
Factories = Union[AutoencoderFactory, Mapping[str, AutoencoderFactory]]  # one for all, or by directory name


def factory_for(factories: Factories, name: str) -> AutoencoderFactory:
    """The autoencoder factory of one member directory (members may differ)."""
    return factories[name] if isinstance(factories, Mapping) else factories


def load_autoencoder(factory: AutoencoderFactory, member_dir: Path, epoch: int) -> nn.Module:
    """A frozen autoencoder with the weights of one saved epoch."""
    return frozen_autoencoder(factory, member_dir, epoch)


def fit_and_score(autoencoders: Sequence[nn.Module], train_x: torch.Tensor, train_y: torch.Tensor,
                  test_x: torch.Tensor, test_y: torch.Tensor, kind: str, head: str, seed: int) -> CombinerScore:
    started = time.perf_counter()
    train_features = member_features(autoencoders, train_x)
    test_features = member_features(autoencoders, test_x) if len(test_y) else None
    return score_features(train_features, test_features, train_y, test_y, kind, head, seed,
                          time.perf_counter() - started)


def score_features(train_features: Sequence[np.ndarray], test_features: Optional[Sequence[np.ndarray]],
                   train_y: torch.Tensor, test_y: torch.Tensor, kind: str, head: str, seed: int,
                   feature_seconds: float) -> CombinerScore:
    """Fit the combiner on the members' training features; score it on their test features (if any)."""
    combiner, fit_seconds = fit_combiner(kind, head, train_features, train_y.numpy(), random_state=seed)
    if test_features is None:
        return CombinerScore(combiner, None, np.empty(0, dtype=np.int64), feature_seconds, fit_seconds,
                             train_features)
    predictions = combiner.predict_members(test_features)
    accuracy = float(np.mean(predictions == test_y.numpy()))
    return CombinerScore(combiner, accuracy, predictions, feature_seconds, fit_seconds, train_features,
                         test_features)


def score_checkpoints(factories: Factories, run_dir: Path, chosen: Chosen, splits: Splits,
                      combiner: CombinerConfig, seed: int,
                      encoded: Optional[Mapping[str, EncodedEpochs]] = None) -> CombinerScore:
    """Freeze the chosen checkpoints, fit `combiner` on the labelled training images' features (all, or
    data.labels_per_class of each class), score on test.

    `encoded`: features the members' actors already computed (member name -> epoch -> split); a
    chosen checkpoint found there is not encoded again, the rest are encoded here, the same way."""
    started = time.perf_counter()
    per_member = [checkpoint_features(factory_for(factories, name), Path(run_dir) / name, epoch, splits,
                                      (encoded or {}).get(name, {})) for name, epoch in chosen]
    test = [features["test"] for features in per_member] if len(splits.test_y) else None
    return score_features([features["train"] for features in per_member], test, splits.labelled_y, splits.test_y,
                          combiner.kind, combiner.head, seed, time.perf_counter() - started)


def checkpoint_features(factory: AutoencoderFactory, member_dir: Path, epoch: int, splits: Splits,
                        encoded: EncodedEpochs) -> SplitFeatures:
    """One checkpoint's features of the images the combiner fits on ("train") and of the test images: as
    its actor sent them, or encoded here."""
    wanted = ["train"] + (["test"] if len(splits.test_y) else [])
    sent = encoded.get(epoch, {})
    if all(split in sent for split in wanted):
        return sent
    autoencoder = load_autoencoder(factory, member_dir, epoch)
    return {"train": encoder_features(autoencoder, splits.labelled_x),
            **({"test": encoder_features(autoencoder, splits.test_x)} if "test" in wanted else {})}


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
