"""The combiner's fit against the number of members N: seconds, iterations and test accuracy per solver.

Features: the default run's data (mnist-5k: 3,000 train / 1,000 test images after the split) through
N default members' encoders (784 features each), untrained (each member's own seed, what the untrained
reference fits on) or, with --run, the selected checkpoints of a finished run's members, repeated
with their epoch-0 encoders when N is larger than the run. The head is the default combiner's
(concat: StandardScaler + LogisticRegression, C=1), fitted three ways:

- whole      the scaler fitted on the whole stacked matrix, then lbfgs (max_iter 200, tol 1e-4):
             the combiner before issue 26
- blocks     `fit_combiner` now: stacking, the scaler fitted one member's columns at a time
             (`classifier.combiner.block_scaler`), then the same lbfgs
- saga       stochastic average gradient on the same standardized features (max_iter 30, tol 1e-3)

Paired accuracy differences come with an exact McNemar p-value and a 95% bootstrap CI.
Run: python benchmarks/fit_scaling.py --members 5 20 40 80 [--run RUN_DIR] [--solvers whole blocks saga]
     python benchmarks/fit_scaling.py --scaler-only --members 5 20 40 80   (the scaler alone, 3 repeats)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from scipy.stats import binomtest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from classifier.combiner import block_scaler, fit_combiner
from classifier.features import member_features
from ensemble.builders import member_factory, member_seed
from ensemble.config import build_config
from ensemble.data import load_splits
from workers.encoding import frozen_autoencoder


def encoders(members: int, run: Path | None, config, image_shape) -> list[torch.nn.Module]:
    """`members` frozen encoders: a run's selected checkpoints first (then their epoch 0s), else fresh ones."""
    factory = member_factory(config, image_shape)
    if run is not None:
        report = json.loads((run / "report.json").read_text())
        chosen = [(m["name"], m["selected_epoch"]) for m in report["members"] if m["selected_epoch"] is not None]
        chosen += [(name, 0) for name, _ in chosen]
        return [frozen_autoencoder(factory, run / name, epoch) for name, epoch in (chosen * members)[:members]]
    built = []
    for i in range(members):
        torch.manual_seed(member_seed(config.seed, i))
        built.append(factory().eval().requires_grad_(False))
    return built


def fit(solver: str, per_member: list[np.ndarray], labels: np.ndarray):
    """A fitted concat head (anything with predict and a last step with n_iter_), from the members' features."""
    if solver == "blocks":
        return fit_combiner("concat", "logistic", per_member, labels)[0].model_
    if solver == "whole":
        model = LogisticRegression(C=1.0, max_iter=200)
    else:
        model = LogisticRegression(C=1.0, solver="saga", max_iter=30, tol=1e-3, random_state=0)
    return Pipeline([("scale", StandardScaler()), ("head", model)]).fit(np.hstack(per_member), labels)


def paired(a: np.ndarray, b: np.ndarray, labels: np.ndarray, draws: int = 2000) -> dict:
    """b minus a on the same test images: accuracy difference, McNemar exact p, bootstrap 95% CI."""
    right_a, right_b = a == labels, b == labels
    only_a, only_b = int(np.sum(right_a & ~right_b)), int(np.sum(right_b & ~right_a))
    p = binomtest(only_b, only_a + only_b).pvalue if only_a + only_b else 1.0
    rng = np.random.default_rng(0)
    rows = rng.integers(0, len(labels), size=(draws, len(labels)))
    diffs = right_b[rows].mean(axis=1) - right_a[rows].mean(axis=1)
    return {"difference": float(right_b.mean() - right_a.mean()), "mcnemar_p": float(p),
            "ci95": [float(np.quantile(diffs, 0.025)), float(np.quantile(diffs, 0.975))]}


def measure(counts: Sequence[int], solvers: Sequence[str], run: Path | None) -> list[dict]:
    config = build_config({}, [])
    splits = load_splits(config.data, config.seed)
    rows = []
    for n in counts:
        models = encoders(n, run, config, splits.image_shape)
        started = time.perf_counter()
        train = member_features(models, splits.train_x)
        test = np.hstack(member_features(models, splits.test_x))
        feature_s = time.perf_counter() - started
        predictions = {}
        for solver in solvers:
            started = time.perf_counter()
            fitted = fit(solver, train, splits.train_y.numpy())
            fit_s = time.perf_counter() - started
            predictions[solver] = fitted.predict(test)
            rows.append({"members": n, "columns": test.shape[1], "solver": solver, "fit_s": fit_s,
                         "n_iter": int(np.max(fitted[-1].n_iter_)), "feature_s": feature_s,
                         "test_accuracy": float(np.mean(predictions[solver] == splits.test_y.numpy()))})
            if solver != solvers[0]:
                rows[-1]["against_" + solvers[0]] = paired(predictions[solvers[0]], predictions[solver],
                                                           splits.test_y.numpy())
            print(json.dumps(rows[-1]), flush=True)
    return rows


def scaler_times(members: int, repeats: int = 3) -> dict:
    """The scaler alone, whole matrix against member blocks, interleaved `repeats` times on the same
    synthetic ReLU features (3,000 x 784 per member): medians, and whether the statistics are bitwise equal."""
    rng = np.random.default_rng(0)
    blocks = [np.maximum(0, rng.normal(1.0, 3.0, size=(3000, 784))).astype(np.float32) for _ in range(members)]
    X, widths = np.hstack(blocks), [784] * members
    whole_s, blocks_s = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        whole = StandardScaler().fit(X)
        whole_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        ours = block_scaler(X, widths)
        blocks_s.append(time.perf_counter() - started)
    same = all(np.array_equal(getattr(whole, a), getattr(ours, a)) for a in ("mean_", "var_", "scale_"))
    return {"members": members, "whole_s": float(np.median(whole_s)), "blocks_s": float(np.median(blocks_s)),
            "bitwise_equal": same}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, nargs="+", default=[5, 20, 40, 80])
    parser.add_argument("--solvers", nargs="+", default=["whole", "blocks"], choices=["whole", "blocks", "saga"])
    parser.add_argument("--run", type=Path, default=None, help="a finished run whose checkpoints to encode")
    parser.add_argument("--scaler-only", action="store_true", help="time only the scaler, whole vs blocks")
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.scaler_only:
        for n in args.members:
            print(json.dumps(scaler_times(n)), flush=True)
        return
    rows = measure(args.members, args.solvers, args.run)
    print("\n| N | columns | solver | fit (s) | iterations | per column (ms) | test accuracy |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['members']} | {r['columns']} | {r['solver']} | {r['fit_s']:.2f} | {r['n_iter']} | "
              f"{1000 * r['fit_s'] / r['columns']:.3f} | {r['test_accuracy']:.4f} |")


if __name__ == "__main__":
    main()
