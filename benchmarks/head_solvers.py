"""Which solver fits a concat head on 48,000 rows fastest at the same accuracy (issue 34).

Features of the real shape: mnist-5k's first 4,000 digits, each copy shifted by up to 2 pixels
(as `ensemble bench --data-sizes` writes its stand-in), encoded by `--members` LeNet CAEs (the
default member, 784 features each) after one epoch of training on 3,000 of the digits. Test: the
other 1,000 digits of mnist-5k (a random split), never seen shifted or not, so the accuracy means something. Each
solver fits the same standardised float32 matrix; accuracies carry their Wilson 95% interval.

Measured 2026-12-06 on a 2-core AMD EPYC (KVM, no GPU), shared with other jobs (load average 15-25),
one BLAS thread, 2 members (1,568 columns), scikit-learn 1.9.1:
    rows    solver                  fit s   iterations   test accuracy (Wilson 95%)
    3,000   lbfgs (tol 1e-4)          0.8         27     0.958 [0.944, 0.969]
    3,000   SGD (log loss, 30 ep.)    5.5         30     0.939 [0.922, 0.952]
    12,000  lbfgs (tol 1e-4)          5.5         44     0.967 [0.954, 0.976]
    12,000  lbfgs (tol 1e-3)          2.9         23     0.957 [0.943, 0.968]
    48,000  lbfgs (tol 1e-4)         67.8         66     0.966 [0.953, 0.976]
    48,000  lbfgs (tol 1e-3)         40.8         29     0.970 [0.958, 0.979]
    48,000  SGD (log loss, 30 ep.)  278.7         30     0.966 [0.953, 0.976]
saga (tol 1e-3) had not finished 12,000 rows after 11 minutes in an earlier try (docs/performance.md).

Run: python benchmarks/head_solvers.py --rows 48000 [--members 2] [--solvers lbfgs,sgd]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression, SGDClassifier
from threadpoolctl import threadpool_limits

from classifier.combiner import merged_scaler
from classifier.features import member_features
from ensemble.data.sources import mnist_5k_arrays
from ensemble.report.statistics import wilson_interval
from workers.models import CAEFactory
from workers.training import TrainSettings, make_optimizer, train_one_epoch

TRAIN_DIGITS = 4000  # shifted copies of these are the training rows; the remaining 1,000 are the test


def shifted(images: np.ndarray, rows: int, rng: np.random.Generator) -> np.ndarray:
    picks = np.arange(rows) % len(images)
    out = images[picks].copy()
    for row in range(len(images), rows):
        out[row] = np.roll(out[row], tuple(rng.integers(-2, 3, size=2)), axis=(0, 1))
    return out, picks


def features(rows: int, members: int) -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray], np.ndarray]:
    x, y = mnist_5k_arrays()
    order = np.random.default_rng(1).permutation(len(y))  # the embedded digits are sorted by label
    x, y = x.reshape(-1, 28, 28)[order], y[order]
    train_x, picks = shifted(x[:TRAIN_DIGITS], rows, np.random.default_rng(0))
    as_tensor = lambda a: torch.as_tensor(a / 255.0, dtype=torch.float32).reshape(-1, 1, 28, 28)  # noqa: E731
    train_t, test_t = as_tensor(train_x), as_tensor(x[TRAIN_DIGITS:])
    encoders = []
    for seed in range(members):
        torch.manual_seed(seed)
        model = CAEFactory((1, 28, 28))()
        settings = TrainSettings(batch_size=100, lr=1e-3, optimizer="adam", seed=seed, memory_format="contiguous")
        train_one_epoch(model, make_optimizer(model, settings), train_t[:3000], settings,
                        torch.Generator().manual_seed(seed))
        encoders.append(model)
    return (member_features(encoders, train_t), y[:TRAIN_DIGITS][picks],
            member_features(encoders, test_t), y[TRAIN_DIGITS:])


def standardised(blocks: list[np.ndarray], fit_blocks: list[np.ndarray]) -> np.ndarray:
    from sklearn.preprocessing import StandardScaler
    scaler = merged_scaler([StandardScaler().fit(b) for b in fit_blocks])
    return scaler.transform(np.hstack(blocks)).astype(np.float32)


def solvers(rows: int) -> dict:
    return {
        "lbfgs": lambda: LogisticRegression(C=1.0, max_iter=200),
        "lbfgs-tol1e-3": lambda: LogisticRegression(C=1.0, max_iter=200, tol=1e-3),
        "sgd": lambda: SGDClassifier(loss="log_loss", alpha=1.0 / rows, max_iter=30, tol=1e-3, random_state=0),
        "sgd-avg": lambda: SGDClassifier(loss="log_loss", alpha=1.0 / rows, max_iter=30, tol=1e-3, average=True,
                                         random_state=0),
        "saga": lambda: LogisticRegression(C=1.0, solver="saga", max_iter=30, tol=1e-3),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=48000)
    parser.add_argument("--members", type=int, default=2)
    parser.add_argument("--solvers", default="lbfgs,sgd,sgd-avg")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    started = time.perf_counter()
    train, train_y, test, test_y = features(args.rows, args.members)
    X, T = standardised(train, train), standardised(test, train)
    del train
    print(f"features {X.shape} {X.dtype} in {time.perf_counter() - started:.1f} s", flush=True)
    table = solvers(args.rows)
    for name in args.solvers.split(","):
        with threadpool_limits(args.threads):
            began = time.perf_counter()
            head = table[name]().fit(X, train_y)
            seconds = time.perf_counter() - began
        right = int((head.predict(T) == test_y).sum())
        print(json.dumps({"solver": name, "rows": args.rows, "columns": X.shape[1], "fit_seconds": round(seconds, 1),
                          "n_iter": int(np.max(head.n_iter_)), "test_accuracy": right / len(test_y),
                          "ci95": [round(v, 4) for v in wilson_interval(right, len(test_y))]}), flush=True)


if __name__ == "__main__":
    main()
