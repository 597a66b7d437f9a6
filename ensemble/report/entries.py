"""The report's entries, and what a fitted combiner scored (`CombinerScore`, from
`ensemble.runs.evaluation`). A member's entry is built next to its live record, in
`ensemble.scheduling.records`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from classifier.combiner import EnsembleCombiner
from ensemble.config import EnsembleConfig
from ensemble.data import Splits
from ensemble.report.diversity import Diversity, diversity
from ensemble.report.schema import BaselineReport, DatasetReport, EnsembleReport, MemberReport


@dataclass
class CombinerScore:
    """A combiner fitted on frozen encoders, with its test accuracy and predictions, timed."""
    combiner: EnsembleCombiner
    test_accuracy: Optional[float]  # None: the run held out no test split (data.test_size=0)
    test_predictions: np.ndarray
    feature_seconds: float
    fit_seconds: float
    # each member's features, kept for its own head (`runs.evaluation.member_predictions`); not timed here
    train_features: Optional[Sequence[np.ndarray]] = field(default=None, repr=False)
    test_features: Optional[Sequence[np.ndarray]] = field(default=None, repr=False)

    @property
    def seconds(self) -> float:
        return self.feature_seconds + self.fit_seconds


def ensemble_report(config: EnsembleConfig, members_wall: float, slots: int, share: str, score: CombinerScore,
                    untrained: Optional[CombinerScore], members: list[MemberReport],
                    diversity: Optional[Diversity] = None) -> EnsembleReport:
    """The ensemble's entry: `members_wall` seconds of training in `slots` parallel slots of `share` each."""
    return EnsembleReport(
        parameters=total_parameters([m for m in members if m.selected_epoch is not None]), diversity=diversity,
        test_accuracy=score.test_accuracy, wall_seconds=members_wall + score.seconds,
        train_wall_seconds=members_wall, combiner_seconds=score.seconds,
        feature_seconds=score.feature_seconds, fit_seconds=score.fit_seconds,
        head_tolerance=getattr(score.combiner, "tol_", None),
        untrained_test_accuracy=untrained.test_accuracy if untrained is not None else None,
        members_used=[m.index for m in members if m.selected_epoch is not None],
        resources=f"{config.members} members x {share}", parallel_slots=slots)


def baseline_report(base: MemberReport, baseline_wall: float, share: str, score: CombinerScore,
                    width: float) -> BaselineReport:
    return BaselineReport(
        **base.model_dump(exclude={"test_accuracy"}), test_accuracy=score.test_accuracy,
        wall_seconds=baseline_wall + score.seconds, train_wall_seconds=baseline_wall,
        combiner_seconds=score.seconds, resources=share, width=width)


def total_parameters(members: Sequence[MemberReport]) -> Optional[int]:
    counts = [(m.architecture or {}).get("parameters") for m in members]
    known = [count for count in counts if count is not None]
    return sum(known) if counts and len(known) == len(counts) else None


def dataset_report(splits: Splits) -> DatasetReport:
    return DatasetReport(source=splits.source, image_shape=list(splits.image_shape), num_classes=splits.num_classes,
                         classes=list(splits.classes), labels=list(splits.label_values),
                         train=len(splits.train_y), val=len(splits.val_y), test=len(splits.test_y),
                         labelled=len(splits.labelled_y), labels_per_class=splits.data.labels_per_class if splits.data
                         else None, unlabelled=len(splits.unlabelled_x) if splits.unlabelled_x is not None else 0,
                         **(splits.record or {}))


def with_diversity(members: list[MemberReport], used: Sequence[str], member_predictions: Sequence[np.ndarray],
                   ensemble_predictions: np.ndarray, labels: Sequence[int]
                   ) -> tuple[list[MemberReport], Optional[Diversity]]:
    """Each used member's own test accuracy, and the ensemble's diversity; unchanged without a test split."""
    if not member_predictions or not len(labels):
        return members, None
    own = dict(zip(used, member_predictions, strict=True))
    truth = np.asarray(labels)
    members = [m.model_copy(update={"test_accuracy": float(np.mean(own[m.name] == truth)) if m.name in own
                                    else None}) for m in members]
    indices = {m.name: m.index for m in members}
    return members, diversity([indices[name] for name in used], member_predictions, ensemble_predictions, truth)
