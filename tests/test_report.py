import pytest

from ensemble.report import BaselineReport, EnsembleReport
from ensemble.report.verdict import verdict


def sides(ens_acc, ens_wall, base_acc, base_wall, untrained=0.9):
    ensemble = EnsembleReport(test_accuracy=ens_acc, wall_seconds=ens_wall, train_wall_seconds=ens_wall,
                              combiner_seconds=0, feature_seconds=0, fit_seconds=0, untrained_test_accuracy=untrained,
                              members_used=[0], resources="", parallel_slots=1)
    baseline = BaselineReport(index=-1, name="baseline", epochs_trained=1, selected_epoch=1, stop_reason="",
                              selection_reason="", diverged=False, train_seconds=1, history=[],
                              test_accuracy=base_acc, wall_seconds=base_wall, train_wall_seconds=base_wall,
                              combiner_seconds=0, resources="", width=1)
    return ensemble, baseline


@pytest.mark.parametrize("figures, start", [
    ((0.95, 50, 0.95, 90), "Supports the claim"),
    ((0.97, 90, 0.95, 50), "Better accuracy but not in less time"),
    ((0.97, 51, 0.95, 50), "Supports the claim: better accuracy in the same time"),
    ((0.95, 49, 0.95, 50), "Does not support the claim"),  # 2% faster is within the noise margin
    ((0.90, 50, 0.95, 90), "Faster but less accurate"),
    ((0.90, 90, 0.95, 50), "Does not support the claim"),
])
def test_verdict_follows_the_figures(figures, start):
    ensemble, baseline = sides(*figures)
    assert verdict(ensemble, baseline).startswith(start)


def test_verdict_reports_what_training_added_even_when_negative():
    ensemble, _ = sides(0.95, 50, 0.95, 90, untrained=0.96)
    text = verdict(ensemble, None)
    assert "cannot test the claim" in text and "-0.0100" in text
