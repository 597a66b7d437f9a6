"""Frozen encoders from saved checkpoints -> fitted combiner -> test accuracy, timed.

In a run the members' actors send their features as they finish (`workers.encoding`), so here the
driver mostly stacks and fits; whatever did not arrive (an older run, `select`, a member whose actor
could not encode) is encoded here with the same code.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from classifier.combiner import fit_combiner, own_head_predictions
from classifier.features import encoder_features, member_features
from classifier.side_by_side import side_by_side
from ensemble.config import CombinerConfig
from ensemble.data import Splits
from ensemble.report import MemberReport
from ensemble.report.entries import CombinerScore
from workers.encoding import OWN_HEAD, EncodedEpochs, SplitFeatures, frozen_autoencoder
from workers.memory_format import CONTIGUOUS, recorded_memory_format
from workers.models import AutoencoderFactory

Chosen = Sequence[tuple[str, int]]  # (member directory name, epoch) pairs
Factories = Union[AutoencoderFactory, Mapping[str, AutoencoderFactory]]  # one for all, or by directory name
Layouts = Mapping[str, str]  # memory format by member directory name; one not named: PyTorch's default


def recorded_layouts(members: Iterable[MemberReport]) -> dict[str, str]:
    """The memory format each member's (or the baseline's) actor trained and encoded in, by name, as its
    report placement records: checkpoints encoded again are laid out the same way, so their features come
    from the run's own arithmetic (and channels_last encoded the default CAE 1.28x as fast, 2026-12-07)."""
    return {member.name: recorded_memory_format(member.placement) for member in members}


def factory_for(factories: Factories, name: str) -> AutoencoderFactory:
    """The autoencoder factory of one member directory (members may differ)."""
    return factories[name] if isinstance(factories, Mapping) else factories


def load_autoencoder(factory: AutoencoderFactory, member_dir: Path, epoch: int,
                     memory_format: str = CONTIGUOUS) -> nn.Module:
    """A frozen autoencoder with the weights of one saved epoch, laid out in `memory_format`."""
    return frozen_autoencoder(factory, member_dir, epoch, memory_format=memory_format)


def frozen_member(factory: AutoencoderFactory, run_dir: Path, member: MemberReport) -> nn.Module:
    """A member's selected encoder, laid out as its actor trained and encoded it (report.json's placement):
    predictions then come from the features the run scored (and that layout measured faster there)."""
    assert member.selected_epoch is not None, f"{member.name} has no selected checkpoint"
    return load_autoencoder(factory, Path(run_dir) / member.name, member.selected_epoch,
                            recorded_memory_format(member.placement))


def fit_and_score(autoencoders: Sequence[nn.Module], train_x: torch.Tensor, train_y: torch.Tensor,
                  test_x: torch.Tensor, test_y: torch.Tensor, kind: str, head: str, seed: int) -> CombinerScore:
    started = time.perf_counter()
    train_features = member_features(autoencoders, train_x)
    test_features = member_features(autoencoders, test_x) if len(test_y) else None
    return score_features(train_features, test_features, train_y, test_y, kind, head, seed,
                          time.perf_counter() - started)


def score_features(train_features: Sequence[np.ndarray], test_features: Optional[Sequence[np.ndarray]],
                   train_y: torch.Tensor, test_y: torch.Tensor, kind: str, head: str, seed: int,
                   feature_seconds: float, max_iter: int = 200, who: str = "the ensemble's") -> CombinerScore:
    """Fit the combiner on the members' training features; score it on their test features (if any).
    `who`: whose head it is, for a warning that it did not converge."""
    combiner, fit_seconds = fit_combiner(kind, head, train_features, train_y.numpy(), random_state=seed,
                                         max_iter=max_iter, who=who)
    if test_features is None:
        return CombinerScore(combiner, None, np.empty(0, dtype=np.int64), feature_seconds, fit_seconds,
                             train_features)
    predictions = combiner.predict_members(test_features)
    accuracy = float(np.mean(predictions == test_y.numpy()))
    return CombinerScore(combiner, accuracy, predictions, feature_seconds, fit_seconds, train_features,
                         test_features)


def score_checkpoints(factories: Factories, run_dir: Path, chosen: Chosen, splits: Splits,
                      combiner: CombinerConfig, seed: int,
                      encoded: Optional[Mapping[str, EncodedEpochs]] = None, who: str = "the ensemble's",
                      layouts: Optional[Layouts] = None) -> CombinerScore:
    """Freeze the chosen checkpoints, fit `combiner` on the labelled training images' features (all, or
    data.labels_per_class of each class), score on test.

    `encoded`: features the members' actors already computed (member name -> epoch -> split); a
    chosen checkpoint found there is not encoded again, the rest are encoded here, the same way, in the
    layout `layouts` names for each (`recorded_layouts`)."""
    features, seconds = timed_features(factories, run_dir, chosen, splits, encoded, layouts)
    return scored(features, splits, combiner, seed, seconds, who)


