"""The statistical tests behind the verdict, as pure functions: chance level, McNemar's exact test,
Newcombe's paired interval, the t and sign tests across seeds, and how p-values are written.
The sources and the checks against published examples are in `ensemble/report/comparison.py`'s
docstring and tests/test_comparison.py."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

ALPHA = 0.05            # every test here decides at the 5% level
CONFIDENCE = 0.95       # and every interval is a 95% one


def _binomtest(*args, **kwargs):
    # scipy.stats is imported on first use, not with the module: it would cost every `ensemble`
    # process (an exit-2 error included) its import time
    from scipy.stats import binomtest
    return binomtest(*args, **kwargs)


def _ttest_1samp(*args, **kwargs):
    from scipy.stats import ttest_1samp
    return ttest_1samp(*args, **kwargs)


def chance_accuracy(labels: ArrayLike) -> float:
    """The accuracy of always answering the most common test label: the floor a model must beat."""
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    return float(counts.max() / counts.sum())


def above_chance_p(correct: int, n: int, chance: float) -> float:
    """One-sided exact binomial p-value for 'accuracy > chance'."""
    return float(_binomtest(int(correct), int(n), chance, alternative="greater").pvalue)


def mcnemar_exact_p(ensemble_only: int, baseline_only: int) -> float:
    """McNemar's exact test: the discordant pairs split 50:50 under 'equal accuracy'."""
    discordant = ensemble_only + baseline_only
    if discordant == 0:
        return 1.0  # no image tells the two apart: no evidence either way
    return float(_binomtest(ensemble_only, discordant, 0.5).pvalue)


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson's score interval for one proportion (no continuity correction), as scipy computes it."""
    interval = _binomtest(int(successes), int(n)).proportion_ci(confidence, method="wilson")
    return float(interval.low), float(interval.high)


def accuracy_interval(predictions, labels) -> tuple[float, float]:
    """An accuracy's Wilson 95% interval from the predictions and the labels of the same images."""
    labels = np.asarray(labels)
    return wilson_interval(int(np.sum(np.asarray(predictions) == labels)), labels.size)


def paired_difference_ci(both: int, first_only: int, second_only: int, neither: int,
                         confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Newcombe (1998) method 10 interval for p1 - p2 from a paired 2x2 table (p1: first correct)."""
    n = both + first_only + second_only + neither
    p1, p2 = (both + first_only) / n, (both + second_only) / n
    l1, u1 = wilson_interval(both + first_only, n, confidence)
    l2, u2 = wilson_interval(both + second_only, n, confidence)
    phi = _corrected_phi(both, first_only, second_only, neither)
    lower = math.sqrt((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2)
    upper = math.sqrt((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2)
    return p1 - p2 - lower, p1 - p2 + upper


def _corrected_phi(a: int, b: int, c: int, d: int) -> float:
    """The pairs' correlation as Newcombe's method 10 uses it: a positive a*d - b*c is shrunk by n/2
    (a continuity correction) and floored at 0; 0 when a margin is empty."""
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    if margins == 0:
        return 0.0
    excess: float = a * d - b * c
    if excess > 0:
        excess = max(excess - (a + b + c + d) / 2, 0.0)
    return excess / math.sqrt(margins)


def mean_test(values: Sequence[float]) -> tuple[float, tuple[float, float] | None, float | None]:
    """Mean, its 95% t interval and the two-sided one-sample t-test p against 0; the interval and p
    are None with fewer than two values or none of them different (the t statistic is undefined)."""
    array = np.asarray(values, dtype=float)
    mean = float(array.mean())
    if array.size < 2 or np.all(array == array[0]):
        return mean, None, None
    result = _ttest_1samp(array, 0.0)
    interval = result.confidence_interval(CONFIDENCE)
    return mean, (float(interval.low), float(interval.high)), float(result.pvalue)


def sign_test(values: Sequence[float]) -> tuple[int, int, float]:
    """Positives, negatives and the two-sided sign-test p (zeros dropped; p = 1 when all are zero)."""
    positives = sum(1 for v in values if v > 0)
    negatives = sum(1 for v in values if v < 0)
    if positives + negatives == 0:
        return 0, 0, 1.0
    return positives, negatives, float(_binomtest(positives, positives + negatives, 0.5).pvalue)


def format_p(p: float) -> str:
    """'= 0.19' or '< 0.001', to follow 'p' in a sentence."""
    text = p_text(p)
    return text if text.startswith("<") else f"= {text}"


def p_text(p: float) -> str:
    """'0.19' or '< 0.001': two significant digits, more when rounding would cross ALPHA."""
    if p < 0.001:
        return "< 0.001"
    for digits in (2, 3, 4, 5):
        text = f"{p:#.{digits}g}"
        if (float(text) < ALPHA) == (p < ALPHA):
            return text
    return f"{p:.6f}"
