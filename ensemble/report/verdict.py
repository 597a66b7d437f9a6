"""What one run's figures say about the paper's claim, and no more: the paired comparison of the
ensemble and the baseline on the same test images (`comparison.compare`), whether the untrained
encoders are above chance, and what autoencoder training changed, each with its test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
from pydantic import BaseModel

from ensemble.report.comparison import Comparison, chance_sentence, compare
from ensemble.report.schema import BaselineReport, EnsembleReport
from ensemble.report.statistics import (
    accuracy_interval,
    chance_accuracy,
    format_p,
    mcnemar_exact_p,
    paired_difference_ci,
)
from workers.layout import TEST_PREDICTIONS, write_atomic


class TestPredictions(BaseModel):
    """Class indices each side predicted for the same test images, kept in the run directory so
    `ensemble select` and `ensemble curves` can compare without refitting, and users can run their
    own tests."""
    __test__ = False  # not a pytest test class, despite its name
    labels: list[int]
    ensemble: list[int]
    untrained: list[int]            # the same combiner on the untrained (epoch 0) encoders
    baseline: Optional[list[int]] = None

    def write(self, directory: Path) -> None:
        write_atomic(Path(directory) / TEST_PREDICTIONS, self.model_dump_json())

    @classmethod
    def read(cls, directory: Path) -> Optional["TestPredictions"]:
        path = Path(directory) / TEST_PREDICTIONS
        try:
            return cls.model_validate(json.loads(path.read_text())) if path.is_file() else None
        except ValueError:  # damaged: the caller refits what it needs
            return None


def verdict(predictions: TestPredictions, ensemble: EnsembleReport,
            baseline: Optional[BaselineReport]) -> tuple[Comparison, str]:
    """The comparison for report.json and the verdict's text: the claim, then the untrained reference.
    Time is compared end to end (training + combiner) and on the training phases alone."""
    trained = baseline if predictions.baseline is not None else None  # the baseline, when it was trained
    comparison = compare(predictions.ensemble, predictions.baseline if trained else None, predictions.labels,
                         ensemble.wall_seconds, trained.wall_seconds if trained else None,
                         ensemble.train_wall_seconds if trained else None,
                         trained.train_wall_seconds if trained else None)
    return comparison, f"{comparison.text} {untrained_reference(predictions)}"


def with_accuracy_intervals(predictions: TestPredictions, ensemble: EnsembleReport,
                            baseline: Optional[BaselineReport]) -> tuple[EnsembleReport, Optional[BaselineReport]]:
    """Each test accuracy with its Wilson score 95% interval, from the predictions the verdict tests."""
    labels = predictions.labels
    ensemble = ensemble.model_copy(update={
        "test_accuracy_ci95": accuracy_interval(predictions.ensemble, labels),
        "untrained_test_accuracy_ci95": accuracy_interval(predictions.untrained, labels)})
    if baseline is not None and predictions.baseline is not None:
        baseline = baseline.model_copy(update={"test_accuracy_ci95": accuracy_interval(predictions.baseline, labels)})
    return ensemble, baseline


def untrained_reference(predictions: TestPredictions) -> str:
    """Whether random (untrained) encoders already beat chance with this head, and what training changed,
    paired on the same test images."""
    labels = np.asarray(predictions.labels)
    trained = np.asarray(predictions.ensemble) == labels
    untrained = np.asarray(predictions.untrained) == labels
    n = len(labels)
    both, gained, lost = (int(np.sum(trained & untrained)), int(np.sum(trained & ~untrained)),
                          int(np.sum(~trained & untrained)))
    lo, hi = paired_difference_ci(both, gained, lost, n - both - gained - lost)
    return (f"{chance_sentence(float(untrained.mean()), n, chance_accuracy(labels))} Autoencoder training changed "
            f"the ensemble's accuracy by {(gained - lost) / n:+.4f} against it (95% CI [{lo:+.4f}, {hi:+.4f}], "
            f"McNemar p {format_p(mcnemar_exact_p(gained, lost))}).")