@dataclass(frozen=True)
class RunScores:
    """What a run's evaluation fits: the ensemble's combiner, the reference and each member alone."""
    ensemble: CombinerScore
    untrained: Optional[CombinerScore]  # the same combiner on the epoch-0 encoders; None: no test split
    alone: list[np.ndarray]             # each chosen member's own head's test predictions ([]: no test split)


def score_run(factories: Factories, run_dir: Path, chosen: Chosen, splits: Splits, combiner: CombinerConfig,
              seed: int, encoded: Optional[Mapping[str, EncodedEpochs]] = None,
              layouts: Optional[Layouts] = None) -> RunScores:
    """`score_checkpoints` for the chosen checkpoints and for their untrained (epoch-0) encoders, and
    each member's own head: independent fits, so they run side by side (`classifier.side_by_side`),
    the longest first. The reference and the members' heads need a test split to be scored on."""
    trained, seconds = timed_features(factories, run_dir, chosen, splits, encoded, layouts)
    if not len(splits.test_y):
        return RunScores(scored(trained, splits, combiner, seed, seconds), None, [])
    untrained, untrained_seconds = timed_features(factories, run_dir, [(name, 0) for name, _ in chosen], splits,
                                                  encoded, layouts)
    to_fit = [features for features in trained if OWN_HEAD not in features]  # heads the actors did not fit
    ensemble, reference, *fitted = side_by_side(
        [partial(scored, trained, splits, combiner, seed, seconds),
         partial(scored, untrained, splits, combiner, seed, untrained_seconds, "the untrained encoders'"),
         *alone_jobs([f["train"] for f in to_fit], [f["test"] for f in to_fit], splits.labelled_y, combiner, seed)])
    heads = iter(fitted)
    return RunScores(ensemble, reference, [f[OWN_HEAD] if OWN_HEAD in f else next(heads) for f in trained])


def timed_features(factories: Factories, run_dir: Path, chosen: Chosen, splits: Splits,
                   encoded: Optional[Mapping[str, EncodedEpochs]], layouts: Optional[Layouts] = None
                   ) -> tuple[list[SplitFeatures], float]:
    """Each chosen checkpoint's features (`checkpoint_features`), and the seconds they took."""
    started = time.perf_counter()
    features = [checkpoint_features(factory_for(factories, name), Path(run_dir) / name, epoch, splits,
                                    (encoded or {}).get(name, {}), (layouts or {}).get(name, CONTIGUOUS))
                for name, epoch in chosen]
    return features, time.perf_counter() - started


def scored(features: Sequence[SplitFeatures], splits: Splits, combiner: CombinerConfig, seed: int,
           feature_seconds: float, who: str = "the ensemble's") -> CombinerScore:
    test = [member["test"] for member in features] if len(splits.test_y) else None
    return score_features([member["train"] for member in features], test, splits.labelled_y, splits.test_y,
                          combiner.kind, combiner.head, seed, feature_seconds, combiner.max_iter, who)


def checkpoint_features(factory: AutoencoderFactory, member_dir: Path, epoch: int, splits: Splits,
                        encoded: EncodedEpochs, memory_format: str = CONTIGUOUS) -> SplitFeatures:
    """One checkpoint's features of the images the combiner fits on ("train") and of the test images: as
    its actor sent them, or encoded here with its weights in `memory_format`."""
    wanted = ["train"] + (["test"] if len(splits.test_y) else [])
    sent = encoded.get(epoch, {})
    if all(split in sent for split in wanted):
        return sent
    autoencoder = load_autoencoder(factory, member_dir, epoch, memory_format)
    return {"train": encoder_features(autoencoder, splits.labelled_x),
            **({"test": encoder_features(autoencoder, splits.test_x)} if "test" in wanted else {})}


def member_predictions(score: CombinerScore, train_y: torch.Tensor, combiner: CombinerConfig,
                       seed: int) -> list[np.ndarray]:
    """Each member alone: the same head kind fitted on that member's training features only, its
    predictions on the test images (for `members[i].test_accuracy` and the diversity figures); the
    members' heads are fitted side by side."""
    if score.test_features is None or score.train_features is None:  # no test split, or released
        return []
    return side_by_side(alone_jobs(score.train_features, score.test_features, train_y, combiner, seed))


def alone_jobs(train: Sequence[np.ndarray], test: Sequence[np.ndarray], train_y: torch.Tensor,
               combiner: CombinerConfig, seed: int) -> list:
    return [partial(own_head_predictions, combiner.kind, combiner.head, seed, member_train, train_y.numpy(),
                    member_test, combiner.max_iter) for member_train, member_test in zip(train, test, strict=True)]
