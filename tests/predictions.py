"""Constructed test predictions for the verdict's tests: balanced labels and predictions right on a chosen
share of them (no training)."""

import numpy as np

LABELS = np.repeat(np.arange(10), 100)  # 1,000 test images, 10 balanced classes: chance is 0.1


def predicted(accuracy: float, seed: int, labels=LABELS) -> list[int]:
    """Predictions right on a random `accuracy` share of the images, wrong (label + 1) elsewhere."""
    rng = np.random.default_rng(seed)
    right = rng.random(len(labels)) < accuracy
    return np.where(right, labels, (labels + 1) % 10).tolist()
