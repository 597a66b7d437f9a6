"""The scikit-learn estimator's per-fit overhead on tiny data (`ensemble bench` prints it).

`EagerEnsembleClassifier(members=2, epochs=1)` on all of scikit-learn's digits (1,797 8x8 images),
fitted `fits` times in one process: the first fit pays Ray's start, the later ones share it. Each
fit's wall-clock is set against its training seconds: the longest member's epochs (members train
in parallel) plus the combiner's fit. Target: a later fit at most 2x its training seconds.
Sharing one Ray session and keeping the actors a fit leaves idle (`scheduling.warm_actors`) are what
bring a later fit near it; the measurements before and after are in docs/performance.md (2026-12-05).
"""

from __future__ import annotations

import statistics
import time

TARGET = 2.0


def fit_overhead(fits: int = 3) -> dict:
    """Wall-clock and training seconds of `fits` fits, and the median ratio of the fits after the first."""
    from sklearn.datasets import load_digits

    from ensemble.estimator import EagerEnsembleClassifier
    from ensemble.scheduling.session import ray_session
    X, y = load_digits(return_X_y=True)
    started = time.perf_counter()
    with ray_session():  # the fits share it, as they would in a user's process; stopped after, as the bench's own
        ray_start = time.perf_counter() - started  # what the first fit of a process pays on top
        rows = [_one_fit(EagerEnsembleClassifier(members=2, epochs=1, eager_rule="none"), X, y) for _ in range(fits)]
    later = rows[1:] or rows
    ratio = statistics.median(r["ratio"] for r in later)
    return {"fits": rows, "ray_start_s": ray_start, "first_fit_s": rows[0]["fit_s"],
            "later_fit_s": statistics.median(r["fit_s"] for r in later), "ratio": ratio, "target": TARGET,
            "met": ratio <= TARGET}


def _one_fit(clf, X, y) -> dict:
    started = time.perf_counter()
    clf.fit(X, y)
    wall = time.perf_counter() - started
    report = clf.report_
    epochs = max(member.train_seconds for member in report.members)
    return {"fit_s": wall, "member_train_s": epochs, "combiner_s": report.ensemble.combiner_seconds,
            "ratio": wall / (epochs + report.ensemble.combiner_seconds)}


def fit_overhead_line(result: dict) -> str:
    """One line for the bench's table."""
    later = result["fits"][1:] or result["fits"]
    train = statistics.median(r["member_train_s"] + r["combiner_s"] for r in later)
    return (f"Estimator fit on digits (2 members, 1 epoch): Ray's start {result['ray_start_s']:.2f}s once, first fit "
            f"{result['first_fit_s']:.2f}s, later fits {result['later_fit_s']:.2f}s for {train:.2f}s of training "
            "(members + combiner): "
            f"{result['ratio']:.2f}x (target <= {result['target']:g}x: {'met' if result['met'] else 'MISSED'})")
