"""What one run's figures say about the paper's claim, and no more."""

from __future__ import annotations

from typing import Optional

from ensemble.report.models import BaselineReport, EnsembleReport


def verdict(ensemble: EnsembleReport, baseline: Optional[BaselineReport], tolerance: float = 0.005) -> str:
    """What the measured figures say about the paper's claim, and no more."""
    if ensemble.test_accuracy is None:
        return "No test split was held out (data.test_size=0), so this run cannot test the claim."
    gain = ensemble.test_accuracy - ensemble.untrained_test_accuracy
    training = (f" Autoencoder training changed the ensemble's accuracy by {gain:+.4f} against the same "
                f"combiner on the untrained encoders ({ensemble.untrained_test_accuracy:.4f}).")
    return _claim(ensemble, baseline, tolerance) + training


# What one run's figures say about the claim, by outcome of `claim_outcome`.
CLAIM_OUTCOMES = {
    "supports": "Supports the claim: same or better accuracy in less time",
    "supports-same-time": "Supports the claim: better accuracy in the same time",
    "better-not-faster": "Better accuracy but not in less time",
    "faster-less-accurate": "Faster but less accurate: does not support the claim",
    "neither": "Does not support the claim: neither faster nor more accurate",
}
TIME_TOLERANCE = 0.05  # wall-clocks within 5% of each other count as the same time


def claim_outcome(ensemble: EnsembleReport, baseline: BaselineReport, tolerance: float = 0.005) -> str:
    """A key of CLAIM_OUTCOMES: accuracy within `tolerance` counts as the same, and wall-clocks
    within TIME_TOLERANCE of the baseline's as the same time (a run is never "faster" by noise)."""
    margin = TIME_TOLERANCE * baseline.wall_seconds
    faster = ensemble.wall_seconds < baseline.wall_seconds - margin
    same_time = abs(ensemble.wall_seconds - baseline.wall_seconds) <= margin
    delta = ensemble.test_accuracy - baseline.test_accuracy
    if faster and delta >= -tolerance:
        return "supports"
    if same_time and delta > tolerance:
        return "supports-same-time"
    if not faster and delta > tolerance:
        return "better-not-faster"
    return "faster-less-accurate" if faster else "neither"


def _claim(ensemble: EnsembleReport, baseline: Optional[BaselineReport], tolerance: float) -> str:
    if baseline is None:
        return "No baseline was trained, so this run cannot test the claim."
    figures = (f"ensemble {ensemble.test_accuracy:.4f} in {ensemble.wall_seconds:.1f} s, "
               f"baseline {baseline.test_accuracy:.4f} in {baseline.wall_seconds:.1f} s")
    return f"{CLAIM_OUTCOMES[claim_outcome(ensemble, baseline, tolerance)]} ({figures})."
