"""The verdict a report ends with: the paired test on the same test images, chance level, and what
training changed; built from constructed predictions (no training)."""

import pytest

from ensemble.report import BaselineReport, EnsembleReport
from ensemble.report.verdict import TestPredictions, verdict
from tests.predictions import LABELS, predicted


def sides(seconds, train_seconds=None) -> tuple:
    """The report entries the verdict reads: each side's wall-clock and its training phase's."""
    train = train_seconds or seconds
    return (EnsembleReport.model_construct(wall_seconds=seconds[0], train_wall_seconds=train[0]),
            BaselineReport.model_construct(wall_seconds=seconds[1], train_wall_seconds=train[1]))


def run(ensemble: float, baseline: float | None, untrained: float = 0.9, seconds=(20.0, 30.0),
        train_seconds=None) -> tuple:
    predictions = TestPredictions(labels=LABELS.tolist(), ensemble=predicted(ensemble, 1),
                                  untrained=predicted(untrained, 2),
                                  baseline=predicted(baseline, 3) if baseline is not None else None)
    ensemble_side, baseline_side = sides(seconds, train_seconds)
    return verdict(predictions, ensemble_side, baseline_side if baseline is not None else None)


@pytest.mark.parametrize("ensemble, baseline, seconds, outcome, start", [
    (0.97, 0.90, (20.0, 30.0), "better-faster", "Supports the claim: better accuracy in less time"),
    (0.95, 0.95, (20.0, 30.0), "same-accuracy-faster",
     "Supports the claim: no detectable accuracy difference on 1,000 test images, in less time"),
    (0.95, 0.95, (30.0, 20.0), "same-accuracy-slower",
     "Does not support the claim: no detectable accuracy difference on 1,000 test images, in more time"),
    (0.85, 0.95, (20.0, 30.0), "worse-faster", "Does not support the claim: worse accuracy in less time"),
    (0.97, 0.90, (30.0, 30.5), "better-same-time", "Supports the claim: better accuracy in the same time"),
])
def test_the_paired_test_decides_better_same_and_worse(ensemble, baseline, seconds, outcome, start):
    comparison, text = run(ensemble, baseline, seconds=seconds)
    assert comparison.outcome == outcome and text.startswith(start)
    assert "95% CI [" in text and "McNemar p" in text
    assert comparison.ci95[0] <= comparison.accuracy_difference <= comparison.ci95[1]


def test_a_small_gap_within_noise_is_the_same_accuracy():
    comparison, text = run(0.956, 0.948, seconds=(19.6, 29.3))
    assert comparison.accuracy == "same" and comparison.mcnemar_p >= 0.05
    assert comparison.ci95[0] < 0 < comparison.ci95[1]
    assert text.startswith("Supports the claim: no detectable accuracy difference on 1,000 test images, in less "
                           "time (difference ")
    assert "the same accuracy" not in text


def test_both_at_chance_cannot_test_the_claim_and_never_supports_it():
    comparison, text = run(0.1, 0.1, untrained=0.1)
    assert comparison.outcome == "not-testable-at-chance" and comparison.supports_claim is None
    assert text.startswith("Cannot test the claim on this data: neither model beats chance")
    assert "not above chance" in text  # the untrained-encoder line says so too


def test_the_untrained_reference_is_paired_and_tested():
    _, text = run(0.95, 0.95, untrained=0.96)
    assert "The same combiner on the untrained encoders (epoch 0) reaches" in text and "above chance" in text
    assert "Autoencoder training changed the ensemble's accuracy by -0.0" in text and text.count("McNemar p") == 2


def test_no_baseline_says_the_claim_is_not_tested():
    comparison, text = run(0.95, None)
    assert comparison.outcome == "no-baseline" and text.startswith("No baseline was trained")


def test_predictions_round_trip_through_the_run_directory(tmp_path):
    predictions = TestPredictions(labels=[0, 1], ensemble=[0, 0], untrained=[1, 1], baseline=None)
    predictions.write(tmp_path)
    assert TestPredictions.read(tmp_path) == predictions
    (tmp_path / "test_predictions.json").write_text("{not json")
    assert TestPredictions.read(tmp_path) is None and TestPredictions.read(tmp_path / "missing") is None
